"""Live traffic context: how fast vehicles moved lately on the road ahead of a vehicle.

For each fix (the anchor of a window), the mean along-route speed of the fixes of every
vehicle on the same shape, timed in the ``window_s`` seconds *strictly before* the anchor,
whose distance along the shape lies in a band ahead of the anchor; and the same over the
whole line. This is what a dispatcher reads off the map ("the buses ahead crawl"), and it
carries over to hours and days the model never trained on, where time-of-day and
historical profiles do not. Strictly causal: a fix never sees its own or later times.

Input columns: ``shape_id, line_key, t_s (epoch seconds), dist_along_m, speed_along_mps``;
optional ``is_stale`` (stale repeats are not fresh observations and are left out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class LiveConfig:
    """How live context is aggregated.

    Attributes:
        window_s: Look-back before the anchor time, in seconds.
        bands_m: Distance bands ``[start, end)`` ahead of the anchor, in metres.
        segment_m: Resolution of the bands (a band starts and ends on this grid, counted
            from the anchor's segment).
    """

    window_s: float = 1200.0
    bands_m: tuple[tuple[float, float], ...] = ((0.0, 1000.0), (1000.0, 3000.0))
    segment_m: float = 250.0


#: Live features, in order: per band the mean speed (m/s, 0 when nothing was observed)
#: and ``log1p`` of the number of fixes observed; then the same over the whole line.
LIVE_FEATURES: tuple[str, ...] = (
    "ahead_speed_0_1km",
    "ahead_n_0_1km",
    "ahead_speed_1_3km",
    "ahead_n_1_3km",
    "line_speed",
    "line_n",
)


def _window_sums(
    group_src: np.ndarray,
    t_src: np.ndarray,
    v_src: np.ndarray,
    group_q: np.ndarray,
    t_q: np.ndarray,
    window_s: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum and count of ``v_src`` with the query's group and ``t`` in ``[t_q - w, t_q)``.

    Groups are non-negative integers; a negative group never matches.
    """
    if not len(t_src) or not len(t_q):
        return np.zeros(len(t_q)), np.zeros(len(t_q))
    t0 = min(float(t_src.min()), float(t_q.min())) - window_s
    span = max(float(t_src.max()), float(t_q.max())) - t0 + window_s + 1.0
    key = group_src.astype(np.float64) * span + (t_src - t0)
    order = np.argsort(key, kind="stable")
    key = key[order]
    cum = np.r_[0.0, np.cumsum(v_src[order])]
    base = group_q.astype(np.float64) * span + (t_q - t0)
    hi = np.searchsorted(key, base, side="left")
    lo = np.searchsorted(key, base - window_s, side="left")
    ok = group_q >= 0
    return np.where(ok, cum[hi] - cum[lo], 0.0), np.where(ok, hi - lo, 0).astype(np.float64)


def _codes(values: pd.Series) -> np.ndarray:
    """Integer code per value, -1 for missing."""
    codes, _ = pd.factorize(values.astype("string"), use_na_sentinel=True)
    return np.asarray(codes, dtype=np.int64)


def compute_live_context(df: pd.DataFrame, config: LiveConfig | None = None) -> np.ndarray:
    """``(N, len(LIVE_FEATURES))`` float64 live features of every row of ``df``.

    Args:
        df: Fixes (columns in the module docstring); any order.
        config: Aggregation settings.

    Returns:
        Features aligned with ``df``'s rows (speeds in m/s, counts as ``log1p``).
    """
    config = config or LiveConfig()
    if df.empty:
        return np.zeros((0, len(LIVE_FEATURES)))
    t = df["t_s"].to_numpy(np.float64)
    d = df["dist_along_m"].to_numpy(np.float64, na_value=np.nan)
    v = df["speed_along_mps"].to_numpy(np.float64, na_value=np.nan)
    fresh = np.isfinite(v) & np.isfinite(d) & np.isfinite(t)
    if "is_stale" in df:
        fresh &= ~df["is_stale"].to_numpy(bool, na_value=False)
    shape, line = _codes(df["shape_id"]), _codes(df["line_key"])
    seg = np.floor(np.where(np.isfinite(d), d, 0.0) / config.segment_m).astype(np.int64)
    n_seg = int(seg.max()) + 2 + int(max(b for _, b in config.bands_m) // config.segment_m)
    src = fresh & (shape >= 0)
    group_src = shape[src] * n_seg + seg[src]
    cols: list[np.ndarray] = []
    for start, end in config.bands_m:
        first = np.floor((np.where(np.isfinite(d), d, 0.0) + start) / config.segment_m)
        total, count = np.zeros(len(df)), np.zeros(len(df))
        for k in range(max(round((end - start) / config.segment_m), 1)):
            group_q = np.where(shape >= 0, shape * n_seg + first.astype(np.int64) + k, -1)
            s, c = _window_sums(group_src, t[src], v[src], group_q, t, config.window_s)
            total, count = total + s, count + c
        cols += [np.where(count > 0, total / np.maximum(count, 1), 0.0), np.log1p(count)]
    src = fresh & (line >= 0)
    total, count = _window_sums(line[src], t[src], v[src], line, t, config.window_s)
    cols += [np.where(count > 0, total / np.maximum(count, 1), 0.0), np.log1p(count)]
    return np.stack(cols, axis=1)
