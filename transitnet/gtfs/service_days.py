"""Service days and the schedule: scheduled times by distance, service dates, day origins.

GTFS times count from the service day's noon minus 12 h (local time), and a trip may run
past 24:00, so a fix's service date is not always its local date. :class:`ScheduleIndex`
holds each trip's stop distances and times (:func:`build_schedule_index`);
:func:`compute_scheduled_s` interpolates the scheduled time at any distance along the
trip; :func:`choose_service_dates` picks each trajectory's service date and
:func:`compute_day_origins` turns it into epoch seconds, so that
``delay = t - day origin - scheduled``. :func:`build_trajectory_ids` names each
trajectory after its vehicle, trip and service date.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Columns naming a vehicle in decoded positions; per row, the first one set wins.
VEHICLE_COLUMNS: tuple[str, ...] = ("vehicle_id", "vehicle_label", "entity_id")


@dataclass(frozen=True)
class ScheduleIndex:
    """Scheduled times by distance along each trip (CSR by trip).

    Attributes:
        trip_ids: (T,) static trip ids, the rows of the index.
        offsets: (T+1,) int64; stops of trip ``i`` are ``[offsets[i], offsets[i+1])``.
        key: (K,) stop distance shifted per trip so it increases over the whole index.
        base: (T,) the shift of each trip.
        dist_m: (K,) stop distance along the trip's shape (non-decreasing per trip).
        arrival_s: (K,) scheduled arrival, seconds after service-day noon minus 12 h.
        departure_s: (K,) scheduled departure.
    """

    trip_ids: np.ndarray
    offsets: np.ndarray
    key: np.ndarray
    base: np.ndarray
    dist_m: np.ndarray
    arrival_s: np.ndarray
    departure_s: np.ndarray


def build_schedule_index(
    trip_id: np.ndarray, dist_m: np.ndarray, arrival_s: np.ndarray, departure_s: np.ndarray
) -> ScheduleIndex:
    """Build a :class:`ScheduleIndex` from stop rows already sorted by trip, stop order.

    Stops without a distance or without any time are skipped (times between timepoints
    are then interpolated by distance, as GTFS intends); a missing arrival takes the
    departure and vice versa. Distances are made non-decreasing within each trip.
    """
    arr = np.where(np.isnan(arrival_s), departure_s, arrival_s)
    dep = np.where(np.isnan(departure_s), arr, departure_s)
    ok = np.isfinite(dist_m) & np.isfinite(arr)
    trip_id, dist, arr, dep = trip_id[ok], dist_m[ok], arr[ok], dep[ok]
    new = np.ones(len(trip_id), dtype=bool)
    new[1:] = trip_id[1:] != trip_id[:-1]
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, len(trip_id)))
    code = np.repeat(np.arange(len(starts)), counts)
    dist = _cumulative_max_by_group(dist, code)
    top = dist[np.append(starts[1:], len(dist)) - 1] if len(dist) else dist
    base = np.concatenate([[0.0], np.cumsum(top + 1.0)[:-1]]) if len(top) else top
    return ScheduleIndex(
        trip_ids=trip_id[starts],
        offsets=np.append(starts, len(trip_id)).astype(np.int64),
        key=dist + base[code],
        base=base,
        dist_m=dist,
        arrival_s=arr,
        departure_s=dep,
    )


def _cumulative_max_by_group(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Running maximum of ``values`` restarting at each group (groups contiguous)."""
    if not len(values):
        return values
    shift = group * (np.nanmax(np.abs(values)) * 2 + 1.0)
    return np.asarray(np.maximum.accumulate(values + shift) - shift)


