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
"""

from __future__ import annotations

import hashlib
import json
import logging
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from transitnet.gtfs.artefacts import StaticArtefacts, load_or_build_artefacts
from transitnet.gtfs.project import (
    ShapeGeometry,
    build_shape_geometry,
    find_candidates,
    project_whole_shapes,
)
from transitnet.gtfs.resolve import DEFAULT_FALLBACKS, resolve_trip_shapes
from transitnet.gtfs.shapes import project_lonlat, valid_lonlat
from transitnet.gtfs.trajectory import (
    DwellConfig,
    ScheduleIndex,
    StopIndex,
    TrajectoryPoints,
    WindowConfig,
    build_schedule_index,
    build_stop_index,
    choose_service_dates,
    compute_along_speed,
    compute_day_origins,
    compute_headings,
    compute_scheduled_s,
    detect_dwells,
    select_candidates,
)
from transitnet.store.layout import POSITIONS_DIR, list_partitions
from transitnet.store.parquet import list_visible_parts, read_positions, write_parquet_atomic

logger = logging.getLogger(__name__)

#: Every ``match_status`` value. ``fallback_<how>`` repeats the resolve step used.
MATCH_STATUSES: tuple[str, ...] = (
    "ok",
    "off_shape",
    "no_shape",
    "trip_not_in_static",
    "invalid_position",
    "fallback_suffix",
    "fallback_headsign",
    "fallback_variant",
    "fallback_route",
    "fallback_stops",
)
#: Columns :func:`match_positions` adds (besides the resolve columns it also keeps:
#: ``direction_id, resolve_status, resolve_via, static_trip_id``).
MATCH_COLUMNS: tuple[str, ...] = (
    "shape_id",
    "line_key",
    "static_version",
    "dist_along_m",
    "offset_m",
    "progress",
    "match_status",
    "speed_along_mps",
    "is_stale",
    "is_dwell",
    "is_reacquired",
    "scheduled_s",
    "delay_s",
    "service_date",
    "trajectory_id",
)
_TIME_COLUMNS = ("vehicle_timestamp", "header_timestamp", "fetched_at")
_VEHICLE_COLUMNS = ("vehicle_id", "vehicle_label", "entity_id")


@dataclass(frozen=True)
class MatchConfig:
    """Settings of :func:`match_positions` (defaults suit buses and trams).

    Attributes:
        off_shape_m: Fixes farther than this from every point of their shape are
            ``off_shape`` (validator rule E029) and never steer the trajectory.
        simplify_m: Candidates are searched on shapes simplified within this (metres),
            then measured on the exact shapes (0: search the exact shapes).
        window: How far a vehicle may move between fixes and how candidates are scored.
        dwell: When a still vehicle near a stop counts as dwelling.
        max_candidates: Candidate legs kept per fix (the closest, when more).
        trajectory_gap_s: A longer silence splits a vehicle's trip into two trajectories.
        speed_min_dt_s: Along-route speed is measured over at least this many seconds.
        timezone: IANA zone for service dates and delays; None takes ``art.timezone``
            (agency.txt). Without either, delays are not computed and service dates are
            UTC dates.
        fallbacks: Resolve fallbacks to allow (see :mod:`transitnet.gtfs.resolve`).
    """

    off_shape_m: float = 200.0
    simplify_m: float = 1.0
    window: WindowConfig = field(default_factory=WindowConfig)
    dwell: DwellConfig = field(default_factory=DwellConfig)
    max_candidates: int = 8
    trajectory_gap_s: float = 3 * 3600.0
    speed_min_dt_s: float = 15.0
    timezone: str | None = None
    fallbacks: tuple[str, ...] = DEFAULT_FALLBACKS


@dataclass(frozen=True)
class MatchIndex:
    """Everything matching needs from one static version, built once and reused.

    Attributes:
        art: The static artefacts.
        geometry: Exact and simplified shapes with the candidate grid.
        stops: Stop distances per shape (dwell detection).
        schedule: Scheduled times by distance per trip, or None without stop_times.
        timezone: The feed's IANA time zone, or None when unknown.
    """

    art: StaticArtefacts
    geometry: ShapeGeometry
    stops: StopIndex
    schedule: ScheduleIndex | None
    timezone: str | None


def build_match_index(art: StaticArtefacts, config: MatchConfig = MatchConfig()) -> MatchIndex:
    """Build the :class:`MatchIndex` of ``art`` (about 0.1 s for 310 Austin shapes).

    Args:
        art: Static artefacts; uses ``shapes``, ``stop_dist`` (``shape_id, dist_m``) and
            ``stop_times`` (``trip_id, stop_index, arrival_s, departure_s, dist_m``).
        config: Uses ``off_shape_m`` (grid radius), ``simplify_m`` and ``timezone``.
    """
    table = art.shapes
    geometry = build_shape_geometry(
        table.offsets, table.x, table.y, table.cum_m,
        radius_m=config.off_shape_m, tol_m=config.simplify_m,
    )  # fmt: skip
    stop_shape = table.index_of(art.stop_dist["shape_id"])
    stop_dist = art.stop_dist["dist_m"].to_numpy(dtype=np.float64, na_value=np.nan)
    stops = build_stop_index(stop_shape, stop_dist, len(table))
    schedule = None
    st = art.stop_times
    if st is not None and len(st):
        st = st.sort_values(["trip_id", "stop_index"], kind="stable")
        schedule = build_schedule_index(
            st["trip_id"].to_numpy(dtype=object),
            *(st[c].to_numpy(dtype=np.float64, na_value=np.nan)
              for c in ("dist_m", "arrival_s", "departure_s")),
        )  # fmt: skip
    zone = _check_zone(config.timezone or art.timezone)
    return MatchIndex(art, geometry, stops, schedule, zone)


def _check_zone(zone: str | None) -> str | None:
    """Return ``zone`` when it is an IANA time zone, else None (with a warning)."""
    if zone is None:
        logger.info("no time zone: service dates are UTC dates and delays are not computed")
        return None
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        logger.warning("time zone %r is not an IANA zone: delays are not computed", zone)
        return None
    return zone


def match_positions(
    positions: pd.DataFrame,
    art: StaticArtefacts,
    *,
    config: MatchConfig = MatchConfig(),
    index: MatchIndex | None = None,
) -> pd.DataFrame:
    """Place every position on its route.

    Args:
        positions: Decoded positions. Needs ``latitude, longitude`` and ``trip_id`` or
            ``route_id``; uses when present ``vehicle_timestamp`` (tz-aware UTC; else
            ``header_timestamp``, then ``fetched_at``), ``vehicle_id`` (else
            ``vehicle_label``, ``entity_id``), ``feed_id``, ``start_date`` (YYYYMMDD),
            ``bearing``, ``trip_headsign``, ``direction_id``.
        art: Static artefacts of the feed.
        config: Matching settings.
        index: A prebuilt :func:`build_match_index` of ``art`` (to reuse across calls).

    Returns:
        The input rows (same index and order) plus ``direction_id, resolve_status,
        resolve_via, static_trip_id`` from resolution and :data:`MATCH_COLUMNS`:
        ``dist_along_m`` and ``offset_m`` (metres; NaN for invalid or unresolved rows),
        ``progress`` (share of the shape length), ``match_status`` (one of
        :data:`MATCH_STATUSES`), ``speed_along_mps`` (since the previous usable fix),
        ``is_stale`` (same coordinates and time as the previous fix), ``is_dwell``
        (nullable: NA where the shape has no stop positions), ``is_reacquired`` (placed
        outside its window: a jump after a gap or a restart), ``scheduled_s`` and
        ``delay_s`` (seconds; where the trip has stop_times and the time zone is known),
        ``service_date`` (YYYY-MM-DD) and ``trajectory_id``.

    Raises:
        ValueError: When required columns are missing or timestamps are not tz-aware.
    """
    _check_columns(positions)
    index = index if index is not None else build_match_index(art, config)
    frame = resolve_trip_shapes(positions, art, fallbacks=config.fallbacks)
    rows = _RowArrays.from_frame(frame, index)
    order, traj = _order_trajectories(frame, rows, config.trajectory_gap_s)
    result = _match_rows(rows, order, traj, index, config)
    return _assemble(frame, rows, result, order, traj, index)


def _check_columns(positions: pd.DataFrame) -> None:
    missing = [c for c in ("latitude", "longitude") if c not in positions.columns]
    if not ({"trip_id", "route_id"} & set(positions.columns)):
        missing.append("trip_id or route_id")
    if missing:
        raise ValueError(f"positions lack column(s) needed to match: {', '.join(missing)}")
    for column in _TIME_COLUMNS:
        if column in positions.columns:
            dtype = positions[column].dtype
            if not isinstance(dtype, pd.DatetimeTZDtype):
                raise ValueError(f"{column} must be tz-aware UTC datetimes, not {dtype}")


@dataclass(frozen=True)
class _RowArrays:
    """Per-row numpy views of the resolved positions, in input order."""

    x: np.ndarray
    y: np.ndarray
    valid: np.ndarray
    shape_idx: np.ndarray
    t_s: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    bearing: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, index: MatchIndex) -> _RowArrays:
        lat = _floats(frame, "latitude")
        lon = _floats(frame, "longitude")
        valid = valid_lonlat(lon, lat)
        x, y = np.full(len(frame), np.nan), np.full(len(frame), np.nan)
        if valid.any():
            x[valid], y[valid] = project_lonlat(index.art.shapes.crs, lon[valid], lat[valid])
        valid &= np.isfinite(x) & np.isfinite(y)
        shape_idx = index.art.shapes.index_of(frame["shape_id"])
        return cls(x, y, valid, shape_idx, _seconds(frame), lat, lon, _floats(frame, "bearing"))


def _floats(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    values = pd.to_numeric(frame[column], errors="coerce")
    return np.asarray(values.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


def _seconds(frame: pd.DataFrame) -> np.ndarray:
    """Seconds since the epoch of the first time column set per row (NaN: none)."""
    out = np.full(len(frame), np.nan)
    epoch = pd.Timestamp(0, tz="UTC")
    for column in _TIME_COLUMNS:
        if column in frame.columns:
            secs = ((frame[column] - epoch) / pd.Timedelta(seconds=1)).to_numpy(
                dtype=np.float64, na_value=np.nan
            )
            out = np.where(np.isnan(out), secs, out)
    return out


def _codes(frame: pd.DataFrame, *columns: str) -> np.ndarray:
    """Factorised codes of the first column set per row (-1 where none)."""
    values: pd.Series | None = None
    for column in columns:
        if column in frame.columns:
            col = frame[column].astype("string")
            values = col if values is None else values.fillna(col)
    if values is None:
        return np.full(len(frame), -1, dtype=np.int64)
    return np.asarray(pd.factorize(values, use_na_sentinel=True)[0], dtype=np.int64)


def _order_trajectories(
    frame: pd.DataFrame, rows: _RowArrays, gap_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return the row order (trajectory, then time) and each sorted row's trajectory number.

    Rows without any vehicle id each form their own trajectory.
    """
    vehicle = _codes(frame, *_VEHICLE_COLUMNS)
    lone = vehicle < 0
    vehicle[lone] = vehicle.max(initial=-1) + 1 + np.arange(int(lone.sum()))
    keys = [
        _codes(frame, "feed_id"),
        vehicle,
        _codes(frame, "start_date"),
        _codes(frame, "trip_id"),
        _codes(frame, "route_id"),
        rows.shape_idx,
    ]
    t = np.where(np.isnan(rows.t_s), np.inf, rows.t_s)
    order = np.lexsort([t, *keys[::-1]])
    new = np.zeros(len(order), dtype=bool)
    new[:1] = True
    for key in keys:
        k = key[order]
        new[1:] |= k[1:] != k[:-1]
    ts = rows.t_s[order]
    new[1:] |= ~(ts[1:] - ts[:-1] <= gap_s) & np.isfinite(ts[1:])
    return order, np.cumsum(new) - 1


