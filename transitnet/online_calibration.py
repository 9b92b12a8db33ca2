"""Online recalibration of the P10–P90 band from outcomes already observed.

A band calibrated once on the validation period drifts when the network's regime
changes (the evening peak after a calm midday, a diversion, rain): the test band of a
model calibrated at midday covers less in the peak. A live system learns the truth of
each forecast a few minutes later (the vehicle reaches, or doesn't reach, the forecast
distance), so it can keep the band honest by recomputing the split-conformal scales over
a trailing window of *resolved* forecasts, never using an outcome before it was
observable. That is adaptive/rolling split-conformal calibration.

- :func:`compute_conformity_scores`: the score of every forecast (as in
  :func:`transitnet.models.heads.fit_quantile_calibration`);
- :func:`compute_online_scales`: the scales each forecast of an evaluation period would
  have had live, from the outcomes resolved before its anchor time;
- :func:`apply_scales`: those scales applied;
- :func:`compute_anchor_seconds`: the windows' anchor times as the seconds those take.

The band as served by ``transitnet predict`` and scored by ``transitnet evaluate`` is
``apply_scales(raw, compute_online_scales(compute_anchor_seconds(anchor_time), ...))``.
- :class:`OnlineCalibrator`: the same, fed outcome by outcome when serving.

A forecast made at ``t`` for horizon ``h`` counts as resolved at ``t + h + lag_s`` (the
target is interpolated between the fixes bracketing ``t + h``; ``lag_s`` covers the next
fix's arrival). While fewer than ``min_count`` resolved outcomes lie in the trailing
window, the scales fitted on the validation split are used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from transitnet.models.heads import QuantileCalibration


@dataclass(frozen=True)
class OnlineCalibrationConfig:
    """How the trailing window of resolved forecasts is formed.

    Attributes:
        window_s: Length of the trailing window of resolution times, seconds.
        lag_s: Delay after the target time before a forecast's outcome is known.
        min_count: Resolved outcomes needed (per horizon) before the window's scales
            replace the validation-fitted ones.
        step_s: Scales are refreshed on this time grid (forecasts within one step share
            them, as a live system refreshing every minute would).
        min_width: Band half-widths below this (metres) count as this, as in the
            validation fit.
    """

    window_s: float = 3600.0
    lag_s: float = 60.0
    min_count: int = 100
    step_s: float = 60.0
    min_width: float = 1.0

    def __post_init__(self) -> None:
        if min(self.window_s, self.step_s) <= 0 or self.lag_s < 0 or self.min_count < 1:
            raise ValueError(f"invalid online calibration settings: {self}")


def compute_conformity_scores(
    raw: np.ndarray, target: np.ndarray, min_width: float = 1.0
) -> np.ndarray:
    """Conformity score of every (forecast, horizon, quantile).

    For a level below the median, ``(mid − y) / (mid − pred_q)``; above it,
    ``(y − mid) / (pred_q − mid)``; the band covers ``y`` at level ``q`` when its scale is
    at least the score. The median's score is 0.

    Args:
        raw: ``(N, H, Q)`` uncalibrated quantile forecasts (metres travelled).
        target: ``(N, H)`` observed metres travelled (NaN where unobserved).
        min_width: Half-widths below this count as this.

    Returns:
        ``(N, H, Q)`` float64 scores (NaN where the target is NaN).
    """
    mid_q = raw.shape[2] // 2
    mid = raw[:, :, mid_q : mid_q + 1].astype(np.float64)
    sign = np.where(np.arange(raw.shape[2]) < mid_q, -1.0, 1.0)
    width = np.maximum(sign * (raw - mid), min_width)
    scores: np.ndarray = sign * (target[:, :, None].astype(np.float64) - mid) / width
    scores[:, :, mid_q] = 0.0
    return scores


def _conformal_quantile(sorted_scores: np.ndarray, level: float) -> float:
    """Finite-sample conformal ``level`` quantile of sorted scores (≥ 0)."""
    n = len(sorted_scores)
    rank = min(math.ceil((n + 1) * level), n)
    return max(float(sorted_scores[rank - 1]), 0.0)


def _levels(quantiles: Sequence[float]) -> list[float]:
    """Coverage level whose conformal quantile gives each quantile's scale."""
    mid = len(quantiles) // 2
    return [(1.0 - tau) if q < mid else tau for q, tau in enumerate(quantiles)]


