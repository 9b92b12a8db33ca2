"""Input features of forecasting windows: per past fix, and per window (context).

Per-fix features (:data:`PAST_FEATURES`) are computed for every fix and gathered into
windows by :mod:`transitnet.datasets.windows`; context features
(:data:`CONTEXT_FEATURES`) describe the anchor fix: time, where the vehicle is on its
shape, its recent speed and delay, the live traffic ahead of it
(:mod:`transitnet.datasets.live`) and, with a timetable, where the schedule takes it
(:mod:`transitnet.datasets.schedule`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from transitnet.datasets.live import LIVE_FEATURES, compute_live_context
from transitnet.datasets.schedule import SCHEDULE_FEATURES, compute_schedule_context
from transitnet.gtfs.timetable import Timetable

#: Per-fix input features, in order.
PAST_FEATURES: tuple[str, ...] = (
    "age_s",  # anchor time minus fix time
    "dist_rel_m",  # fix distance minus anchor distance (<= 0 for past fixes)
    "dt_s",  # time since the previous fix in the window
    "speed_along_mps",
    "offset_m",
    "is_dwell",
    "is_stale",
    "delay_s",
    "has_delay",
)

#: Periods (km) of the sine/cosine encodings of the distance along the shape: with the
#: line row they let the network learn where on a line vehicles run fast or slow.
DIST_PERIODS_KM: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)

#: Per-window context features, in order.
CONTEXT_FEATURES: tuple[str, ...] = (
    "tod_sin",
    "tod_cos",
    "dow_sin",
    "dow_cos",
    "progress",
    "dist_km",  # absolute distance along the shape (with the line row: where on the line)
    "shape_km",  # length of the matched shape (tells a line's variants apart)
    "remaining_m",
    "next_stop_m",
    "recent_speed_mps",
    "delay_s",
    "has_delay",
    *(f"dist_{fn}_{p:g}km" for p in DIST_PERIODS_KM for fn in ("sin", "cos")),
    *LIVE_FEATURES,
    *SCHEDULE_FEATURES,
)


def compute_past_features(df: pd.DataFrame) -> np.ndarray:
    """``(N, len(PAST_FEATURES))`` per-fix features of every fix.

    ``age_s`` and ``dist_rel_m`` are left 0: they depend on the window's anchor and are
    filled when windows are cut. Input columns: ``t_s, trajectory, speed_along_mps,
    offset_m, is_dwell, is_stale``; optional ``delay_s``.
    """
    n = len(df)
    delay = (
        df["delay_s"].to_numpy(np.float64, na_value=np.nan)
        if "delay_s" in df
        else np.full(n, np.nan)
    )
    t = df["t_s"].to_numpy(np.float64)
    traj = df["trajectory"].to_numpy()
    dt = np.zeros(n)
    dt[1:] = np.where(traj[1:] == traj[:-1], t[1:] - t[:-1], 0.0)  # 0 at a trajectory's start
    cols = {
        "age_s": np.zeros(n),
        "dist_rel_m": np.zeros(n),
        "dt_s": dt,
        "speed_along_mps": df["speed_along_mps"].to_numpy(np.float64, na_value=0.0),
        "offset_m": df["offset_m"].to_numpy(np.float64, na_value=0.0),
        "is_dwell": df["is_dwell"].to_numpy(np.float64, na_value=0.0),
        "is_stale": df["is_stale"].to_numpy(np.float64, na_value=0.0),
        "delay_s": np.nan_to_num(delay),
        "has_delay": np.isfinite(delay).astype(np.float64),
    }
    feats: np.ndarray = np.nan_to_num(np.stack([cols[c] for c in PAST_FEATURES], axis=1))
    return feats


def compute_shape_length(df: pd.DataFrame) -> np.ndarray:
    """(N,) length in metres of each row's shape (NaN where it cannot be known).

    Uses ``shape_length_m`` where present; otherwise recovers it from the matcher's
    ``progress = dist_along_m / length`` (clipped to [0, 1]): the median of
    ``dist_along_m / progress`` over the shape's rows with ``0 < progress < 1``.

    Input columns: ``shape_id, dist_along_m, progress``; optional ``shape_length_m``.
    """
    n = len(df)
    given = (
        df["shape_length_m"].to_numpy(np.float64, na_value=np.nan)
        if "shape_length_m" in df
        else np.full(n, np.nan)
    )
    if "progress" not in df or "shape_id" not in df or np.isfinite(given).all():
        return given
    dist = df["dist_along_m"].to_numpy(np.float64, na_value=np.nan)
    prog = df["progress"].to_numpy(np.float64, na_value=np.nan)
    inner = (prog > 1e-6) & (prog < 1.0 - 1e-9) & (dist > 0)
    est = np.where(inner, dist / np.where(inner, prog, 1.0), np.nan)
    shape, _ = pd.factorize(df["shape_id"].astype("string").fillna(""))
    return np.where(np.isfinite(given), given, compute_group_median(shape, est))


def compute_group_median(group: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(N,) median of the finite ``values`` of each row's ``group`` (NaN: none finite).

    As pandas' ``groupby(group).transform("median")``: the middle value, or the mean of
    the two middle ones; ``group`` holds integer codes in ``[0, N)`` (a negative code is
    no group: NaN).
    """
    out = np.full(len(values), np.nan)
    finite = np.flatnonzero(np.isfinite(values) & (group >= 0))
    if not len(finite):
        return out
    by_value = finite[np.argsort(values[finite], kind="stable")]  # fast on repeated values
    small = group.astype(np.uint16) if group.max() < 2**16 else group  # 16 bits: radix sort
    rows = by_value[np.argsort(small[by_value], kind="stable")]  # by group, then value
    sizes = np.bincount(group[rows], minlength=int(group.max()) + 1)
    starts = np.cumsum(sizes) - sizes
    lo = starts + np.maximum(sizes - 1, 0) // 2
    hi = starts + sizes // 2
    v = values[rows]
    ok = sizes > 0
    median = np.full(len(sizes), np.nan)
    median[ok] = (v[lo[ok]] + v[hi[ok]]) / 2
    out[group >= 0] = median[group[group >= 0]]
    return out


