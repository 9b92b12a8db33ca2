"""Map matching of a table of positions: :func:`match_positions`.

Takes decoded positions (columns of :data:`transitnet.schema.POSITION_COLUMNS`) and static
artefacts, and returns the same rows with :data:`MATCH_COLUMNS` added (the steps are
listed in :mod:`transitnet.gtfs.match`). Rows are handled as numpy arrays: resolved, put
in trajectory order, matched trajectory by trajectory, then put back in input order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from transitnet.gtfs.artefacts import StaticArtefacts
from transitnet.gtfs.match_index import MatchConfig, MatchIndex, build_match_index
from transitnet.gtfs.project import find_candidates, project_whole_shapes
from transitnet.gtfs.resolve import RESOLVE_STATUSES, resolve_trip_shapes
from transitnet.gtfs.service_days import (
    VEHICLE_COLUMNS,
    build_trajectory_ids,
    choose_service_dates,
    compute_day_origins,
    compute_scheduled_s,
    read_start_dates,
)
from transitnet.gtfs.shapes import project_lonlat, valid_lonlat
from transitnet.gtfs.trajectory import (
    TrajectoryPoints,
    compute_along_speed,
    compute_headings,
    detect_dwells,
    select_candidates,
)

#: Every ``match_status`` value. ``fallback_<how>`` repeats the resolve step used.
MATCH_STATUSES: tuple[str, ...] = (
    "ok",
    "off_shape",
    "no_shape",
    "trip_not_in_static",
    "invalid_position",
    *(status for status in RESOLVE_STATUSES if status.startswith("fallback_")),
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


def match_positions(
    positions: pd.DataFrame,
    art: StaticArtefacts,
    *,
    config: MatchConfig = MatchConfig(),  # noqa: B008 - a frozen dataclass
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
    vehicle = _codes(frame, *VEHICLE_COLUMNS)
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
    start = read_start_dates(frame, first)
    dates_t = choose_service_dates(
        t_s[first], start, np.where(has, t_s[pick], np.nan), np.where(has, sched[pick], np.nan),
        index.timezone,
    )  # fmt: skip
    row_traj = _unsort(order, traj)
    dates = dates_t[row_traj]
    delay = np.full(len(t_s), np.nan)
    if index.timezone:
        delay = t_s - compute_day_origins(dates, index.timezone) - sched
    return dates, delay, build_trajectory_ids(frame, first, dates_t)[row_traj]


def _scheduled_times(frame: pd.DataFrame, result: _Result, index: MatchIndex) -> np.ndarray:
    """Scheduled time at each matched row's distance (NaN without a schedule)."""
    if index.schedule is None or "static_trip_id" not in frame.columns:
        return np.full(len(frame), np.nan)
    trips = pd.Index(index.schedule.trip_ids)
    code = trips.get_indexer(frame["static_trip_id"].astype(object).to_numpy())
    code = np.where(result.found, code, -1)
    return compute_scheduled_s(index.schedule, code, result.dist)
