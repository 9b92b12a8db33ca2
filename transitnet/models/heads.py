"""Output heads: forecast quantiles, their post-hoc calibration, and BiC for classifiers.

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

import math

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

    @property
    def step_units(self) -> torch.Tensor:
        """``(n_horizons,)`` output units per softplus unit of each horizon's increment."""
        return self.step_weights.view(-1) * self.output_scale

    def forward(self, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """Forecast.

        Args:
            x: ``(B, in_dim)``.
            offset: ``(B, n_horizons)`` added to the median's pre-activations (a skip
                connection: see :mod:`transitnet.models.schedule_skip`); the other
                quantiles are then built around the median (:meth:`_around_median`).
                The guarantees below hold for any offset.

        Returns:
            ``(B, n_horizons, n_quantiles)``, non-negative, non-decreasing along dims 1 and 2.
        """
        raw = self.linear(x).view(-1, self.n_horizons, self.n_quantiles)
        if offset is not None:
            return self._around_median(raw, offset).cumsum(dim=1) * self.output_scale
        steps = nn.functional.softplus(raw) * self.step_weights
        return steps.cumsum(dim=1).cumsum(dim=2) * self.output_scale

    def _around_median(self, raw: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """``(B, H, Q)`` increments built around the median's (which takes the offset).

        Median: ``w · softplus(raw + offset)``; each lower quantile's increment is the one
        above it times a sigmoid (≤ 1), each upper one the one below it plus
        ``w · softplus(raw)``: every increment is ≥ 0 and ordered across quantiles, so
        the cumulative sums over horizons keep both guarantees.
        """
        mid = self.n_quantiles // 2
        weights = self.step_weights[..., 0]
        median = nn.functional.softplus(raw[..., mid] + offset) * weights
        steps = [median]
        for q in range(mid - 1, -1, -1):
            steps.insert(0, steps[0] * torch.sigmoid(raw[..., q]))
        for q in range(mid + 1, self.n_quantiles):
            steps.append(steps[-1] + nn.functional.softplus(raw[..., q]) * weights)
        return torch.stack(steps, dim=-1)


class QuantileCalibration(nn.Module):
    """Post-hoc calibration of quantile forecasts, fitted on held-out data.

    Each quantile's distance from the median is rescaled per horizon and level; the
    scales are a buffer, so they travel in checkpoints and state dicts:
    ``out[:, h, q] = mid[:, h] + scales[h, q] · (pred[:, h, q] − mid[:, h])``, then made
    non-negative and monotone again (running maximum over quantiles, then over horizons).
    The median is never moved. With every scale at 1 (the default, before
    :func:`fit_quantile_calibration`) the input is returned unchanged, bit for bit.

    Args:
        n_horizons: Horizons of the forecasts.
        n_quantiles: Quantile levels; the middle one (``n_quantiles // 2``) is the median.
    """

    scales: torch.Tensor

    def __init__(self, n_horizons: int, n_quantiles: int) -> None:
        super().__init__()
        if min(n_horizons, n_quantiles) < 1:
            raise ValueError("n_horizons and n_quantiles must be ≥ 1")
        self.mid = n_quantiles // 2
        self.register_buffer("scales", torch.ones(n_horizons, n_quantiles))

    @property
    def is_identity(self) -> bool:
        """True while no calibration was fitted (every scale is 1)."""
        return bool((self.scales == 1.0).all())

    def set_scales(self, scales: torch.Tensor) -> None:
        """Install fitted ``(H, Q)`` scales (non-negative and finite; the median's is 1)."""
        if scales.shape != self.scales.shape or not bool(torch.isfinite(scales).all()):
            raise ValueError(f"scales must be finite {tuple(self.scales.shape)}")
        if bool((scales < 0).any()):
            raise ValueError("calibration scales must be ≥ 0")
        fixed = scales.detach().to(self.scales).clone()
        fixed[:, self.mid] = 1.0
        self.scales.copy_(fixed)

    def forward(self, pred: torch.Tensor, scales: torch.Tensor | None = None) -> torch.Tensor:
        """Calibrate ``(B, H, Q)`` forecasts (monotone in H and Q, non-negative).

        Args:
            pred: Raw forecasts.
            scales: Scales to use instead of the fitted buffer: ``(H, Q)``, or ``(B, H, Q)``
                for one set per forecast (online recalibration,
                :mod:`transitnet.online_calibration`).
        """
        if scales is None:
            if self.is_identity:
                return pred
            scales = self.scales
        mid = pred[..., self.mid : self.mid + 1]
        out = (mid + scales.to(pred) * (pred - mid)).clamp_min(0.0)
        out = torch.cummax(out, dim=2).values
        return torch.cummax(out, dim=1).values


def fit_quantile_calibration(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    quantiles: tuple[float, ...],
    *,
    min_width: float = 1.0,
) -> torch.Tensor:
    """Split-conformal scales that make each quantile hit its level on held-out data.

    For a level ``tau`` below the median the score is ``r = (mid − y) / (mid − pred_tau)``
    and the scale is the finite-sample conformal ``(1 − tau)`` quantile of ``r``, so that a
    share ``tau`` of held-out targets falls below the rescaled quantile; symmetrically above
    the median (scale = the ``tau`` quantile of ``(y − mid) / (pred_tau − mid)``).

    Args:
        pred: ``(N, H, Q)`` uncalibrated forecasts on the calibration split.
        target: ``(N, H)`` observed values.
        mask: ``(N, H)`` True where observed.
        quantiles: The ``Q`` levels.
        min_width: Distances to the median below this (same unit as ``pred``) count as it.

    Returns:
        ``(H, Q)`` scales (1 for the median and for horizons without observations).

    Raises:
        ValueError: mismatched shapes or levels.
    """
    n, n_h, n_q = pred.shape if pred.ndim == 3 else (0, 0, 0)
    if pred.ndim != 3 or target.shape != (n, n_h) or mask.shape != (n, n_h):
        raise ValueError(
            f"need pred (N, H, Q), target and mask (N, H); got {tuple(pred.shape)}, "
            f"{tuple(target.shape)}, {tuple(mask.shape)}"
        )
    if len(quantiles) != n_q:
        raise ValueError(f"{len(quantiles)} levels for {n_q} quantile outputs")
    mid = n_q // 2
    scales = torch.ones(n_h, n_q, dtype=torch.float64)
    for h in range(n_h):
        ok = mask[:, h].bool() & torch.isfinite(target[:, h])
        count = int(ok.sum())
        if count == 0:
            continue
        y, p = target[ok, h].double(), pred[ok, h].double()
        for q, tau in enumerate(quantiles):
            if q == mid:
                continue
            sign = -1.0 if q < mid else 1.0
            width = (sign * (p[:, q] - p[:, mid])).clamp_min(min_width)
            score = sign * (y - p[:, mid]) / width
            level = (1.0 - tau) if q < mid else tau
            rank = min(math.ceil((count + 1) * level), count)
            scales[h, q] = max(float(score.sort().values[rank - 1]), 0.0)
    return scales.float()


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
