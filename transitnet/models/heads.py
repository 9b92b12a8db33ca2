"""Output heads: forecast quantiles, and BiC for classifier heads.

Forecast head: multi-horizon quantiles of along-route distance travelled.

The head is monotone by construction, for any input and any weights:

* in horizon: each quantile is a cumulative sum of non-negative (softplus) increments
  over the horizons, so the distance forecast never decreases as the horizon grows;
* in quantile: each quantile is the one below it plus a non-negative gap, and the gaps
  are themselves cumulative over horizons, so P10 ≤ P50 ≤ P90 and the band never
  narrows at a later horizon.

Concretely ``out[b, h, q] = scale · Σ_{q'≤q} Σ_{h'≤h} w[h'] · softplus(raw[b, h', q'])``,
where ``w`` weights each horizon's increment (e.g. its length in seconds times a typical
speed), so a raw output near 0 already means a plausible speed at every horizon.
"""

from __future__ import annotations

import torch
from torch import nn


class QuantileForecastHead(nn.Module):
    """``(B, in_dim)`` → ``(B, n_horizons, n_quantiles)`` distances, monotone in both axes.

    Args:
        in_dim: Input feature size.
        n_horizons: Number of forecast horizons (increasing in time).
        n_quantiles: Number of quantile levels (increasing).
        output_scale: Units of one raw step, e.g. 100.0 to output metres from a network
            working at the scale of 100 m (targets are then in metres).
        step_weights: Per-horizon weights ``w`` of the increments (default all 1).
    """

    step_weights: torch.Tensor

    def __init__(
        self,
        in_dim: int,
        n_horizons: int,
        n_quantiles: int,
        *,
        output_scale: float = 1.0,
        step_weights: list[float] | None = None,
    ) -> None:
        super().__init__()
        if min(in_dim, n_horizons, n_quantiles) < 1 or output_scale <= 0:
            raise ValueError("in_dim, n_horizons, n_quantiles must be ≥ 1 and output_scale > 0")
        self.n_horizons = n_horizons
        self.n_quantiles = n_quantiles
        self.output_scale = output_scale
        self.linear = nn.Linear(in_dim, n_horizons * n_quantiles)
        weights = torch.ones(n_horizons) if step_weights is None else torch.tensor(step_weights)
        if weights.shape != (n_horizons,) or not bool((weights > 0).all()):
            raise ValueError("step_weights must be n_horizons positive numbers")
        self.register_buffer("step_weights", weights.float().view(1, n_horizons, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forecast.

        Args:
            x: ``(B, in_dim)``.

        Returns:
            ``(B, n_horizons, n_quantiles)``, non-negative, non-decreasing along dims 1 and 2.
        """
        raw = self.linear(x).view(-1, self.n_horizons, self.n_quantiles)
        steps = nn.functional.softplus(raw) * self.step_weights
        return steps.cumsum(dim=1).cumsum(dim=2) * self.output_scale


class BiasCorrection(nn.Module):
    """BiC: ``alpha * z + beta`` on the logits of new classes, old logits unchanged.

    Args:
        new_mask: ``(n_classes,)`` bool, true for new classes.
    """

    new_mask: torch.Tensor

    def __init__(self, new_mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("new_mask", new_mask.bool().clone())
        self.alpha = nn.Parameter(torch.ones(()))
        self.beta = nn.Parameter(torch.zeros(()))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """Correct ``(B, n_classes)`` logits."""
        return torch.where(self.new_mask, self.alpha * logits + self.beta, logits)


def fit_bic(
    logits: torch.Tensor,
    targets: torch.Tensor,
    new_mask: torch.Tensor,
    *,
    balance: bool = True,
    max_iter: int = 100,
) -> BiasCorrection:
    """Fit BiC's two scalars by cross-entropy on held-out logits (LBFGS).

    Args:
        logits: ``(N, C)`` logits of the (frozen) model on a small held-out set.
        targets: ``(N,)`` true classes.
        new_mask: ``(C,)`` bool, true for new classes.
        balance: Weight classes by inverse frequency, so the fit acts as on a balanced set.
        max_iter: LBFGS iterations.

    Returns:
        The fitted :class:`BiasCorrection`.
    """
    n, c = logits.shape if logits.ndim == 2 else (0, 0)
    if n == 0 or targets.shape != (n,) or new_mask.shape != (c,):
        raise ValueError(
            f"need logits (N>0, C), targets (N,), new_mask (C,); got "
            f"{tuple(logits.shape)}, {tuple(targets.shape)}, {tuple(new_mask.shape)}"
        )
    if int(targets.min()) < 0 or int(targets.max()) >= c or not torch.isfinite(logits).all():
        raise ValueError("targets outside [0, C) or non-finite logits")
    counts = torch.bincount(targets, minlength=c).float()
    weight = torch.where(counts > 0, counts.sum() / counts.clamp_min(1), 0.0) if balance else None
    bic = BiasCorrection(new_mask)
    opt = torch.optim.LBFGS(
        bic.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe"
    )
    z = logits.detach()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(bic(z), targets, weight=weight)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    return bic