def compute_online_scales(
    anchor_s: np.ndarray,
    horizons_s: Sequence[int],
    raw: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray,
    quantiles: Sequence[float],
    prior: np.ndarray,
    config: OnlineCalibrationConfig | None = None,
) -> np.ndarray:
    """The scales each forecast would have had live, from outcomes resolved before it.

    Args:
        anchor_s: ``(N,)`` anchor times of the forecasts, epoch seconds (any order).
        horizons_s: The ``H`` horizons.
        raw: ``(N, H, Q)`` uncalibrated forecasts.
        target: ``(N, H)`` observed metres travelled.
        mask: ``(N, H)`` True where observed.
        quantiles: The ``Q`` levels (the middle one is the median).
        prior: ``(H, Q)`` scales fitted on the validation split (used while the trailing
            window holds fewer than ``min_count`` outcomes).
        config: Window settings.

    Returns:
        ``(N, H, Q)`` float32 scales (the median's is 1).
    """
    cfg = config or OnlineCalibrationConfig()
    n, n_h, n_q = raw.shape
    if target.shape != (n, n_h) or mask.shape != (n, n_h) or prior.shape != (n_h, n_q):
        raise ValueError("raw (N,H,Q), target/mask (N,H) and prior (H,Q) must agree")
    anchor = np.asarray(anchor_s, dtype=np.float64)
    grid = np.floor(anchor / cfg.step_s) * cfg.step_s
    ticks, tick_of = np.unique(grid, return_inverse=True)
    scores = compute_conformity_scores(raw, target, cfg.min_width)
    out = np.broadcast_to(prior.astype(np.float32), (n, n_h, n_q)).copy()
    for h, horizon in enumerate(horizons_s):
        ok = mask[:, h] & np.isfinite(target[:, h])
        resolved_at = anchor[ok] + horizon + cfg.lag_s
        order = np.argsort(resolved_at, kind="stable")
        times, hs = resolved_at[order], scores[ok, h][order]
        hi = np.searchsorted(times, ticks, side="right")
        lo = np.searchsorted(times, ticks - cfg.window_s, side="right")
        table = np.broadcast_to(prior[h].astype(np.float32), (len(ticks), n_q)).copy()
        for k in np.flatnonzero(hi - lo >= cfg.min_count):
            table[k] = _window_scales(hs[lo[k] : hi[k]], quantiles)
        out[:, h, :] = table[tick_of]
    return out


def apply_scales(raw: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Forecasts with per-forecast scales applied (e.g. from :func:`compute_online_scales`).

    Applied exactly as the model's own :class:`~transitnet.models.heads.QuantileCalibration`
    applies its buffer: the median unchanged, non-negative, monotone in horizon and level.

    Args:
        raw: ``(N, H, Q)`` uncalibrated forecasts.
        scales: ``(N, H, Q)`` or ``(H, Q)`` scales.

    Returns:
        ``(N, H, Q)`` float32 calibrated forecasts.
    """
    layer = QuantileCalibration(raw.shape[1], raw.shape[2])
    with torch.no_grad():
        out: np.ndarray = layer(torch.from_numpy(raw), torch.from_numpy(scales)).numpy()
    return out


def compute_anchor_seconds(anchor_time: pd.Series) -> np.ndarray:
    """Anchor times as epoch seconds (``float64``), whatever the column's time unit.

    Naive times are read as UTC (the windows' ``anchor_time`` is UTC).
    """
    times = pd.to_datetime(pd.Series(anchor_time).reset_index(drop=True))
    if times.dt.tz is None:
        times = times.dt.tz_localize("UTC")
    epoch = pd.Timestamp(0, tz="UTC")
    return (times - epoch).dt.total_seconds().to_numpy(np.float64)  # type: ignore[no-any-return]


def _window_scales(window_scores: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """``(Q,)`` conformal scales of one window of ``(M, Q)`` scores (the median's 1)."""
    mid = len(quantiles) // 2
    scales = np.ones(len(quantiles), dtype=np.float32)
    for q, level in enumerate(_levels(quantiles)):
        if q != mid:
            scales[q] = _conformal_quantile(np.sort(window_scores[:, q]), level)
    return scales


@dataclass
class OnlineCalibrator:
    """Serving-side online recalibration: feed resolved outcomes, ask for scales.

    Attributes:
        horizons_s: The model's horizons.
        quantiles: The model's quantile levels.
        prior: ``(H, Q)`` validation-fitted scales (the checkpoint's calibration buffer).
        config: Window settings.
    """

    horizons_s: Sequence[int]
    quantiles: Sequence[float]
    prior: np.ndarray
    config: OnlineCalibrationConfig = field(default_factory=OnlineCalibrationConfig)
    _times: list[np.ndarray] = field(default_factory=list, init=False, repr=False)
    _scores: list[np.ndarray] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._times = [np.zeros(0) for _ in self.horizons_s]
        self._scores = [np.zeros((0, len(self.quantiles))) for _ in self.horizons_s]

    def observe(
        self, anchor_s: np.ndarray, raw: np.ndarray, target: np.ndarray, mask: np.ndarray
    ) -> None:
        """Record the outcomes of earlier forecasts.

        Shapes as in :func:`compute_online_scales`; entries with a False mask are ignored.
        """
        scores = compute_conformity_scores(raw, target, self.config.min_width)
        for h, horizon in enumerate(self.horizons_s):
            ok = mask[:, h] & np.isfinite(target[:, h])
            times = np.asarray(anchor_s, dtype=np.float64)[ok] + horizon + self.config.lag_s
            self._times[h] = np.concatenate([self._times[h], times])
            self._scores[h] = np.concatenate([self._scores[h], scores[ok, h]])

    def scales_at(self, now_s: float) -> np.ndarray:
        """``(H, Q)`` scales for forecasts made at ``now_s``.

        Outcomes older than the window are forgotten.
        """
        out = self.prior.astype(np.float32).copy()
        for h in range(len(self.horizons_s)):
            keep = self._times[h] > now_s - self.config.window_s
            self._times[h], self._scores[h] = self._times[h][keep], self._scores[h][keep]
            seen = self._times[h] <= now_s
            if int(seen.sum()) >= self.config.min_count:
                out[h] = _window_scales(self._scores[h][seen], self.quantiles)
        return out
