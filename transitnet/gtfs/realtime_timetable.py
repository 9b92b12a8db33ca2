"""The day's timetable recovered from GTFS-realtime TripUpdates (scheduled = time - delay).

Auckland Transport's TripUpdates report, for every stop visit, the event time and its
delay against the timetable, so ``time - delay`` is the scheduled time of that visit. The
timetable is public and fixed in advance: it is the same whatever happened on the day,
so recovering it from the realtime feed leaks no outcome into a forecast that uses it
(the delay at the anchor is taken from the vehicle's own past, as OneBusAway does). This
gives the schedule-with-current-delay baseline a timetable when the static feed at hand
is another version than the day's (Auckland: the June ``v80.31`` subset against the
day's ``v82.14`` trips), at every stop a trip reported.

:func:`build_stop_times_from_trip_updates` returns rows in exactly the
:attr:`~transitnet.gtfs.artefacts.StaticArtefacts.stop_times` columns, keyed by the
realtime ``trip_id``:

- ``arrival_s`` is the scheduled arrival (``arrival_time - arrival_delay_s``); a visit
  reported only by its departure uses the scheduled departure for both, and one
  reported only by its arrival uses the arrival for both.
- Times are seconds after service-day noon minus 12 h in ``timezone``. The service day
  is ``start_date`` when the feed gives it, else the local date of the trip's first
  scheduled visit, one day earlier when ``start_time`` shows the trip began the day
  before (e.g. ``23:50:00`` for a visit scheduled at 00:10).
- ``dist_m`` is the stop's distance along the trip's shape (``trip_shapes``), from the
  static ``stop_dist`` of the (shape, pattern) holding most of the trip's stops; stop
  ids are joined with their ``-<feedversion>`` suffix stripped. A stop listed twice in
  the pattern (loops) takes the occurrence whose ``stop_sequence`` is nearest.

These are derived reference data, not stored observations, so bad rows are dropped,
each reason counted, logged and kept in ``frame.attrs["dropped"]``. ``no_delay`` counts
event rows (reports) without a time and its delay; the other counts are visits (one per
trip and ``stop_sequence``, however many snapshots repeated it): visits whose reports
disagree by more than :data:`SPREAD_TOL_S` (``inconsistent``) or that depart before
they arrive (``departs_before_arrival``), visits of trips without a shape
(``no_shape``), stops not on the trip's shape pattern (``stop_not_on_shape``), stops that
go back along the shape or back in scheduled time (``non_monotone``).

On 2019-08-13 (:mod:`benchmarks.exp_realtime_timetable`), where a realtime trip runs the
same route at the same start time as a published June trip, 8 of 11 such trips have
exactly the published times at every stop (76 % of 381 visits equal, 82 % within 60 s);
the other 3 differ by up to 7 min, most likely revisions between the two versions.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from transitnet.gtfs.artefacts import StaticArtefacts

logger = logging.getLogger(__name__)

#: ``<id>-<feedversion>`` as Auckland Transport writes it (as in ``transitnet.evaluate_eta``,
#: which the gtfs layer cannot import).
VERSION_SUFFIX = r"-\d{8,14}_v[\d.]+$"
#: Reports of one visit whose scheduled times differ by more than this are inconsistent.
SPREAD_TOL_S = 60.0
STOP_TIME_COLUMNS: tuple[str, ...] = (
    "trip_id",
    "stop_sequence",
    "stop_index",
    "stop_id",
    "arrival_s",
    "departure_s",
    "dist_m",
)
_EVENT_COLUMNS = ("trip_id", "stop_id", "stop_sequence", "arrival_time", "arrival_delay_s",
                  "departure_time", "departure_delay_s")  # fmt: skip


def strip_suffix(ids: pd.Series) -> pd.Series:
    """Drop a ``-<feedversion>`` suffix (``1870-20190613111133_v80.31`` → ``1870``)."""
    result: pd.Series = ids.astype("string").str.replace(VERSION_SUFFIX, "", regex=True)
    return result


def _scheduled(events: pd.DataFrame, kind: str) -> pd.Series:
    """Scheduled instant (UTC) of ``kind`` (arrival/departure): time minus delay."""
    delay = pd.to_timedelta(events[f"{kind}_delay_s"].astype("Float64"), unit="s")
    out: pd.Series = pd.to_datetime(events[f"{kind}_time"], utc=True) - delay
    return out


def compute_visits(events: pd.DataFrame, dropped: dict[str, int]) -> pd.DataFrame:
    """One row per (trip, stop_sequence) with its scheduled arrival/departure instants.

    Args:
        events: TripUpdates stop events (``trip_id, stop_id, stop_sequence,
            arrival_time, arrival_delay_s, departure_time, departure_delay_s`` and
            optionally ``start_date, start_time``).
        dropped: Counts of dropped rows by reason, updated in place.

    Returns:
        ``trip_id, stop_sequence, stop_id, start_date, start_time, sched_arr, sched_dep``
        (UTC instants; each filled from the other when only one was reported).
    """
    ev = events.reindex(columns=[*_EVENT_COLUMNS, "start_date", "start_time"])
    ev = ev.assign(sched_arr=_scheduled(ev, "arrival"), sched_dep=_scheduled(ev, "departure"))
    usable = (ev["sched_arr"].notna() | ev["sched_dep"].notna()) & ev["trip_id"].notna()
    usable &= ev["stop_sequence"].notna() & ev["stop_id"].notna()
    dropped["no_delay"] = int((~usable).sum())
    ev = ev[usable]
    keys = ["trip_id", "stop_sequence"]
    grouped = ev.groupby(keys, sort=True)
    visits = grouped.agg(
        stop_id=("stop_id", "first"),
        start_date=("start_date", "first"),
        start_time=("start_time", "first"),
        sched_arr=("sched_arr", "median"),
        sched_dep=("sched_dep", "median"),
    )
    spread = [(grouped[c].max() - grouped[c].min()).dt.total_seconds().fillna(0.0)
              for c in ("sched_arr", "sched_dep")]  # fmt: skip
    bad = ((spread[0] > SPREAD_TOL_S) | (spread[1] > SPREAD_TOL_S)).to_numpy()
    dropped["inconsistent"] = int(bad.sum())
    visits = visits[~bad].reset_index()
    visits["sched_arr"] = visits["sched_arr"].fillna(visits["sched_dep"])
    visits["sched_dep"] = visits["sched_dep"].fillna(visits["sched_arr"])
    backwards = (visits["sched_dep"] < visits["sched_arr"]).to_numpy()
    dropped["departs_before_arrival"] = int(backwards.sum())
    return visits[~backwards].reset_index(drop=True)


def select_trip_shapes(trip_shapes: pd.DataFrame) -> pd.DataFrame:
    """One ``trip_id, shape_id`` row per trip: its most frequent non-null shape.

    Args:
        trip_shapes: ``trip_id, shape_id`` rows (several per trip allowed, nulls ignored).

    Returns:
        ``trip_id, shape_id`` (string), one row per trip with a shape.
    """
    pairs = trip_shapes[["trip_id", "shape_id"]].dropna().astype("string")
    counts = pairs.value_counts().rename("n").reset_index()
    counts = counts.sort_values(["trip_id", "n", "shape_id"], ascending=[True, False, True])
    return counts.drop_duplicates("trip_id")[["trip_id", "shape_id"]]


def locate_stops(
    visits: pd.DataFrame,
    stop_dist: pd.DataFrame,
    trip_shapes: pd.DataFrame,
    dropped: dict[str, int],
) -> pd.DataFrame:
    """Add ``dist_m``: each visit's stop along its trip's shape (see module docstring).

    Args:
        visits: :func:`compute_visits` rows (``trip_id, stop_sequence, stop_id, ...``).
        stop_dist: ``shape_id, pattern_id, stop_sequence, stop_id, dist_m``.
        trip_shapes: ``trip_id, shape_id``.
        dropped: Counts of dropped rows by reason, updated in place.

    Returns:
        ``visits`` rows on their shape, with ``shape_id``, ``pattern_id`` and ``dist_m``.
    """
    shaped = visits.merge(select_trip_shapes(trip_shapes), on="trip_id", how="left")
    dropped["no_shape"] = int(shaped["shape_id"].isna().sum())
    shaped = shaped.dropna(subset=["shape_id"]).assign(key=lambda d: strip_suffix(d["stop_id"]))
    sd = stop_dist.dropna(subset=["shape_id", "pattern_id", "dist_m"])
    sd = pd.DataFrame(
        {
            "shape_id": sd["shape_id"].astype("string"),
            "pattern_id": sd["pattern_id"].astype("string"),
            "key": strip_suffix(sd["stop_id"]),
            "pattern_seq": sd["stop_sequence"].astype("Float64"),
            "dist_m": sd["dist_m"].astype(np.float64),
        }
    )
    cand = shaped.reset_index(names="visit").merge(sd, on=["shape_id", "key"])
    hits = cand.drop_duplicates(["visit", "pattern_id"]).groupby(["trip_id", "pattern_id"]).size()
    best = hits.rename("n").reset_index().sort_values(
        ["trip_id", "n", "pattern_id"], ascending=[True, False, True]
    ).drop_duplicates("trip_id")  # fmt: skip
    cand = cand.merge(best[["trip_id", "pattern_id"]], on=["trip_id", "pattern_id"])
    gap = (cand["pattern_seq"] - cand["stop_sequence"].astype("Float64")).abs()
    cand = cand.assign(gap=gap.fillna(np.inf)).sort_values(["visit", "gap"], kind="stable")
    located = cand.drop_duplicates("visit").sort_values("visit")
    dropped["stop_not_on_shape"] = len(shaped) - len(located)
    return located.drop(columns=["visit", "key", "pattern_seq", "gap"]).reset_index(drop=True)


def compute_service_origins(visits: pd.DataFrame, timezone: str) -> pd.Series:
    """Per trip, the UTC instant of its service day's noon minus 12 h.

    Args:
        visits: ``trip_id, start_date, start_time, sched_arr`` rows.
        timezone: IANA zone of the service day.

    Returns:
        UTC instants indexed by ``trip_id``.
    """
    trips = visits.groupby("trip_id").agg(
        first=("sched_arr", "min"), start_date=("start_date", "first"),
        start_time=("start_time", "first"),
    )  # fmt: skip
    local = trips["first"].dt.tz_convert(timezone)
    guess = local.dt.tz_localize(None).dt.normalize()
    given = pd.to_datetime(trips["start_date"].astype("string"), format="%Y%m%d", errors="coerce")
    day = given.fillna(guess)
    noon = (day + pd.Timedelta(hours=12)).dt.tz_localize(timezone) - pd.Timedelta(hours=12)
    start = pd.to_timedelta(trips["start_time"].astype("string"), errors="coerce")
    since = trips["first"] - noon.dt.tz_convert("UTC")
    earlier = given.isna() & ((start - since) > pd.Timedelta(hours=12)).fillna(False)
    day = day.where(~earlier, day - pd.Timedelta(days=1))
    noon = (day + pd.Timedelta(hours=12)).dt.tz_localize(timezone) - pd.Timedelta(hours=12)
    result: pd.Series = noon.dt.tz_convert("UTC")
    return result


def drop_non_monotone(rows: pd.DataFrame, dropped: dict[str, int]) -> pd.DataFrame:
    """Keep stops that go forward along the shape and in scheduled time, in stop order.

    A stop is dropped when its distance is below the largest distance of the trip's
    earlier stops, or its arrival before the latest earlier departure (one pass, earlier
    stops first; a dropped stop does not raise the bar for later ones).

    Args:
        rows: ``trip_id, stop_sequence, dist_m, arrival_s, departure_s``.
        dropped: Counts of dropped rows by reason, updated in place.

    Returns:
        The kept rows, sorted by trip and stop sequence.
    """
    rows = rows.sort_values(["trip_id", "stop_sequence"], kind="stable").reset_index(drop=True)
    keep = np.ones(len(rows), dtype=bool)
    trip = rows["trip_id"].to_numpy(dtype=object)
    dist = rows["dist_m"].to_numpy(np.float64)
    arr, dep = rows["arrival_s"].to_numpy(np.float64), rows["departure_s"].to_numpy(np.float64)
    max_d = max_t = -np.inf
    for i in range(len(rows)):
        if i == 0 or trip[i] != trip[i - 1]:
            max_d = max_t = -np.inf
        if dist[i] < max_d or arr[i] < max_t:
            keep[i] = False
            continue
        max_d, max_t = dist[i], dep[i]
    dropped["non_monotone"] = int((~keep).sum())
    return rows[keep].reset_index(drop=True)


def build_stop_times_from_trip_updates(
    events: pd.DataFrame,
    artefacts: StaticArtefacts,
    trip_shapes: pd.DataFrame,
    timezone: str,
) -> pd.DataFrame:
    """Recover the realtime trips' scheduled stop times from TripUpdates stop events.

    Args:
        events: Stop events (:data:`transitnet.realtime.trip_updates.STOP_EVENT_COLUMNS`:
            ``trip_id, stop_id, stop_sequence, arrival_time, arrival_delay_s,
            departure_time, departure_delay_s, start_date, start_time``).
        artefacts: Static artefacts whose ``stop_dist`` (``shape_id, pattern_id,
            stop_sequence, stop_id, dist_m``) places stops along shapes.
        trip_shapes: ``trip_id, shape_id``: the shape each realtime trip is matched on
            (e.g. the windows' ``meta``; several rows per trip allowed, the most frequent
            shape is used).
        timezone: IANA time zone of the service day.

    Returns:
        :data:`STOP_TIME_COLUMNS` (as :attr:`StaticArtefacts.stop_times`): ``trip_id``
        (realtime id), ``stop_sequence`` (Int64), ``stop_index`` (0.. along the kept
        stops), ``stop_id`` (realtime id), ``arrival_s``, ``departure_s`` (seconds after
        service-day noon minus 12 h), ``dist_m``; ``attrs["dropped"]`` counts dropped
        rows by reason.

    Raises:
        ValueError: When ``events`` or ``trip_shapes`` lack a needed column.
    """
    _check_columns(events, _EVENT_COLUMNS, "events")
    _check_columns(trip_shapes, ("trip_id", "shape_id"), "trip_shapes")
    dropped: dict[str, int] = {}
    visits = compute_visits(events, dropped)
    located = locate_stops(visits, artefacts.stop_dist, trip_shapes, dropped)
    if located.empty:
        located = located.assign(arrival_s=np.float64(), departure_s=np.float64())
    else:
        origin = located["trip_id"].map(compute_service_origins(located, timezone))
        for kind, col in (("arr", "arrival_s"), ("dep", "departure_s")):
            located[col] = (located[f"sched_{kind}"] - origin).dt.total_seconds()
    kept = drop_non_monotone(located, dropped)
    out = pd.DataFrame({
        "trip_id": kept["trip_id"].astype("string"),
        "stop_sequence": kept["stop_sequence"].astype("Int64"),
        "stop_index": kept.groupby("trip_id").cumcount().to_numpy(np.int64),
        "stop_id": kept["stop_id"].astype("string"),
        **{c: kept[c].to_numpy(np.float64) for c in ("arrival_s", "departure_s", "dist_m")},
    })  # fmt: skip
    _log_recovery(out, visits, located, trip_shapes, artefacts.stop_dist, dropped)
    out.attrs["dropped"] = dropped
    return out


def build_timetable_from_trip_updates(
    events: pd.DataFrame,
    artefacts: StaticArtefacts,
    trip_shapes: pd.DataFrame,
    timezone: str,
) -> pd.DataFrame:
    """The recovered stop times with each trip's ``shape_id``: a timetable file's rows.

    Args:
        events: As :func:`build_stop_times_from_trip_updates`.
        artefacts: As :func:`build_stop_times_from_trip_updates`.
        trip_shapes: As :func:`build_stop_times_from_trip_updates`.
        timezone: As :func:`build_stop_times_from_trip_updates`.

    Returns:
        :data:`STOP_TIME_COLUMNS` plus ``shape_id`` (the trip's most frequent shape in
        ``trip_shapes``, which the stop distances are measured on): the rows of
        :func:`transitnet.gtfs.timetable.write_timetable`.
    """
    stop_times = build_stop_times_from_trip_updates(events, artefacts, trip_shapes, timezone)
    shapes = select_trip_shapes(trip_shapes).set_index("trip_id")["shape_id"]
    out = stop_times.assign(shape_id=stop_times["trip_id"].map(shapes).astype("string"))
    out.attrs["dropped"] = stop_times.attrs.get("dropped", {})
    return out


def _check_columns(frame: pd.DataFrame, needed: tuple[str, ...], name: str) -> None:
    missing = sorted(set(needed) - set(frame.columns))
    if missing:
        raise ValueError(f"{name} lacks columns {missing}")


def _log_recovery(
    out: pd.DataFrame,
    visits: pd.DataFrame,
    located: pd.DataFrame,
    trip_shapes: pd.DataFrame,
    stop_dist: pd.DataFrame,
    dropped: dict[str, int],
) -> None:
    """Log the share of trips with a timetable and of their pattern stops recovered."""
    n_trips = trip_shapes.dropna(subset=["shape_id"])["trip_id"].nunique()
    sizes = out.groupby("trip_id").size()
    usable = int((sizes >= 2).sum())
    per_pattern = stop_dist.groupby(stop_dist["pattern_id"].astype("string")).size()
    patterns = located.drop_duplicates("trip_id").set_index("trip_id")["pattern_id"]
    expected = float(patterns.reindex(sizes.index).map(per_pattern).astype("float64").sum())
    logger.info(
        "timetable from TripUpdates: %d of %d visits kept; %d of %d trips with a shape have "
        ">= 2 scheduled stops (%.1f%%), with %.1f%% of their patterns' stops; dropped %s",
        len(out), len(visits), usable, n_trips, 100 * usable / max(n_trips, 1),
        100 * len(out) / max(expected, 1.0), dropped,
    )  # fmt: skip