@dataclass(frozen=True)
class _Result:
    """Matching results, aligned with the input rows."""

    dist: np.ndarray
    offset: np.ndarray
    found: np.ndarray
    reacquired: np.ndarray
    stale: np.ndarray
    speed: np.ndarray
    dwell: np.ndarray
    dwell_known: np.ndarray


def _match_rows(
    rows: _RowArrays, order: np.ndarray, traj: np.ndarray, index: MatchIndex, cfg: MatchConfig
) -> _Result:
    """Match the rows that have a valid position and a shape, trajectory by trajectory."""
    sub = np.flatnonzero((rows.valid & (rows.shape_idx >= 0))[order])
    src, tr = order[sub], traj[sub]
    starts = np.flatnonzero(np.diff(tr, prepend=-1) != 0)
    lengths = np.diff(np.append(starts, len(sub)))
    px, py, shape_idx, t_s = rows.x[src], rows.y[src], rows.shape_idx[src], rows.t_s[src]
    hx, hy = compute_headings(rows.bearing[src])
    cands = find_candidates(index.geometry, px, py, shape_idx, max_candidates=cfg.max_candidates)
    picked = select_candidates(cands, TrajectoryPoints(t_s, hx, hy, starts, lengths), cfg.window)
    found = np.isfinite(picked.dist_m)
    dist, offset = picked.dist_m.copy(), picked.offset_m.copy()
    if (~found).any():
        miss = ~found
        dist[miss], offset[miss] = project_whole_shapes(index.geometry, px[miss], py[miss],
                                                        shape_idx[miss])  # fmt: skip
    stale = _unsort(order, _find_stale(rows, order, traj))
    speed = compute_along_speed(dist, t_s, found & ~stale[src], picked.reacquired, tr,
                                min_dt_s=cfg.speed_min_dt_s)  # fmt: skip
    dwell, known = detect_dwells(dist, t_s, found, tr, shape_idx, index.stops, cfg.dwell)
    n = len(order)
    out = _Result(np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, bool), np.zeros(n, bool),
                  stale, np.full(n, np.nan), np.zeros(n, bool), np.zeros(n, bool))  # fmt: skip
    for name, values in (("dist", dist), ("offset", offset), ("found", found),
                         ("reacquired", picked.reacquired), ("speed", speed),
                         ("dwell", dwell), ("dwell_known", known)):  # fmt: skip
        getattr(out, name)[src] = values
    return out


