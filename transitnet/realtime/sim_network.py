"""A small fictional transit network, built in code and written as a real GTFS zip.

``transitnet simulate`` runs on it when no static feed is given (``make demo`` on a
fresh machine). The network ("Transitnet Simulated Transit", fictional, around
46.0° N 8.0° E, time zone Europe/Zurich) has four routes, each in both directions:

- ``1`` Crosstown: a west-east line with a bend;
- ``2`` North-South: an L-shaped line;
- ``3`` Out-and-back: each trip goes out along one street and comes back on it
  (direction 0 starts at the hub end, direction 1 at the far end);
- ``4`` Loop: a rectangle, clockwise (direction 0) and anticlockwise (direction 1).

Every route-direction has its own stops about 400 m apart, 8 m to the right of the
street. Shapes and stop_times carry ``shape_dist_traveled`` in metres. Service runs every
day from 04:30 to 28:30 (past midnight) at 10-60 minute headways on weekdays (service
``WD``) and thinner at weekends (``WE``), with 20 s dwells and a 7.5 m/s schedule speed;
``block_id`` chains each vehicle's trips at the terminals.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transitnet.store.atomic import write_bytes_atomic

ORIGIN_LAT, ORIGIN_LON = 46.0, 8.0
TIMEZONE = "Europe/Zurich"
STOP_SPACING_M = 400.0
SCHEDULE_SPEED_MPS = 7.5
DWELL_S = 20
LAYOVER_S = 240
SIDE_OFFSET_M = 8.0
_M_PER_DEG_LAT = 111_320.0

#: (route_id, short name, long name, kind, waypoints in local metres (x east, y north)).
ROUTES: list[tuple[str, str, str, str, list[tuple[float, float]]]] = [
    ("1", "1", "Crosstown", "line", [(-4000, 0), (-1000, 0), (0, 300), (4000, 300)]),
    ("2", "2", "North-South", "line", [(0, 4000), (0, 300), (0, -2000), (2500, -2000)]),
    ("3", "3", "Out-and-back", "out_and_back", [(200, 600), (-1500, 1500), (-1500, 3200)]),
    ("4", "4", "Loop", "loop", [(1000, 1000), (3000, 1000), (3000, 3000), (1000, 3000)]),
]
#: (from hour, to hour, headway minutes) for weekday and weekend service.
HEADWAYS = {
    "WD": [(4.5, 7.0, 20), (7.0, 9.5, 10), (9.5, 16.0, 15), (16.0, 19.0, 10), (19.0, 24.5, 20),
           (24.5, 28.5, 60)],
    "WE": [(4.5, 9.0, 30), (9.0, 20.0, 20), (20.0, 28.5, 60)],
}  # fmt: skip


@dataclass(frozen=True)
class _Pattern:
    route_id: str
    direction_id: int
    shape_id: str
    xy: np.ndarray  # (n, 2) shape vertices in local metres
    cum: np.ndarray  # (n,) metres along the shape
    stop_ids: list[str]
    stop_dist: np.ndarray  # metres along the shape of each stop


def build_default_network(path: Path) -> Path:
    """Write the built-in network as a GTFS zip at ``path`` (atomically); returns ``path``."""
    patterns = [p for route in ROUTES for p in _build_patterns(route)]
    tables: dict[str, list[list[object]]] = {
        "agency.txt": [["agency_id", "agency_name", "agency_url", "agency_timezone"],
                       ["SIM", "Transitnet Simulated Transit (fictional)",
                        "https://example.invalid/transitnet-sim", TIMEZONE]],
        "feed_info.txt": [["feed_publisher_name", "feed_publisher_url", "feed_lang",
                           "feed_version"],
                          ["transitnet (simulated network)", "https://example.invalid", "en",
                           "transitnet-sim-1"]],
        "calendar.txt": [["service_id", "monday", "tuesday", "wednesday", "thursday", "friday",
                          "saturday", "sunday", "start_date", "end_date"],
                         ["WD", 1, 1, 1, 1, 1, 0, 0, "20200101", "20351231"],
                         ["WE", 0, 0, 0, 0, 0, 1, 1, "20200101", "20351231"]],
        "routes.txt": [["route_id", "agency_id", "route_short_name", "route_long_name",
                        "route_type"], *([r[0], "SIM", r[1], r[2], 3] for r in ROUTES)],
        "stops.txt": _stops_rows(patterns),
        "shapes.txt": _shapes_rows(patterns),
    }  # fmt: skip
    trips, stop_times = _schedule_rows(patterns)
    tables["trips.txt"] = trips
    tables["stop_times.txt"] = stop_times
    write_bytes_atomic(path, _zip_tables(tables))
    return path


def _build_patterns(route: tuple[str, str, str, str, list[tuple[float, float]]]) -> list[_Pattern]:
    route_id, _, _, kind, points = route
    base = np.asarray(points, dtype=float)
    if kind == "loop":
        paths = [np.vstack([base, base[:1]]), np.vstack([base[::-1], base[-1:]])]
    elif kind == "out_and_back":
        out_back = np.vstack([base, base[-2::-1]])
        far = np.vstack([base[::-1], base[1:]])
        paths = [out_back, far]
    else:
        paths = [base, base[::-1]]
    return [_make_pattern(route_id, d, path) for d, path in enumerate(paths)]


def _make_pattern(route_id: str, direction: int, corners: np.ndarray) -> _Pattern:
    xy = _densify(corners, step_m=50.0)
    cum = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])
    n_stops = max(2, round(cum[-1] / STOP_SPACING_M) + 1)
    stop_dist = np.linspace(0.0, cum[-1], n_stops)
    stop_ids = [f"S{route_id}{direction}{k:02d}" for k in range(n_stops)]
    return _Pattern(route_id, direction, f"SH{route_id}-{direction}", xy, cum, stop_ids, stop_dist)


def _densify(corners: np.ndarray, step_m: float) -> np.ndarray:
    out = [corners[0]]
    for a, b in itertools.pairwise(corners):
        n = max(1, math.ceil(float(np.hypot(*(b - a))) / step_m))
        out.extend(a + (b - a) * (i / n) for i in range(1, n + 1))
    return np.asarray(out)


def to_lonlat(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local metres (x east, y north) around the origin → (lon, lat) degrees."""
    lat = ORIGIN_LAT + xy[:, 1] / _M_PER_DEG_LAT
    lon = ORIGIN_LON + xy[:, 0] / (_M_PER_DEG_LAT * math.cos(math.radians(ORIGIN_LAT)))
    return lon, lat


