"""Losses for the forecasting network."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pinball_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None,
    quantiles: Sequence[float] | torch.Tensor,
) -> torch.Tensor:
    """Mean pinball (quantile) loss over the valid targets.

    ``loss_tau(u) = max(tau * u, (tau - 1) * u)`` with ``u = target - pred``, averaged
    over quantiles and over the ``(sample, horizon)`` pairs where ``mask`` is true.

    Args:
        pred: ``(B, H, Q)`` forecasts.
        target: ``(B, H)`` observed values; masked entries may be NaN.
        mask: ``(B, H)`` bool, true where the target exists; ``None`` = all valid.
        quantiles: ``Q`` levels in (0, 1).

    Returns:
        A scalar; 0 (still attached to ``pred``'s graph) when no target is valid.

    Raises:
        ValueError: Mismatched shapes, levels outside (0, 1) or non-finite valid targets.
    """
    q = torch.as_tensor(quantiles, dtype=pred.dtype, device=pred.device)
    if pred.ndim != 3 or q.shape != pred.shape[2:] or target.shape != pred.shape[:2]:
        raise ValueError(
            f"need pred (B, H, Q), target (B, H), Q levels; got "
            f"{tuple(pred.shape)}, {tuple(target.shape)}, {tuple(q.shape)}"
        )
    if not ((q > 0) & (q < 1)).all():
        raise ValueError(f"quantile levels must lie in (0, 1), got {q.tolist()}")
    valid = torch.ones_like(target, dtype=torch.bool) if mask is None else mask.bool()
    if valid.shape != target.shape:
        raise ValueError(f"mask {tuple(valid.shape)} does not match target {tuple(target.shape)}")
    if not torch.isfinite(target[valid]).all():
        raise ValueError("targets are NaN or inf where the mask says they are valid")
    u = torch.where(valid, target, 0.0).unsqueeze(-1) - pred
    loss = torch.maximum(q * u, (q - 1) * u) * valid.unsqueeze(-1)
    n_valid = int(valid.sum())
    if n_valid == 0:
        return pred.sum() * 0.0
    return loss.sum() / (n_valid * q.numel())
