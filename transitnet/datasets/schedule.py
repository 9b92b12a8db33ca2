"""Context features from the timetable: where the schedule takes a vehicle from here.

With a timetable (:class:`~transitnet.gtfs.timetable.Timetable`), each window's anchor
gets the distance the schedule moves the vehicle over fixed offsets while it keeps its
current delay (what the ``schedule_delay`` baseline forecasts at those horizons), the
delay itself, and a ``has_schedule`` flag. Windows without a usable schedule (no
timetable, trip not in it, another shape) get zeros and the flag 0.

The offsets are fixed (:data:`SCHEDULE_OFFSETS_S`), not the configured horizons, so the
feature count never depends on the forecast horizons.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from transitnet.gtfs.service_days import compute_day_origins, compute_scheduled_s
from transitnet.gtfs.timetable import Timetable, compute_schedule_ahead, compute_timetable_dist

#: Offsets (s) at which the schedule's distance ahead is given.
SCHEDULE_OFFSETS_S: tuple[int, ...] = (60, 120, 300, 600, 900)
#: Delays beyond this (s, either way) are clipped: a wrong service day, not a late bus.
MAX_DELAY_S = 3600.0

#: Offsets (s) at which the on-time schedule's distance ahead is given.
ON_TIME_OFFSETS_S: tuple[int, ...] = (0, 300, 600, 900)

#: Schedule context features, in order.
SCHEDULE_FEATURES: tuple[str, ...] = (
    *(f"sched_ahead_{h}s_m" for h in SCHEDULE_OFFSETS_S),
    *(f"sched_on_time_{h}s_m" for h in ON_TIME_OFFSETS_S),
    "sched_delay_s",
    "has_schedule",
)


def find_schedule_trips(frame: pd.DataFrame, timetable: Timetable) -> np.ndarray:
    """(N,) row of each fix's trip in ``timetable`` (-1: no usable schedule).

    Input columns: ``trip_id, shape_id``, optional ``static_trip_id`` (looked up first,
    the realtime ``trip_id`` where it finds nothing).
    """
    trips = frame["trip_id"].astype(object).to_numpy()
    shapes = frame["shape_id"].astype(object).to_numpy()
    if "static_trip_id" in frame.columns:
        static = frame["static_trip_id"].astype(object).to_numpy()
        return timetable.find_trips(static, shapes, trips)
    return timetable.find_trips(trips, shapes)


def compute_schedule_delay(
    frame: pd.DataFrame, timetable: Timetable, timezone: str
) -> tuple[np.ndarray, np.ndarray]:
    """(N,) delay of each fix against the timetable, and its (N,) service-day seconds.

    Args:
        frame: ``trip_id, shape_id, dist_along_m, t_s, service_date``, optional
            ``static_trip_id``.
        timetable: The timetable.
        timezone: IANA zone of the service day.

    Returns:
        The delay (fix time minus the scheduled time at its distance, clipped to
        ±:data:`MAX_DELAY_S`; NaN without a schedule or a service date) and the fix time
        in seconds after its service day's noon minus 12 h (NaN without a date).
    """
    code = find_schedule_trips(frame, timetable)
    dist = frame["dist_along_m"].to_numpy(np.float64, na_value=np.nan)
    s0 = compute_scheduled_s(timetable.index, code, dist)
    origin = compute_day_origins(frame["service_date"].astype(object).to_numpy(), timezone)
    day_s = frame["t_s"].to_numpy(np.float64) - origin
    return np.clip(day_s - s0, -MAX_DELAY_S, MAX_DELAY_S), day_s


def fill_schedule_delay(df: pd.DataFrame, timetable: Timetable, timezone: str) -> pd.DataFrame:
    """``df`` with ``delay_s`` from the timetable where the matcher gave none.

    The per-fix delay then enters the windows' past features (``delay_s, has_delay``),
    so the encoder sees how the delay evolved. Delays at the clip bound
    (±:data:`MAX_DELAY_S`: a wrong service day) stay NaN.

    Args:
        df: Fixes with ``trip_id, shape_id, dist_along_m, t_s, service_date``, optional
            ``static_trip_id, delay_s``.
        timetable: The timetable.
        timezone: IANA zone of the service day.

    Returns:
        A copy of ``df`` whose ``delay_s`` (float64) is filled where it was missing.
    """
    delay, _ = compute_schedule_delay(df, timetable, timezone)
    delay[np.abs(delay) >= MAX_DELAY_S] = np.nan
    given = (
        df["delay_s"].to_numpy(np.float64, na_value=np.nan)
        if "delay_s" in df
        else np.full(len(df), np.nan)
    )
    return df.assign(delay_s=np.where(np.isfinite(given), given, delay))


def compute_schedule_context(
    at: pd.DataFrame, timetable: Timetable | None, timezone: str
) -> np.ndarray:
    """``(len(at), len(SCHEDULE_FEATURES))`` schedule features of the anchor fixes ``at``.

    Args:
        at: The windows' anchor fixes: ``trip_id, shape_id, dist_along_m, t_s,
            service_date`` and optionally ``static_trip_id`` (looked up first, the
            realtime ``trip_id`` where it finds nothing).
        timetable: The timetable, or None (every row gets zeros and ``has_schedule`` 0).
        timezone: IANA zone of the service day (for the delay).

    Returns:
        float64 features: ``sched_ahead_<h>s_m`` metres the schedule moves the vehicle
        over ``h`` s keeping its delay; ``sched_on_time_<h>s_m`` where the timetable
        wants the vehicle ``h`` s from now minus where it is (negative when early; the
        keep-delay value where the delay is unknown); ``sched_delay_s`` (anchor time
        minus the scheduled time at the anchor's distance, clipped to
        ±:data:`MAX_DELAY_S`); ``has_schedule`` (1 where the trip has a usable schedule).
    """
    out = np.zeros((len(at), len(SCHEDULE_FEATURES)))
    if timetable is None or not len(at):
        return out
    code = find_schedule_trips(at, timetable)
    dist = at["dist_along_m"].to_numpy(np.float64, na_value=np.nan)
    ahead, s0 = compute_schedule_ahead(timetable.index, code, dist, SCHEDULE_OFFSETS_S)
    delay, day_s = compute_schedule_delay(at, timetable, timezone)
    known = np.isfinite(delay) & (np.abs(delay) < MAX_DELAY_S)
    on_time = np.empty((len(at), len(ON_TIME_OFFSETS_S)))
    for j, h in enumerate(ON_TIME_OFFSETS_S):
        there = compute_timetable_dist(timetable.index, code, day_s + float(h)) - dist
        on_time[:, j] = np.where(known, there, ahead[:, SCHEDULE_OFFSETS_S.index(h)] if h else 0.0)
    has = np.isfinite(ahead).all(axis=1) & np.isfinite(s0)
    n, m = len(SCHEDULE_OFFSETS_S), len(ON_TIME_OFFSETS_S)
    out[:, :n] = ahead
    out[:, n : n + m] = on_time
    out[:, n + m] = delay
    out[has, : n + m + 1] = np.nan_to_num(out[has, : n + m + 1])
    out[~has] = 0.0
    out[:, n + m + 1] = has
    return out