def _stops_rows(patterns: list[_Pattern]) -> list[list[object]]:
    rows: list[list[object]] = [["stop_id", "stop_name", "stop_lat", "stop_lon", "location_type"]]
    for p in patterns:
        for stop_id, dist in zip(p.stop_ids, p.stop_dist, strict=True):
            x, y, dx, dy = _point_and_tangent(p, float(dist))
            right = np.array([[x + dy * SIDE_OFFSET_M, y - dx * SIDE_OFFSET_M]])
            lon, lat = to_lonlat(right)
            name = f"Route {p.route_id} dir {p.direction_id} stop {stop_id[-2:]}"
            rows.append([stop_id, name, f"{lat[0]:.7f}", f"{lon[0]:.7f}", 0])
    return rows


def _point_and_tangent(p: _Pattern, dist: float) -> tuple[float, float, float, float]:
    i = int(np.clip(np.searchsorted(p.cum, dist, side="right") - 1, 0, len(p.cum) - 2))
    seg = p.xy[i + 1] - p.xy[i]
    length = float(np.hypot(*seg)) or 1.0
    frac = (dist - p.cum[i]) / length
    point = p.xy[i] + seg * frac
    return float(point[0]), float(point[1]), float(seg[0] / length), float(seg[1] / length)


def _shapes_rows(patterns: list[_Pattern]) -> list[list[object]]:
    rows: list[list[object]] = [["shape_id", "shape_pt_lat", "shape_pt_lon", "shape_pt_sequence",
                                 "shape_dist_traveled"]]  # fmt: skip
    for p in patterns:
        lon, lat = to_lonlat(p.xy)
        for k in range(len(p.xy)):
            rows.append([p.shape_id, f"{lat[k]:.7f}", f"{lon[k]:.7f}", k + 1, f"{p.cum[k]:.2f}"])
    return rows


def _departures(service: str) -> list[int]:
    times: list[int] = []
    for start_h, end_h, headway_min in HEADWAYS[service]:
        t = int(start_h * 3600)
        while t < end_h * 3600:
            times.append(t)
            t += headway_min * 60
    return times


def _schedule_rows(patterns: list[_Pattern]) -> tuple[list[list[object]], list[list[object]]]:
    trips: list[list[object]] = [["route_id", "service_id", "trip_id", "direction_id",
                                  "shape_id", "block_id", "trip_headsign"]]  # fmt: skip
    stop_times: list[list[object]] = [["trip_id", "arrival_time", "departure_time", "stop_id",
                                       "stop_sequence", "shape_dist_traveled"]]  # fmt: skip
    for service in HEADWAYS:
        for route_id in dict.fromkeys(p.route_id for p in patterns):
            pair = [p for p in patterns if p.route_id == route_id]
            _add_route_trips(service, pair, trips, stop_times)
    return trips, stop_times


def _add_route_trips(service: str, pair: list[_Pattern], trips: list[list[object]],
                     stop_times: list[list[object]]) -> None:  # fmt: skip
    """Schedule both directions; a vehicle takes the next trip starting where it ended."""
    free: list[tuple[int, tuple[int, int], str]] = []  # (free at, end point, block id)
    runs = sorted((t + d * 300, d) for t in _departures(service) for d in (0, 1))
    for n, (start, direction) in enumerate(runs):
        p = pair[direction]
        begin = _terminal(p.xy[0])
        block = next((b for b in free if b[0] <= start and b[1] == begin), None)
        if block is not None:
            free.remove(block)
        block_id = block[2] if block else f"B{service}{p.route_id}-{len(trips)}"
        trip_id = f"{service}-{p.route_id}-{direction}-{n:03d}"
        end = _add_stop_times(trip_id, start, p, stop_times)
        trips.append([p.route_id, service, trip_id, direction, p.shape_id, block_id,
                      f"Route {p.route_id} towards {p.stop_ids[-1]}"])  # fmt: skip
        free.append((end + LAYOVER_S, _terminal(p.xy[-1]), block_id))


def _terminal(point: np.ndarray) -> tuple[int, int]:
    return round(float(point[0])), round(float(point[1]))


def _add_stop_times(trip_id: str, start: int, p: _Pattern, rows: list[list[object]]) -> int:
    t = float(start)
    for k, (stop_id, dist) in enumerate(zip(p.stop_ids, p.stop_dist, strict=True)):
        if k:
            t += (dist - p.stop_dist[k - 1]) / SCHEDULE_SPEED_MPS
        arrival = round(t)
        departure = arrival + (DWELL_S if 0 < k < len(p.stop_ids) - 1 else 0)
        rows.append([trip_id, _hms(arrival), _hms(departure), stop_id, k + 1, f"{dist:.2f}"])
        t = float(departure)
    return round(t)


def _hms(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _zip_tables(tables: dict[str, list[list[object]]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, rows in tables.items():
            text = io.StringIO()
            csv.writer(text, lineterminator="\n").writerows(rows)
            archive.writestr(name, text.getvalue())
    return buffer.getvalue()