def compute_local_seconds(times: pd.Series, timezone: str) -> np.ndarray:
    """(N,) float64 local wall-clock seconds since 1970-01-01 00:00 (local) of UTC ``times``.

    ``% 86400`` gives the time of day, ``(// 86400 + 3) % 7`` the day of week (Monday 0).
    """
    local = times.dt.tz_convert(timezone).dt.tz_localize(None)
    seconds: np.ndarray = ((local - pd.Timestamp("1970-01-01")) / pd.Timedelta("1s")).to_numpy(
        np.float64
    )
    return seconds


def compute_context(
    df: pd.DataFrame,
    rows: np.ndarray,
    past: np.ndarray,
    lengths: np.ndarray,
    local_s: np.ndarray,
    *,
    timetable: Timetable | None = None,
    timezone: str = "UTC",
) -> np.ndarray:
    """``(len(rows), len(CONTEXT_FEATURES))`` float32 context of the windows anchored at ``rows``.

    Args:
        df: Every usable fix (:func:`~transitnet.datasets.windows.prepare_trajectories`
            output: ``t_s, dist_along_m, progress, shape_id, line_key, speed_along_mps``;
            optional ``shape_length_m, next_stop_dist_m, is_stale``; for the schedule
            features ``trip_id, service_date``, optional ``static_trip_id``): shape
            lengths and live traffic are read from all of them.
        rows: Positions in ``df`` of the windows' anchor fixes.
        past: ``(len(rows), K, len(PAST_FEATURES))`` the windows' past fixes (unscaled).
        lengths: ``(len(rows),)`` valid fixes per window.
        local_s: ``(len(rows),)`` local wall-clock seconds of the anchors
            (:func:`compute_local_seconds`).
        timetable: Scheduled stop times for the schedule features (None: zeros and
            ``has_schedule`` 0 everywhere).
        timezone: IANA zone of the service day (the schedule delay needs it).
    """
    tod = np.floor(local_s) % 86400
    dow = (np.floor_divide(local_s, 86400) + 3) % 7
    length = compute_shape_length(df)[rows]
    dist = df["dist_along_m"].to_numpy(np.float64)[rows]
    nxt = (
        df["next_stop_dist_m"].to_numpy(np.float64, na_value=np.nan)[rows]
        if ("next_stop_dist_m" in df)
        else np.full(len(rows), np.nan)
    )
    # The oldest fix in the window gives the recent along-route speed.
    span_t = past[:, 0, PAST_FEATURES.index("age_s")]
    span_d = -past[:, 0, PAST_FEATURES.index("dist_rel_m")]
    recent = np.where(span_t > 0, span_d / np.maximum(span_t, 1e-6), 0.0)
    anchor = past[np.arange(len(rows)), lengths - 1]
    cols = {
        "tod_sin": np.sin(2 * np.pi * tod / 86400),
        "tod_cos": np.cos(2 * np.pi * tod / 86400),
        "dow_sin": np.sin(2 * np.pi * dow / 7),
        "dow_cos": np.cos(2 * np.pi * dow / 7),
        "progress": df["progress"].to_numpy(np.float64, na_value=0.0)[rows],
        "dist_km": dist / 1000.0,
        "shape_km": np.nan_to_num(length) / 1000.0,
        "remaining_m": np.nan_to_num(np.maximum(length - dist, 0.0)),
        "next_stop_m": np.nan_to_num(nxt - dist),
        "recent_speed_mps": recent,
        "delay_s": anchor[:, PAST_FEATURES.index("delay_s")],
        "has_delay": anchor[:, PAST_FEATURES.index("has_delay")],
    }
    for p in DIST_PERIODS_KM:
        cols[f"dist_sin_{p:g}km"] = np.sin(2 * np.pi * dist / (1000.0 * p))
        cols[f"dist_cos_{p:g}km"] = np.cos(2 * np.pi * dist / (1000.0 * p))
    cols.update(zip(LIVE_FEATURES, compute_live_context(df, rows=rows).T, strict=True))
    at = df.iloc[rows] if timetable is not None else df[[]].iloc[rows]  # no columns: zeros
    schedule = compute_schedule_context(at, timetable, timezone)
    cols.update(zip(SCHEDULE_FEATURES, schedule.T, strict=True))
    context: np.ndarray = np.nan_to_num(np.stack([cols[c] for c in CONTEXT_FEATURES], axis=1))
    return context.astype(np.float32)