def _find_stale(rows: _RowArrays, order: np.ndarray, traj: np.ndarray) -> np.ndarray:
    """True (sorted order) where a fix repeats the previous one's time and coordinates."""
    same = traj[1:] == traj[:-1]
    for values in (rows.t_s, rows.lat, rows.lon):
        v = values[order]
        same &= v[1:] == v[:-1]
    return np.concatenate([[False], same]) if len(order) else np.zeros(0, dtype=bool)


def _unsort(order: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Put values given in ``order`` back into input order."""
    out = np.empty_like(values)
    out[order] = values
    return out


def _status(frame: pd.DataFrame, rows: _RowArrays, found: np.ndarray) -> np.ndarray:
    """The ``match_status`` of every row (see :data:`MATCH_STATUSES`)."""
    resolve = frame["resolve_status"].astype(object).fillna("trip_not_in_static").to_numpy()
    unresolved = np.isin(resolve, ("trip_not_in_static", "no_shape"))
    return np.asarray(np.select(
        [~rows.valid, unresolved, rows.shape_idx < 0, ~found],
        ["invalid_position", resolve, "no_shape", "off_shape"],
        default=resolve,
    ), dtype=object)  # fmt: skip


def _assemble(
    frame: pd.DataFrame,
    rows: _RowArrays,
    result: _Result,
    order: np.ndarray,
    traj: np.ndarray,
    index: MatchIndex,
) -> pd.DataFrame:
    """Return ``frame`` plus :data:`MATCH_COLUMNS`, in input order."""
    lengths = index.art.shapes.length_m()
    shape_len = np.where(rows.shape_idx >= 0, lengths[np.maximum(rows.shape_idx, 0)], np.nan)
    sched = _scheduled_times(frame, result, index)
    dates, delay, traj_ids = compute_service_days(frame, rows.t_s, order, traj, sched, index)
    status = _status(frame, rows, result.found)
    dwell = result.dwell.astype(object)
    dwell[~result.dwell_known] = None
    return frame.assign(
        dist_along_m=result.dist,
        offset_m=result.offset,
        progress=np.clip(result.dist / np.where(shape_len > 0, shape_len, np.nan), 0.0, 1.0),
        match_status=pd.array(status, dtype="string"),
        speed_along_mps=result.speed,
        is_stale=result.stale,
        is_dwell=pd.array(dwell, dtype="boolean"),
        is_reacquired=result.reacquired,
        scheduled_s=sched,
        delay_s=delay,
        service_date=pd.array(dates, dtype="string"),
        trajectory_id=pd.array(traj_ids, dtype="string"),
    )


def compute_service_days(
    frame: pd.DataFrame,
    t_s: np.ndarray,
    order: np.ndarray,
    traj: np.ndarray,
    sched: np.ndarray,
    index: MatchIndex,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Service date, delay and trajectory id of every row.

    Args:
        frame: Resolved positions (uses ``start_date``, ``feed_id``, vehicle and trip ids).
        t_s: (N,) epoch seconds per row (input order).
        order: Row order by trajectory then time.
        traj: (N,) trajectory number of each sorted row.
        sched: (N,) scheduled seconds per row (input order, NaN without schedule).
        index: Gives the time zone.

    Returns:
        ``(service_date, delay_s, trajectory_id)`` per row in input order; delays are
        NaN without a schedule or without a known time zone.
    """
    first = order[np.flatnonzero(np.diff(traj, prepend=-1) != 0)]
    sorted_sched = np.isfinite(sched[order])
    with_sched = np.full(len(first), -1)
    tr_s = traj[sorted_sched]
    uniq, pos = np.unique(tr_s, return_index=True)
    with_sched[uniq] = order[np.flatnonzero(sorted_sched)[pos]]
    has = with_sched >= 0
    pick = np.where(has, with_sched, 0)
    start = _start_dates(frame, first)
    dates_t = choose_service_dates(
        t_s[first], start, np.where(has, t_s[pick], np.nan), np.where(has, sched[pick], np.nan),
        index.timezone,
    )  # fmt: skip
    row_traj = _unsort(order, traj)
    dates = dates_t[row_traj]
    delay = np.full(len(t_s), np.nan)
    if index.timezone:
        delay = t_s - compute_day_origins(dates, index.timezone) - sched
    return dates, delay, _trajectory_ids(frame, first, dates_t)[row_traj]


def _start_dates(frame: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """``YYYY-MM-DD`` from the feed's ``start_date`` (YYYYMMDD) at ``rows``, else None."""
    if "start_date" not in frame.columns:
        return np.full(len(rows), None, dtype=object)
    raw = frame["start_date"].iloc[rows].astype("string").str.strip()
    parsed = pd.to_datetime(raw, format="%Y%m%d", errors="coerce").dt.strftime("%Y-%m-%d")
    return np.asarray(parsed.astype(object).where(parsed.notna(), None).to_numpy(), dtype=object)


def _trajectory_ids(frame: pd.DataFrame, first: np.ndarray, dates: np.ndarray) -> np.ndarray:
    """``[<feed>/]<vehicle>/<trip_id or route:<route_id>>/<service date>[#k]`` per trajectory."""
    head = frame.iloc[first]

    def text(*columns: str) -> pd.Series:
        out = pd.Series(pd.NA, index=head.index, dtype="string")
        for c in columns:
            if c in head.columns:
                out = out.fillna(head[c].astype("string"))
        return out

    route = "route:" + text("route_id").fillna("?")
    parts = [text(*_VEHICLE_COLUMNS).fillna("?"), text("trip_id").fillna(route),
             pd.Series(dates, index=head.index, dtype="string").fillna("?")]  # fmt: skip
    if "feed_id" in head.columns:
        parts.insert(0, text("feed_id").fillna("?"))
    ids = parts[0]
    for part in parts[1:]:
        ids = ids + "/" + part
    repeat = ids.groupby(ids).cumcount()
    ids = ids.where(repeat == 0, ids + "#" + (repeat + 1).astype("string"))
    return np.asarray(ids.to_numpy(dtype=object), dtype=object)


def _scheduled_times(frame: pd.DataFrame, result: _Result, index: MatchIndex) -> np.ndarray:
    """Scheduled time at each matched row's distance (NaN without a schedule)."""
    if index.schedule is None or "static_trip_id" not in frame.columns:
        return np.full(len(frame), np.nan)
    trips = pd.Index(index.schedule.trip_ids)
    code = trips.get_indexer(frame["static_trip_id"].astype(object).to_numpy())
    code = np.where(result.found, code, -1)
    return compute_scheduled_s(index.schedule, code, result.dist)


#: Folder of the matched table under a store (hive-partitioned like ``positions/``).
MATCHED_DIR = "matched"
#: The one file of a matched partition, replaced atomically on every re-match.
MATCHED_PART = "part-matched.parquet"
#: Parquet metadata key holding what a matched file was made from.
SOURCE_KEY = b"transitnet.match_source"


def match_store(
    store: Path,
    static_path: str | Path,
    *,
    feed_id: str | None = None,
    dates: Iterable[date | str] | None = None,
    config: MatchConfig = MatchConfig(),
    force: bool = False,
    context_s: float = 3 * 3600.0,
) -> list[Path]:
    """Match every ``positions/feed=<id>/date=<day>/`` partition of a store.

    Static artefacts are cached under ``store/static/<version>/``. Each partition is
    written to ``store/matched/feed=<id>/date=<day>/part-matched.parquet`` atomically;
    a partition whose positions, static version and settings are unchanged since its last
    match is skipped unless ``force``. The last ``context_s`` seconds of the previous day
    are matched along (not written) so trajectories crossing UTC midnight keep their leg.

    Args:
        store: Store root.
        static_path: Static GTFS zip, folder or URL.
        feed_id: Only this feed (None: every feed).
        dates: Only these partition days (``date`` or ``YYYY-MM-DD``; None: all).
        config: Matching settings.
        force: Re-match partitions even when unchanged.
        context_s: Seconds of the previous day read as context.

    Returns:
        The matched files written (skipped partitions are not listed).

    Raises:
        transitnet.gtfs.feeds.StaticFeedError: When the static feed cannot be read.
    """
    store = Path(store)
    art = load_or_build_artefacts(static_path, store)
    index = build_match_index(art, config)
    wanted = {d if isinstance(d, str) else d.isoformat() for d in dates} if dates else None
    partitions = [(feed, day, folder) for feed, day, folder in list_partitions(store, POSITIONS_DIR)
                  if (feed_id is None or feed == feed_id)
                  and (wanted is None or day.isoformat() in wanted)]  # fmt: skip
    if not partitions:
        logger.warning("no positions partitions in %s match feed=%s dates=%s", store, feed_id,
                       sorted(wanted) if wanted else "all")  # fmt: skip
    written = []
    for feed, day, folder in tqdm(partitions, desc="match", unit="partition", disable=None):
        source = _source_signature(folder, art.version, config)
        target = store / MATCHED_DIR / f"feed={feed}" / f"date={day.isoformat()}" / MATCHED_PART
        if not force and _stored_signature(target) == source:
            logger.info("matched %s/%s is up to date; skipped", feed, day)
            continue
        table = _match_partition(store, feed, day, index, config, context_s)
        write_parquet_atomic(target, table, {SOURCE_KEY: source.encode()})
        written.append(target)
    return written


def _match_partition(
    store: Path, feed: str, day: date, index: MatchIndex, config: MatchConfig, context_s: float
) -> pa.Table:
    """Match one day of one feed, with the end of the previous day as context."""
    rows = read_positions(store, [feed], [day])
    before = read_positions(store, [feed], [day - timedelta(days=1)])
    start = pd.Timestamp(day, tz="UTC") - pd.Timedelta(seconds=context_s)
    when = before["vehicle_timestamp"].fillna(before["fetched_at"])
    before = before[(when >= start).fillna(False).to_numpy(dtype=bool)]
    both = pd.concat([before, rows], ignore_index=True)
    matched = match_positions(both, index.art, config=config, index=index)
    out = matched.iloc[len(before) :].reset_index(drop=True)
    counts = out["match_status"].value_counts().to_dict()
    logger.info("matched %s/%s: %d rows %s", feed, day, len(out), counts)
    return pa.Table.from_pandas(out, preserve_index=False)


def _source_signature(folder: Path, version: str, config: MatchConfig) -> str:
    """What a matched partition depends on: its part files, the static version, settings."""
    parts = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in list_visible_parts(folder)]
    text = json.dumps({"parts": parts, "static": version, "config": repr(config)})
    return hashlib.sha256(text.encode()).hexdigest()


def _stored_signature(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    raw = meta.get(SOURCE_KEY)
    return raw.decode() if raw else None