def compute_scheduled_s(index: ScheduleIndex, trip: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Scheduled time (s after service-day noon − 12 h) at each distance along its trip.

    Between two stops the time runs linearly by distance from the departure at the
    first to the arrival at the next; before the first stop it is the first departure,
    past the last stop the last arrival.

    Args:
        index: The schedule index.
        trip: (N,) int64 row of each fix's trip in ``index`` (-1: no schedule).
        dist: (N,) distance along the shape.

    Returns:
        (N,) float64, NaN without a trip, a distance or a schedule.
    """
    out = np.full(len(dist), np.nan)
    ok = np.flatnonzero((trip >= 0) & np.isfinite(dist))
    if not len(ok):
        return out
    tr, d = trip[ok], dist[ok]
    lo, hi = index.offsets[tr], index.offsets[tr + 1] - 1
    i = np.clip(np.searchsorted(index.key, index.base[tr] + d, side="right") - 1, lo, hi)
    j = np.minimum(i + 1, hi)
    span = index.dist_m[j] - index.dist_m[i]
    frac = np.clip(np.divide(d - index.dist_m[i], span, out=np.zeros_like(d), where=span > 0), 0, 1)
    between = index.departure_s[i] + frac * (index.arrival_s[j] - index.departure_s[i])
    before = d < index.dist_m[lo]
    out[ok] = np.where(before, index.departure_s[lo], np.where(i == j, index.arrival_s[j], between))
    return out


def compute_day_origins(dates: np.ndarray, timezone: str) -> np.ndarray:
    """Epoch seconds of each service day's origin: local noon minus 12 h (GTFS time 0).

    Args:
        dates: (N,) ``YYYY-MM-DD`` strings or None.
        timezone: IANA zone of the feed.

    Returns:
        (N,) float64, NaN where the date is missing.
    """
    out = np.full(len(dates), np.nan)
    known = np.flatnonzero(pd.notna(dates))
    if not len(known):
        return out
    uniq, inverse = np.unique(dates[known].astype(str), return_inverse=True)
    noon = pd.to_datetime(pd.Series(uniq), format="%Y-%m-%d") + pd.Timedelta(hours=12)
    origin = noon.dt.tz_localize(timezone) - pd.Timedelta(hours=12)
    secs = (origin - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    out[known] = secs.to_numpy(dtype=np.float64)[inverse]
    return out


def compute_local_dates(t_s: np.ndarray, timezone: str | None) -> np.ndarray:
    """Return the local ``YYYY-MM-DD`` of each epoch second (UTC without a zone; None: NaN)."""
    stamps = pd.Series(pd.to_datetime(t_s, unit="s", utc=True))
    if timezone:
        stamps = stamps.dt.tz_convert(timezone)
    text = stamps.dt.strftime("%Y-%m-%d")
    return np.array(text.astype(object).where(text.notna(), None).to_numpy(), dtype=object)


def choose_service_dates(
    first_t: np.ndarray,
    start_date: np.ndarray,
    sched_t: np.ndarray,
    sched_s: np.ndarray,
    timezone: str | None,
) -> np.ndarray:
    """Pick each trajectory's service date.

    The feed's ``start_date`` when given; else the local date of the trajectory's first
    fix, or the day before when the schedule fits that day better (a trip that runs past
    midnight, scheduled after 24:00).

    Args:
        first_t: (T,) epoch seconds of each trajectory's first fix (NaN: unknown).
        start_date: (T,) ``YYYY-MM-DD`` from the feed, or None.
        sched_t: (T,) epoch seconds of the first fix with a scheduled time (NaN: none).
        sched_s: (T,) that fix's scheduled seconds after service-day noon − 12 h.
        timezone: IANA zone, or None (dates are then UTC dates).

    Returns:
        (T,) object array of ``YYYY-MM-DD`` or None.
    """
    dates = compute_local_dates(first_t, timezone)
    if timezone:
        has = np.flatnonzero(np.isfinite(sched_t) & pd.notna(dates))
        today = dates[has]
        day = pd.to_datetime(pd.Series(today.astype(str)), format="%Y-%m-%d")
        before = (day - pd.Timedelta(days=1)).dt.strftime("%Y-%m-%d").to_numpy(dtype=object)
        late = np.abs(sched_t[has] - compute_day_origins(before, timezone) - sched_s[has])
        fits = np.abs(sched_t[has] - compute_day_origins(today, timezone) - sched_s[has])
        dates[has] = np.where(late < fits, before, today)
    return np.where(pd.notna(start_date), start_date, dates)


def read_start_dates(frame: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """Read the feed's ``start_date`` of some rows as ``YYYY-MM-DD``.

    Args:
        frame: Positions; uses ``start_date`` (``YYYYMMDD`` text) when present.
        rows: (T,) positional rows of ``frame`` to read.

    Returns:
        (T,) object array of ``YYYY-MM-DD``, None where missing or unparseable.
    """
    if "start_date" not in frame.columns:
        return np.full(len(rows), None, dtype=object)
    raw = frame["start_date"].iloc[rows].astype("string").str.strip()
    parsed = pd.to_datetime(raw, format="%Y%m%d", errors="coerce").dt.strftime("%Y-%m-%d")
    return np.asarray(parsed.astype(object).where(parsed.notna(), None).to_numpy(), dtype=object)


def build_trajectory_ids(frame: pd.DataFrame, first: np.ndarray, dates: np.ndarray) -> np.ndarray:
    """Name each trajectory ``[<feed>/]<vehicle>/<trip_id or route:<route_id>>/<date>[#k]``.

    Args:
        frame: Positions; uses when present ``feed_id``, the first set of
            :data:`VEHICLE_COLUMNS`, ``trip_id`` and ``route_id`` (missing parts: ``?``).
        first: (T,) positional row of each trajectory's first fix.
        dates: (T,) service date of each trajectory (``YYYY-MM-DD`` or None).

    Returns:
        (T,) object array of ids; ``#k`` (k >= 2) tells apart repeats of the same id.
    """
    head = frame.iloc[first]

    def text(*columns: str) -> pd.Series:
        out = pd.Series(pd.NA, index=head.index, dtype="string")
        for c in columns:
            if c in head.columns:
                out = out.fillna(head[c].astype("string"))
        return out

    route = "route:" + text("route_id").fillna("?")
    parts = [text(*VEHICLE_COLUMNS).fillna("?"), text("trip_id").fillna(route),
             pd.Series(dates, index=head.index, dtype="string").fillna("?")]  # fmt: skip
    if "feed_id" in head.columns:
        parts.insert(0, text("feed_id").fillna("?"))
    ids = parts[0]
    for part in parts[1:]:
        ids = ids + "/" + part
    repeat = ids.groupby(ids).cumcount()
    ids = ids.where(repeat == 0, ids + "#" + (repeat + 1).astype("string"))
    return np.asarray(ids.to_numpy(dtype=object), dtype=object)
