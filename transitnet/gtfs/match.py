"""Map matching: every stored position placed on its route, in metres.

:func:`match_positions` takes decoded positions (columns of
:data:`transitnet.schema.POSITION_COLUMNS`) and static artefacts, and returns the same rows
with :data:`MATCH_COLUMNS` added. :func:`match_store` does it for a whole store, one
``positions/feed=<id>/date=<day>/`` partition at a time, into ``matched/`` (same layout).

How (details in :mod:`transitnet.gtfs.project` and :mod:`transitnet.gtfs.trajectory`):

1. each row's trip is resolved to a static shape (:func:`transitnet.gtfs.resolve.
   resolve_trip_shapes`: exact trip, else a recorded fallback);
2. invalid positions (missing, out of range, (0, 0)) are set aside *before* any geometry
   (pyproj turns them into infinities);
3. rows are grouped into trajectories (feed + vehicle + trip or route + shape + start
   date, split at gaps longer than ``trajectory_gap_s``) and sorted by time;
4. a grid gives each fix its candidate positions on its shape (one per pass of the shape
   within ``off_shape_m``), and the trajectory's history picks one, so a vehicle on the
   inbound leg of a loop or out-and-back stays on it;
5. per trajectory: along-route speed, stale repeats, dwells at stops, and where the
   static feed has stop_times, the scheduled time at the current distance and the delay.

This module is the public entry point; the code lives in :mod:`transitnet.gtfs.match_index`
(settings and the per-version index), :mod:`transitnet.gtfs.matcher` (one table of rows),
:mod:`transitnet.gtfs.service_days` (schedule, service dates, trajectory ids) and
:mod:`transitnet.gtfs.match_store` (a whole store).
"""

from __future__ import annotations

from transitnet.gtfs.match_index import MatchConfig, MatchIndex, build_match_index
from transitnet.gtfs.match_store import MATCHED_DIR, MATCHED_PART, SOURCE_KEY, match_store
from transitnet.gtfs.matcher import (
    MATCH_COLUMNS,
    MATCH_STATUSES,
    compute_service_days,
    match_positions,
)

__all__ = [
    "MATCHED_DIR",
    "MATCHED_PART",
    "MATCH_COLUMNS",
    "MATCH_STATUSES",
    "SOURCE_KEY",
    "MatchConfig",
    "MatchIndex",
    "build_match_index",
    "compute_service_days",
    "match_positions",
    "match_store",
]
