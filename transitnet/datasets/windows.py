"""Training windows from matched trajectories.

A window is anchored at one fix of a vehicle on its trip. Its inputs are the last K
fixes up to and including the anchor; its targets are the along-route distance the
vehicle travels from the anchor over each horizon, interpolated between the two future
fixes of the same trajectory that bracket ``anchor_time + horizon``. A target with no
bracketing fixes is masked, never extrapolated.

Input columns (from :func:`transitnet.gtfs.match.match_positions`): ``feed_id,
vehicle_id, trip_id, start_date, vehicle_timestamp (UTC), line_key, shape_id,
dist_along_m, offset_m, progress, speed_along_mps, match_status, is_stale, is_dwell``;
optional ``delay_s``, ``start_time``, ``service_date``, ``next_stop_dist_m``,
``shape_length_m``, ``static_trip_id`` (with a timetable: see
:mod:`transitnet.datasets.schedule`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from transitnet.datasets.features import (
    CONTEXT_FEATURES,
    PAST_FEATURES,
    compute_context,
    compute_local_seconds,
    compute_past_features,
)
from transitnet.datasets.grouping import compute_group_codes, sort_by_group_and_time
from transitnet.datasets.schedule import fill_schedule_delay
from transitnet.gtfs.timetable import Timetable

__all__ = [
    "CONTEXT_FEATURES",
    "PAST_FEATURES",
    "USABLE_STATUSES",
    "WindowConfig",
    "Windows",
    "build_windows",
    "concat_windows",
    "interpolate_future",
    "prepare_trajectories",
    "sample_per_line",
]

#: Match statuses whose distance along the shape is trusted for training.
USABLE_STATUSES: tuple[str, ...] = (
    "ok",
    "fallback_suffix",
    "fallback_headsign",
    "fallback_variant",
    "fallback_stops",
)


@dataclass(frozen=True)
class WindowConfig:
    """How windows are cut.

    Attributes:
        past_fixes: K, the number of fixes (anchor included) fed to the encoder.
        horizons_s: Forecast horizons in seconds.
        max_gap_s: A gap between fixes longer than this starts a new trajectory.
        statuses: Match statuses used; other rows are left out of windows.
        timezone: Agency timezone for time-of-day and day-of-week features.
    """

    past_fixes: int = 8
    horizons_s: tuple[int, ...] = (60, 120, 300, 600, 900)
    max_gap_s: float = 600.0
    statuses: tuple[str, ...] = USABLE_STATUSES
    timezone: str = "UTC"


@dataclass
class Windows:
    """Windows as aligned arrays (N windows, K past fixes, H horizons).

    Attributes:
        past: (N, K, len(PAST_FEATURES)) float32, left-aligned; rows past ``lengths`` are 0.
        lengths: (N,) int64 number of valid past fixes (1..K).
        context: (N, len(CONTEXT_FEATURES)) float32.
        targets: (N, H) float32 metres travelled from the anchor at each horizon.
        target_mask: (N, H) bool, True where the target is observed.
        meta: One row per window: ``feed_id, vehicle_id, trip_id, line_key, shape_id,
            trajectory, anchor_time (UTC), local_hour, service_date, dist_along_m,
            speed_along_mps, delay_s``.
        horizons_s: The horizons, in seconds.
    """

    past: np.ndarray
    lengths: np.ndarray
    context: np.ndarray
    targets: np.ndarray
    target_mask: np.ndarray
    meta: pd.DataFrame
    horizons_s: tuple[int, ...] = field(default=(60, 120, 300, 600, 900))

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def subset(self, index: Any) -> Windows:
        """Return the windows at ``index`` (a bool mask or integer positions)."""
        idx = np.asarray(index)
        rows = np.flatnonzero(idx) if idx.dtype == bool else idx
        return Windows(
            self.past[rows],
            self.lengths[rows],
            self.context[rows],
            self.targets[rows],
            self.target_mask[rows],
            self.meta.iloc[rows].reset_index(drop=True),
            self.horizons_s,
        )


def compute_service_date(
    times: pd.Series, timezone: str, start_date: pd.Series | None
) -> pd.Series:
    """Return the service date (``YYYY-MM-DD``) of each fix.

    Uses GTFS-rt ``start_date`` where set; otherwise the local date of the fix shifted back
    by 3 h, so trips running past midnight stay on the day they started.
    """
    shifted = times.dt.tz_convert(timezone) - pd.Timedelta(hours=3)
    local: pd.Series = shifted.dt.strftime("%Y-%m-%d")
    if start_date is None:
        return local
    given = start_date.astype("string")
    formatted = given.str.slice(0, 4) + "-" + given.str.slice(4, 6) + "-" + given.str.slice(6, 8)
    valid = given.str.fullmatch(r"\d{8}").fillna(False).astype(bool)
    result: pd.Series = formatted.where(valid, local).astype(str)
    return result


#: Matched columns windows are built from (others are not copied).
WINDOW_COLUMNS: tuple[str, ...] = (
    "feed_id",
    "vehicle_id",
    "trip_id",
    "start_date",
    "start_time",
    "service_date",
    "vehicle_timestamp",
    "line_key",
    "shape_id",
    "dist_along_m",
    "offset_m",
    "progress",
    "speed_along_mps",
    "match_status",
    "is_stale",
    "is_dwell",
    "delay_s",
    "next_stop_dist_m",
    "shape_length_m",
    "static_trip_id",
)


def prepare_trajectories(matched: pd.DataFrame, config: WindowConfig) -> pd.DataFrame:
    """Keep usable fixes and order them by trajectory and time.

    Input columns: see the module docstring (only :data:`WINDOW_COLUMNS` are kept). Output
    adds ``t_s`` (float seconds since the epoch), ``service_date`` and ``trajectory`` (int
    id of feed + vehicle + trip + service date, split at gaps longer than ``max_gap_s``);
    rows with an unusable match status or without a time or distance are left out.
    """
    usable = np.flatnonzero(
        (
            matched["match_status"].isin(config.statuses)
            & matched["dist_along_m"].notna()
            & matched["vehicle_timestamp"].notna()
        ).to_numpy(dtype=bool)
    )
    df = matched[[c for c in WINDOW_COLUMNS if c in matched.columns]]
    if len(usable) < len(df):
        df = df.take(usable)
    if "service_date" not in df.columns:
        start = df["start_date"] if "start_date" in df.columns else None
        df["service_date"] = compute_service_date(df["vehicle_timestamp"], config.timezone, start)
    code = compute_group_codes(df, ("feed_id", "vehicle_id", "trip_id", "service_date"))
    epoch = pd.Timestamp("1970-01-01", tz="UTC")
    t = ((df["vehicle_timestamp"] - epoch) / pd.Timedelta("1s")).to_numpy(np.float64)
    order = sort_by_group_and_time(code, t)
    code, t = code[order], t[order]
    # One fix per (trajectory, timestamp): re-published fixes carry no new information.
    first = np.ones(len(code), dtype=bool)
    first[1:] = (code[1:] != code[:-1]) | (t[1:] != t[:-1])
    code, t = code[first], t[first]
    df = df.take(order[first]).reset_index(drop=True)
    df["t_s"] = t
    new_key = np.ones(len(code), dtype=bool)
    new_key[1:] = code[1:] != code[:-1]
    gap = np.zeros(len(code), dtype=bool)
    gap[1:] = np.diff(t) > config.max_gap_s
    df["trajectory"] = np.cumsum(new_key | gap).astype(np.int64) - 1
    return df


def interpolate_future(
    traj: np.ndarray, t: np.ndarray, d: np.ndarray, horizons_s: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Distance travelled from each fix at each horizon, by linear interpolation.

    Args:
        traj: (N,) trajectory id, sorted, with ``t`` increasing within a trajectory.
        t: (N,) fix times in seconds.
        d: (N,) distance along the shape in metres.
        horizons_s: Horizons in seconds.

    Returns:
        (N, H) float32 targets and (N, H) bool mask (False where no future fix brackets
        ``t + h`` within the same trajectory).
    """
    span = float(np.nanmax(t) - np.nanmin(t)) + 1e6 if len(t) else 1.0
    key = traj.astype(np.float64) * span + (t - (np.nanmin(t) if len(t) else 0.0))
    targets = np.zeros((len(t), len(horizons_s)), dtype=np.float32)
    mask = np.zeros((len(t), len(horizons_s)), dtype=bool)
    for j, h in enumerate(horizons_s):
        q = key + h
        hi = np.searchsorted(key, q, side="left")
        lo = hi - 1
        ok = (hi < len(t)) & (lo >= 0)
        hi_c = np.clip(hi, 0, len(t) - 1)
        lo_c = np.clip(lo, 0, len(t) - 1)
        ok &= (traj[hi_c] == traj) & (traj[lo_c] == traj)
        exact = ok & (key[hi_c] == q)
        w = np.where(ok & ~exact, (q - key[lo_c]) / np.maximum(key[hi_c] - key[lo_c], 1e-9), 1.0)
        value = np.where(exact, d[hi_c], d[lo_c] + w * (d[hi_c] - d[lo_c]))
        targets[:, j] = np.where(ok, value - d, 0.0)
        mask[:, j] = ok
    return targets, mask


