"""Confidence gate: a class added later may only take windows the old classes are unsure of.

Trained with no old data, a new class's row also wins some windows of the old classes
that share its road; the statistical weight aligning that caps this is calibrated on
pseudo-features, whose claim rate can sit far below the real one. The gate bounds the
damage with a quantity measured at base training instead: the base model's softmax
confidence (the largest old-class probability) on its correctly classified training
windows. With threshold ``τ`` = its ``q``-quantile, a new class competes only where the
old classes' confidence is below ``τ``; a window the base model would have got right is
taken only if it is among the least sure ``q`` of such windows (in distribution).
Old-class argmaxes are never changed where the base model is sure, and a new line still
takes windows where no old line fits (off their roads, or between two of them).
"""

from __future__ import annotations

import numpy as np
import torch

from transitnet.models.classifier import MASKED_LOGIT

#: Quantile levels the base model's confidence is recorded at (0, 0.005, …, 0.5).
QUANTILE_GRID = np.round(np.linspace(0.0, 0.5, 101), 6)


def confidence_quantiles(logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Confidence at :data:`QUANTILE_GRID` over the correctly classified windows.

    Args:
        logits: ``(n, C)`` logits of labelled windows.
        labels: ``(n,)`` their true rows.

    Returns:
        101 increasing confidences; empty when no window is classified correctly.
    """
    right = logits.argmax(1) == labels
    if not bool(right.any()):
        return []
    conf = logits[right].double().softmax(1).max(1).values
    grid = torch.as_tensor(QUANTILE_GRID, dtype=conf.dtype)
    return [float(v) for v in torch.quantile(conf, grid)]


def gate_threshold(quantiles: list[float], q: float) -> float:
    """Confidence threshold ``τ`` at quantile level ``q`` (interpolated on the grid).

    Raises:
        ValueError: ``q`` outside ``[0, 0.5]``, or no recorded quantiles.
    """
    if not quantiles or not 0.0 <= q <= float(QUANTILE_GRID[-1]):
        raise ValueError(
            f"need recorded confidence quantiles and 0 ≤ q ≤ {QUANTILE_GRID[-1]}, got q={q} "
            f"with {len(quantiles)} quantiles (checkpoints before the claim gate have none)"
        )
    return float(np.interp(q, QUANTILE_GRID, quantiles))


def apply_gate(logits: torch.Tensor, gated: torch.Tensor, threshold: float) -> torch.Tensor:
    """Mask the ``gated`` classes' logits wherever the other classes are sure.

    Args:
        logits: ``(B, C)``.
        gated: ``(C,)`` bool, the classes added later.
        threshold: Confidence ``τ``: where the softmax over the other classes has a
            largest probability ``≥ τ``, the gated logits become ``MASKED_LOGIT``.

    Returns:
        ``(B, C)`` logits; unchanged where the other classes are unsure.
    """
    gated = gated.to(logits.device)
    if not bool(gated.any()) or bool(gated.all()):
        return logits
    sure = logits[:, ~gated].softmax(1).max(1).values >= threshold
    return torch.where(sure[:, None] & gated[None, :], logits.new_tensor(MASKED_LOGIT), logits)
