"""Static side of the simulator: which trips run in a time window, on which geometry.

:func:`plan_trips` turns a ``gtfs_kit.Feed`` into :class:`TripPlan` objects: the
scheduled stop times as UTC epoch seconds (GTFS times count from noon minus 12 h of the
service date in the agency's time zone, so trips past 24:00 and DST days come out
right), each stop's distance along the trip's shape in metres, and the shape itself in a
metric CRS (UTM of the feed's centre).

Stop distances come from ``shape_dist_traveled`` when both shapes and stop_times carry it
(mapped onto the metric length, so its unit does not matter); otherwise stops are
projected onto the shape in order, each searched after the previous one, so loops and
out-and-back shapes stay right. A trip without a shape follows straight lines between its
stops.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyproj
import shapely

logger = logging.getLogger(__name__)


class StaticFeedError(ValueError):
    """A static GTFS feed the simulator cannot use (missing tables, no service...)."""


@dataclass
class TripPlan:
    """One scheduled trip, ready to simulate.

    Attributes:
        trip_id, route_id, direction_id, block_id: From trips.txt (direction/block may be None).
        service_date: The service date (local), ``YYYYMMDD``.
        start_time: First scheduled departure, ``HH:MM:SS`` (may exceed 24:00).
        stop_ids: Stops in order; ``stop_sequence`` their sequence numbers.
        arrival, departure: Scheduled times per stop, UTC epoch seconds.
        stop_dist: Distance of each stop along ``xy`` in metres (non-decreasing).
        xy: Shape vertices in metres (UTM), shape (n, 2); ``cum`` their distance along it.
    """

    trip_id: str
    route_id: str
    direction_id: int | None
    block_id: str | None
    service_date: str
    start_time: str
    stop_ids: list[str]
    stop_sequence: np.ndarray
    arrival: np.ndarray
    departure: np.ndarray
    stop_dist: np.ndarray
    xy: np.ndarray
    cum: np.ndarray


def check_feed(feed: Any) -> None:
    """Raise :class:`StaticFeedError` unless the tables the simulator needs were read."""
    for name in ("agency", "routes", "trips", "stops", "stop_times"):
        table = getattr(feed, name, None)
        if table is None or len(table) == 0:
            raise StaticFeedError(f"the static feed has no {name}.txt rows (or it was not read)")
    if (getattr(feed, "calendar", None) is None or feed.calendar.empty) and (
        getattr(feed, "calendar_dates", None) is None or feed.calendar_dates.empty
    ):
        raise StaticFeedError("the static feed has neither calendar.txt nor calendar_dates.txt")


def read_timezone(feed: Any) -> ZoneInfo:
    """The agency time zone (first agency), UTC when absent."""
    tz = feed.agency["agency_timezone"].dropna()
    if tz.empty:
        logger.warning("agency_timezone missing: schedule times read as UTC")
        return ZoneInfo("UTC")
    return ZoneInfo(str(tz.iloc[0]))


def service_day_origin(day: date, tz: ZoneInfo) -> float:
    """Epoch seconds of 'noon minus 12 h' of ``day`` in ``tz`` (GTFS time zero)."""
    noon = datetime.combine(day, time(12), tz)
    return (noon - timedelta(hours=12)).astimezone(UTC).timestamp()


def metric_transformer(feed: Any) -> pyproj.Transformer:
    """WGS84 → UTM transformer for the zone of the feed's stop centroid."""
    lat = float(pd.to_numeric(feed.stops["stop_lat"], errors="coerce").median())
    lon = float(pd.to_numeric(feed.stops["stop_lon"], errors="coerce").median())
    zone = int((lon + 180) // 6) + 1
    epsg = (32600 if lat >= 0 else 32700) + zone
    return pyproj.Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)


def plan_trips(feed: Any, start: datetime, end: datetime) -> list[TripPlan]:
    """Every trip running between ``start`` and ``end`` (tz-aware), in start order.

    Raises:
        StaticFeedError: when the feed lacks tables or no trip runs in the window.
    """
    check_feed(feed)
    tz = read_timezone(feed)
    to_metric = metric_transformer(feed)
    first_day = start.astimezone(tz).date() - timedelta(days=1)
    plans: list[TripPlan] = []
    for offset in range((end.astimezone(tz).date() - first_day).days + 1):
        day = first_day + timedelta(days=offset)
        plans.extend(_plan_day(feed, day, tz, to_metric, start.timestamp(), end.timestamp()))
    if not plans:
        raise StaticFeedError(f"no trip of the static feed runs between {start.isoformat()} and "
                              f"{end.isoformat()} (check the feed's calendar dates)")  # fmt: skip
    plans.sort(key=lambda p: (float(p.departure[0]), p.trip_id))
    return plans


def _plan_day(feed: Any, day: date, tz: ZoneInfo, to_metric: pyproj.Transformer,
              t0: float, t1: float) -> list[TripPlan]:  # fmt: skip
    trips = feed.get_trips(day.strftime("%Y%m%d"))
    if trips is None or trips.empty:
        return []
    origin = service_day_origin(day, tz)
    stop_times = feed.stop_times[feed.stop_times["trip_id"].isin(trips["trip_id"])]
    spans = (
        stop_times.assign(
            s=_seconds(stop_times["departure_time"]).fillna(_seconds(stop_times["arrival_time"]))
        )
        .groupby("trip_id")["s"]
        .agg(["min", "max"])
    )
    running = spans[(spans["min"] + origin <= t1 + 600) & (spans["max"] + origin >= t0 - 600)]
    times = _read_stop_times(stop_times[stop_times["trip_id"].isin(running.index)])
    by_trip = dict(tuple(times.groupby("trip_id", sort=False)))
    plans = []
    for trip in trips[trips["trip_id"].isin(running.index)].itertuples(index=False):
        rows = by_trip.get(trip.trip_id)
        if rows is None:
            continue
        plan = _plan_trip(feed, trip, rows, day, origin, to_metric)
        if plan is not None:
            plans.append(plan)
    return plans


