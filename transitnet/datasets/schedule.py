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

from transitnet.gtfs.service_days import compute_day_origins
from transitnet.gtfs.timetable import Timetable, compute_schedule_ahead

#: Offsets (s) at which the schedule's distance ahead is given.
SCHEDULE_OFFSETS_S: tuple[int, ...] = (60, 120, 300, 600, 900)
#: Delays beyond this (s, either way) are clipped: a wrong service day, not a late bus.
MAX_DELAY_S = 3600.0

#: Schedule context features, in order.
SCHEDULE_FEATURES: tuple[str, ...] = (
    *(f"sched_ahead_{h}s_m" for h in SCHEDULE_OFFSETS_S),
    "sched_delay_s",
    "has_schedule",
)


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
        over ``h`` s keeping its delay, ``sched_delay_s`` (anchor time minus the
        scheduled time at the anchor's distance, clipped to ±:data:`MAX_DELAY_S`), and
        ``has_schedule`` (1 where the window's trip has a usable schedule).
    """
    out = np.zeros((len(at), len(SCHEDULE_FEATURES)))
    if timetable is None or not len(at):
        return out
    trips = at["trip_id"].astype(object).to_numpy()
    shapes = at["shape_id"].astype(object).to_numpy()
    if "static_trip_id" in at.columns:
        static = at["static_trip_id"].astype(object).to_numpy()
        code = timetable.find_trips(static, shapes, trips)
    else:
        code = timetable.find_trips(trips, shapes)
    dist = at["dist_along_m"].to_numpy(np.float64, na_value=np.nan)
    ahead, s0 = compute_schedule_ahead(timetable.index, code, dist, SCHEDULE_OFFSETS_S)
    origin = compute_day_origins(at["service_date"].astype(object).to_numpy(), timezone)
    delay = np.clip(at["t_s"].to_numpy(np.float64) - origin - s0, -MAX_DELAY_S, MAX_DELAY_S)
    has = np.isfinite(ahead).all(axis=1) & np.isfinite(s0)
    n = len(SCHEDULE_OFFSETS_S)
    out[:, :n] = np.where(has[:, None], np.nan_to_num(ahead), 0.0)
    out[:, n] = np.where(has, np.nan_to_num(delay), 0.0)
    out[:, n + 1] = has
    return out