def _gather_past(
    feats: np.ndarray, traj: np.ndarray, t: np.ndarray, d: np.ndarray, k: int, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Left-aligned (len(rows), K, F) windows of the last ``k`` fixes up to each of ``rows``."""
    n = len(traj)
    idx = np.arange(n)
    starts = np.zeros(n, dtype=np.int64)
    new = np.ones(n, dtype=bool)
    new[1:] = traj[1:] != traj[:-1]
    starts[new] = idx[new]
    starts = np.maximum.accumulate(starts)[rows]
    lengths = np.minimum(rows - starts + 1, k)
    first = rows - lengths + 1
    pos = first[:, None] + np.arange(k)[None, :]
    valid = np.arange(k)[None, :] < lengths[:, None]
    pos = np.where(valid, pos, rows[:, None])
    past = feats[pos].astype(np.float32)
    a, r = PAST_FEATURES.index("age_s"), PAST_FEATURES.index("dist_rel_m")
    past[:, :, a] = (t[rows][:, None] - t[pos]).astype(np.float32)
    past[:, :, r] = (d[pos] - d[rows][:, None]).astype(np.float32)
    past[~valid] = 0.0
    return past, lengths.astype(np.int64)


def build_windows(
    matched: pd.DataFrame,
    config: WindowConfig | None = None,
    *,
    latest_only: bool = False,
    timetable: Timetable | None = None,
) -> Windows:
    """Cut every usable fix of ``matched`` into a window with its future targets.

    Args:
        matched: Matched positions (columns in the module docstring).
        config: Window settings; defaults to :class:`WindowConfig`.
        latest_only: Serving mode: one window per trajectory, anchored at its latest fix
            (targets all masked: its future is not known yet). Every fix still feeds the
            past windows and the live traffic context.
        timetable: Scheduled stop times keyed by the fixes' ``trip_id`` (or
            ``static_trip_id``) for the schedule context features
            (:mod:`transitnet.datasets.schedule`); it also fills each fix's ``delay_s``
            where the matcher gave none. None gives the schedule features zeros and
            ``has_schedule`` 0. Public and fixed in advance, so no leakage.

    Returns:
        One window per usable fix (or per trajectory), in trajectory/time order. Windows
        whose targets are all masked are kept (they still serve prediction); training code
        filters them.
    """
    config = config or WindowConfig()
    df = prepare_trajectories(matched, config)
    if timetable is not None:
        df = fill_schedule_delay(df, timetable, config.timezone)
    traj = df["trajectory"].to_numpy(np.int64)
    t = df["t_s"].to_numpy(np.float64)
    d = df["dist_along_m"].to_numpy(np.float64)
    rows = np.arange(len(df))
    if latest_only:
        rows = rows[np.r_[traj[1:] != traj[:-1], True]] if len(df) else rows
    past, lengths = _gather_past(compute_past_features(df), traj, t, d, config.past_fixes, rows)
    if latest_only:
        targets = np.zeros((len(rows), len(config.horizons_s)), dtype=np.float32)
        mask = np.zeros(targets.shape, dtype=bool)
    else:
        targets, mask = interpolate_future(traj, t, d, config.horizons_s)
    meta_cols = [
        "feed_id",
        "vehicle_id",
        "trip_id",
        "line_key",
        "shape_id",
        "trajectory",
        "service_date",
        "dist_along_m",
        "speed_along_mps",
    ]
    at = df[[*meta_cols, "vehicle_timestamp", *(["delay_s"] if "delay_s" in df else [])]]
    at = at.iloc[rows]  # the anchors' columns only
    local_s = compute_local_seconds(at["vehicle_timestamp"], config.timezone)
    context = compute_context(
        df, rows, past, lengths, local_s, timetable=timetable, timezone=config.timezone
    )
    meta = at[meta_cols]
    meta["anchor_time"] = at["vehicle_timestamp"]
    meta["local_hour"] = (np.floor(local_s) % 86400 // 3600).astype(np.int64)
    meta["delay_s"] = at["delay_s"] if "delay_s" in at else np.nan
    return Windows(
        past, lengths, context, targets, mask, meta.reset_index(drop=True), tuple(config.horizons_s)
    )


def concat_windows(parts: list[Windows]) -> Windows:
    """Concatenate windows cut with the same configuration (same K and horizons)."""
    if not parts:
        raise ValueError("nothing to concatenate")
    horizons = {p.horizons_s for p in parts}
    if len(horizons) != 1:
        raise ValueError(f"windows with different horizons cannot be concatenated: {horizons}")
    return Windows(
        np.concatenate([p.past for p in parts]),
        np.concatenate([p.lengths for p in parts]),
        np.concatenate([p.context for p in parts]),
        np.concatenate([p.targets for p in parts]),
        np.concatenate([p.target_mask for p in parts]),
        pd.concat([p.meta for p in parts], ignore_index=True),
        parts[0].horizons_s,
    )


def sample_per_line(windows: Windows, per_line: int, seed: int = 0) -> Windows:
    """A line-balanced sample: at most ``per_line`` windows of each line key (seeded)."""
    rng = np.random.default_rng(seed)
    keys = windows.meta["line_key"].astype(str).to_numpy()
    chosen = []
    for key in np.unique(keys):
        idx = np.flatnonzero(keys == key)
        chosen.append(rng.choice(idx, min(per_line, len(idx)), replace=False))
    rows = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    return windows.subset(rows)