def _read_stop_times(stop_times: pd.DataFrame) -> pd.DataFrame:
    """Stop times with ``arrival_s``/``departure_s`` (seconds after GTFS time zero).

    Columns in: ``trip_id, arrival_time, departure_time, stop_id, stop_sequence`` and
    optionally ``shape_dist_traveled``. Blank times (non-timepoints) are interpolated by
    stop order within the trip.
    """
    out = stop_times.sort_values(["trip_id", "stop_sequence"]).copy()
    arrival = _seconds(out["arrival_time"])
    departure = _seconds(out["departure_time"])
    out["arrival_s"] = arrival.fillna(departure)
    out["departure_s"] = departure.fillna(arrival)
    for column in ("arrival_s", "departure_s"):
        if out[column].isna().any():
            out[column] = out.groupby("trip_id")[column].transform(
                lambda s: s.interpolate(limit_area="inside")
            )
    return out.dropna(subset=["arrival_s", "departure_s"])


def _seconds(values: pd.Series) -> pd.Series:
    parts = values.astype("string").str.strip().str.split(":", expand=True)
    if parts.shape[1] < 3:
        return pd.Series(np.nan, index=values.index)
    numbers = parts.iloc[:, :3].apply(pd.to_numeric, errors="coerce")
    result: pd.Series = numbers[0] * 3600 + numbers[1] * 60 + numbers[2]
    return result.astype(float)


def _plan_trip(feed: Any, trip: Any, rows: pd.DataFrame, day: date, origin: float,
               to_metric: pyproj.Transformer) -> TripPlan | None:  # fmt: skip
    if len(rows) < 2:
        return None
    stops = feed.stops.set_index("stop_id").loc[rows["stop_id"]]
    sx, sy = to_metric.transform(
        stops["stop_lon"].to_numpy(float), stops["stop_lat"].to_numpy(float)
    )
    stop_xy = np.column_stack([sx, sy])
    xy, cum, shape_sdt = _shape_geometry(feed, getattr(trip, "shape_id", None), to_metric)
    if xy is None:
        xy = stop_xy
        cum = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])
    dist = _stop_distances(rows, stop_xy, xy, cum, shape_sdt)
    first_departure = float(rows["departure_s"].iloc[0])
    return TripPlan(
        trip_id=str(trip.trip_id), route_id=str(trip.route_id),
        direction_id=_optional_int(getattr(trip, "direction_id", None)),
        block_id=_optional_str(getattr(trip, "block_id", None)),
        service_date=day.strftime("%Y%m%d"), start_time=_hms(first_departure),
        stop_ids=[str(s) for s in rows["stop_id"]],
        stop_sequence=rows["stop_sequence"].to_numpy(np.int64),
        arrival=rows["arrival_s"].to_numpy(float) + origin,
        departure=rows["departure_s"].to_numpy(float) + origin,
        stop_dist=dist, xy=xy, cum=cum,
    )  # fmt: skip


def _shape_geometry(
    feed: Any, shape_id: Any, to_metric: pyproj.Transformer
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    shapes = getattr(feed, "shapes", None)
    if shapes is None or shape_id is None or pd.isna(shape_id):
        return None, np.zeros(0), None
    pts = shapes[shapes["shape_id"] == shape_id].sort_values("shape_pt_sequence")
    if len(pts) < 2:
        return None, np.zeros(0), None
    x, y = to_metric.transform(
        pts["shape_pt_lon"].to_numpy(float), pts["shape_pt_lat"].to_numpy(float)
    )
    xy = np.column_stack([x, y])
    cum = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])
    sdt = None
    if "shape_dist_traveled" in pts and pts["shape_dist_traveled"].notna().all():
        candidate = pts["shape_dist_traveled"].to_numpy(float)
        sdt = candidate if np.all(np.diff(candidate) >= 0) and candidate[-1] > 0 else None
    return xy, cum, sdt


def _stop_distances(rows: pd.DataFrame, stop_xy: np.ndarray, xy: np.ndarray, cum: np.ndarray,
                    shape_sdt: np.ndarray | None) -> np.ndarray:  # fmt: skip
    column = rows.get("shape_dist_traveled")
    if shape_sdt is not None and column is not None and column.notna().all():
        return np.maximum.accumulate(np.interp(column.to_numpy(float), shape_sdt, cum))
    line = shapely.LineString(xy)
    dist = np.zeros(len(stop_xy))
    previous = 0.0
    for k, (x, y) in enumerate(stop_xy):
        rest = shapely.ops.substring(line, previous, float(cum[-1]))
        found = previous + float(shapely.line_locate_point(rest, shapely.Point(x, y)))
        dist[k] = previous = found
    return dist


def _optional_int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _optional_str(value: Any) -> str | None:
    return None if value is None or pd.isna(value) else str(value)


def _hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
