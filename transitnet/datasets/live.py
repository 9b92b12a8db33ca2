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

from transitnet.datasets.grouping import sort_by_group_and_time


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


class _WindowSums:
    """Sums of values per integer group over time windows, from one sort of the sources.

    Groups are non-negative integers; a negative group never matches.
    """

    def __init__(self, group: np.ndarray, t: np.ndarray, v: np.ndarray, window_s: float) -> None:
        self.window_s = window_s
        self.t0 = (float(t.min()) if len(t) else 0.0) - window_s
        self.span = (float(t.max()) if len(t) else 0.0) - self.t0 + 2 * window_s + 1.0
        key = group.astype(np.float64) * self.span + (t - self.t0)
        whole = window_s == np.floor(window_s) and bool((t == np.floor(t)).all())
        if whole and len(t) and float(key.max()) < 2.0**53 and group.min() >= 0:
            order = sort_by_group_and_time(group, t)  # the same order, one integer sort
        else:
            order = np.argsort(key, kind="stable")
        self.key = key[order]
        self.cum = np.r_[0.0, np.cumsum(v[order])]

    def query(self, group: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sum and count of the sources of ``group`` timed in ``[t - window_s, t)``."""
        ok = (group >= 0) & (t > self.t0) & (t < self.t0 + self.span - self.window_s)
        base = np.where(ok, group.astype(np.float64) * self.span + (t - self.t0), -1.0)
        hi = np.searchsorted(self.key, base, side="left")
        lo = np.searchsorted(self.key, base - self.window_s, side="left")
        total = np.where(ok, self.cum[hi] - self.cum[lo], 0.0)
        return total, np.where(ok, hi - lo, 0).astype(np.float64)


def _codes(values: pd.Series) -> np.ndarray:
    """Integer code per value, -1 for missing (values compared as strings)."""
    if not isinstance(values.dtype, pd.StringDtype):  # e.g. object or numeric ids
        values = values.astype("string")
    codes, _ = pd.factorize(values, use_na_sentinel=True)
    return np.asarray(codes, dtype=np.int64)


def _mean_and_count(total: np.ndarray, count: np.ndarray) -> list[np.ndarray]:
    return [np.where(count > 0, total / np.maximum(count, 1), 0.0), np.log1p(count)]


def compute_live_context(
    df: pd.DataFrame, config: LiveConfig | None = None, *, rows: np.ndarray | None = None
) -> np.ndarray:
    """``(len(rows), len(LIVE_FEATURES))`` float64 live features of the fixes at ``rows``.

    Args:
        df: Fixes (columns in the module docstring); any order. All of them are sources.
        config: Aggregation settings.
        rows: Positions of the fixes to describe (default: every row).

    Returns:
        Features aligned with ``rows`` (speeds in m/s, counts as ``log1p``).
    """
    config = config or LiveConfig()
    rows = np.arange(len(df)) if rows is None else np.asarray(rows, dtype=np.int64)
    if df.empty or not len(rows):
        return np.zeros((len(rows), len(LIVE_FEATURES)))
    t = df["t_s"].to_numpy(np.float64)
    d = np.nan_to_num(df["dist_along_m"].to_numpy(np.float64, na_value=np.nan), nan=-1e9)
    v = df["speed_along_mps"].to_numpy(np.float64, na_value=np.nan)
    fresh = np.isfinite(v) & (d > -1e9) & np.isfinite(t)
    if "is_stale" in df:
        fresh &= ~df["is_stale"].to_numpy(bool, na_value=False)
    shape, line = _codes(df["shape_id"]), _codes(df["line_key"])
    seg = np.floor(np.maximum(d, 0.0) / config.segment_m).astype(np.int64)
    n_seg = int(seg.max()) + 2 + int(max(b for _, b in config.bands_m) // config.segment_m)
    src = fresh & (shape >= 0)
    by_seg = _WindowSums(shape[src] * n_seg + seg[src], t[src], v[src], config.window_s)
    # Queries in key order: every band and segment keeps that order, and binary searches
    # of sorted queries run several times faster (results are put back in row order).
    q_shape, q_d, q_t = shape[rows], np.maximum(d[rows], 0.0), t[rows]
    order = np.argsort((q_shape * n_seg + seg[rows]) * by_seg.span + q_t)  # any order is right
    q_shape, q_d, q_t = q_shape[order], q_d[order], q_t[order]
    out = np.empty((len(rows), 2 * len(config.bands_m) + 2))
    for j, (start, end) in enumerate(config.bands_m):
        first = np.floor((q_d + start) / config.segment_m).astype(np.int64)
        total, count = np.zeros(len(rows)), np.zeros(len(rows))
        for k in range(max(round((end - start) / config.segment_m), 1)):
            group = np.where(q_shape >= 0, q_shape * n_seg + first + k, -1)
            s, c = by_seg.query(group, q_t)
            total, count = total + s, count + c
        out[order, 2 * j : 2 * j + 2] = np.stack(_mean_and_count(total, count), axis=1)
    src = fresh & (line >= 0)
    by_line = _WindowSums(line[src], t[src], v[src], config.window_s)
    order = np.argsort(line[rows] * by_line.span + t[rows])
    q_line = line[rows][order]
    out[order, -2:] = np.stack(_mean_and_count(*by_line.query(q_line, t[rows][order])), axis=1)
    return out
