"""Geometry behind rules E028 and E029, as the reference validator computes it.

The reference (spatial4j over JTS, in a geographic context) works in degrees:

- **E028 coverage box.** The bounding box of every shapes.txt point (when shapes.txt has
  more than 3 points and is not ignored), else of every stop with coordinates, grown by
  1,609 m = 0.01447 degrees of latitude and ``asin(sin(0.01447 deg) / cos(lat))`` degrees
  of longitude at the box edge nearest a pole. Edges count as inside.
- **E029 trip corridor.** The trip's shape as a lon/lat polyline buffered by 200 m =
  0.0017986 degrees with JTS's planar buffer (8 segments per quarter circle), so the
  corridor is 200 m wide north-south but only ``200 * cos(lat)`` m east-west. With
  ``metric=True`` the distance is measured in metres in the shapes' UTM zone instead.

Dateline-crossing feeds are not unwrapped (the reference does not handle them either).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyproj
import shapely

#: spatial4j's ``DistanceUtils.KM_TO_DEG`` (mean Earth radius 6371.0087714 km).
KM_TO_DEG = 1.0 / (math.pi / 180.0 * 6371.0087714)
#: E028 buffer around the coverage box.
REGION_BUFFER_METERS = 1609.0
#: E029 buffer around the trip's shape.
TRIP_BUFFER_METERS = 200.0
REGION_BUFFER_DEGREES = KM_TO_DEG * REGION_BUFFER_METERS / 1000.0
TRIP_BUFFER_DEGREES = KM_TO_DEG * TRIP_BUFFER_METERS / 1000.0


def format_java_clock(seconds: int, vehicle_quirk: bool = False) -> str:
    """Format seconds after midnight as the reference does (``%02d:%02d:%02d``, Java ints).

    Args:
        seconds: Seconds after midnight; negative values (-999 = missing) print as Java would.
        vehicle_quirk: Use ``seconds % 360`` for the minutes, as the reference's E019 check
            for VehiclePositions does.
    """
    hours = _java_div(seconds, 3600)
    minutes = _java_rem(seconds, 360) if vehicle_quirk else _java_rem(_java_div(seconds, 60), 60)
    return f"{hours:02d}:{minutes:02d}:{_java_rem(seconds, 60):02d}"


def _java_div(a: int, b: int) -> int:
    return abs(a) // b * (1 if a >= 0 else -1)


def _java_rem(a: int, b: int) -> int:
    return a - b * _java_div(a, b)


def _norm_lon(lon: float) -> float:
    """spatial4j's ``normLonDEG``."""
    if -180.0 <= lon <= 180.0:
        return lon
    off = math.fmod(lon + 180.0, 360.0)
    if off < 0:
        return 180.0 + off
    return 180.0 if off == 0 and lon > 0 else -180.0 + off


@dataclass(frozen=True)
class CoverageBox:
    """The buffered coverage box of E028 (longitudes may wrap: ``min_lon > max_lon``).

    Attributes:
        source: ``"shapes.txt"`` or ``"stops.txt"``, whichever the box was built from.
    """

    min_lon: float
    max_lon: float
    min_lat: float
    max_lat: float
    source: str

    @classmethod
    def from_feed(cls, shapes: pd.DataFrame | None, stops: pd.DataFrame) -> CoverageBox | None:
        """Build the box from shapes.txt (more than 3 points) or else stops.txt.

        Args:
            shapes: Needs ``shape_pt_lon``, ``shape_pt_lat``; None to use stops.
            stops: Needs ``stop_lon``, ``stop_lat`` (stops without coordinates are skipped).

        Returns:
            The buffered box, or None when neither table has a located point.
        """
        if isinstance(shapes, pd.DataFrame) and len(shapes) > 3:
            lon, lat, source = shapes["shape_pt_lon"], shapes["shape_pt_lat"], "shapes.txt"
        elif {"stop_lon", "stop_lat"} <= set(stops.columns):
            lon, lat, source = stops["stop_lon"], stops["stop_lat"], "stops.txt"
        else:
            return None
        points = pd.DataFrame({"lon": pd.to_numeric(lon), "lat": pd.to_numeric(lat)}).dropna()
        if points.empty:
            return None
        return cls.buffered(
            float(points["lon"].min()), float(points["lon"].max()),
            float(points["lat"].min()), float(points["lat"].max()), source,
        )  # fmt: skip

    @classmethod
    def buffered(
        cls, min_lon: float, max_lon: float, min_lat: float, max_lat: float, source: str
    ) -> CoverageBox:
        """Grow a box by :data:`REGION_BUFFER_DEGREES` like spatial4j's ``getBuffered``."""
        d = REGION_BUFFER_DEGREES
        if max_lat + d >= 90:
            return cls(-180.0, 180.0, max(-90.0, min_lat - d), 90.0, source)
        if min_lat - d <= -90:
            return cls(-180.0, 180.0, -90.0, min(90.0, max_lat + d), source)
        polar = max_lat if abs(max_lat) > abs(min_lat) else min_lat
        ratio = math.sin(math.radians(d)) / math.cos(math.radians(polar))
        lon_d = math.degrees(math.asin(ratio)) if abs(ratio) <= 1 else 90.0
        if lon_d * 2 + (max_lon - min_lon) >= 360:
            return cls(-180.0, 180.0, min_lat - d, max_lat + d, source)
        return cls(
            _norm_lon(min_lon - lon_d), _norm_lon(max_lon + lon_d), min_lat - d, max_lat + d, source
        )

    def contains(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Return True per point inside the box (edges included), as spatial4j relates them."""
        max_lon = self.max_lon + 360 if self.max_lon < self.min_lon else self.max_lon
        x = np.where(lon < self.min_lon, lon + 360, np.where(lon > max_lon, lon - 360, lon))
        with np.errstate(invalid="ignore"):
            inside = (lat >= self.min_lat) & (lat <= self.max_lat)
            result: np.ndarray = inside & (x >= self.min_lon) & (x <= max_lon)
        return result


class TripShapes:
    """Trip shapes from shapes.txt, for E029.

    Args:
        lines: One lon/lat LineString per usable shape.
        trip_shape: Per trips.txt row (in the checker's order), the index into ``lines``
            or -1 when the trip has no usable shape.
        metric: Measure the 200 m in metres (UTM) instead of the reference's degrees.
    """

    def __init__(self, lines: np.ndarray, trip_shape: np.ndarray, *, metric: bool) -> None:
        self.lines = lines
        self.trip_shape = trip_shape
        self.metric = metric
        self._prepared: np.ndarray = np.full(len(lines), None, dtype=object)
        self._ready = np.zeros(len(lines), dtype=bool)
        self._project: Callable[[np.ndarray], np.ndarray] | None = None

    @classmethod
    def from_feed(
        cls, shapes: pd.DataFrame | None, trips: pd.DataFrame, *, metric: bool
    ) -> TripShapes | None:
        """Build the trip polylines; None when shapes.txt is absent or has 3 points or fewer.

        Args:
            shapes: Needs ``shape_id``, ``shape_pt_lat``, ``shape_pt_lon``, ``shape_pt_sequence``.
            trips: Needs ``trip_id``; ``shape_id`` when trips have shapes.
            metric: See the class.
        """
        if not isinstance(shapes, pd.DataFrame) or len(shapes) <= 3 or "shape_id" not in trips:
            return None
        pts = pd.DataFrame(
            {
                "shape_id": shapes["shape_id"].astype("string"),
                "seq": pd.to_numeric(shapes["shape_pt_sequence"], errors="coerce"),
                "lon": pd.to_numeric(shapes["shape_pt_lon"], errors="coerce"),
                "lat": pd.to_numeric(shapes["shape_pt_lat"], errors="coerce"),
            }
        ).dropna(subset=["shape_id", "lon", "lat"])
        pts = pts.sort_values(["shape_id", "seq"], kind="stable")
        counts = pts.groupby("shape_id", sort=True).size()
        usable = counts.index[counts >= 2]
        pts = pts[pts["shape_id"].isin(usable)]
        codes = pd.Categorical(pts["shape_id"], categories=usable).codes
        coords = pts[["lon", "lat"]].to_numpy(dtype=np.float64)
        lines = shapely.linestrings(coords, indices=codes) if len(usable) else np.array([])
        index = pd.Index(usable)
        trip_shape = index.get_indexer(trips["shape_id"].astype("string").to_numpy(dtype=object))
        return cls(np.asarray(lines, dtype=object), trip_shape.astype(np.int64), metric=metric)

    def is_off_shape(self, trip_rows: np.ndarray, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Return True per point farther than 200 m from its trip's shape.

        Args:
            trip_rows: Per point, the row of its trip in trips.txt (checker order).
            lon: Point longitudes (degrees).
            lat: Point latitudes (degrees).
        """
        shape = self.trip_shape[trip_rows] if len(trip_rows) else np.array([], dtype=np.int64)
        off = np.zeros(len(shape), dtype=bool)
        has = np.flatnonzero(shape >= 0)
        if has.size == 0:
            return off
        geoms = self._prepare(shape[has])
        if self.metric:
            points = shapely.points(self._projector()(np.column_stack([lon[has], lat[has]])))
            off[has] = shapely.distance(geoms, points) > TRIP_BUFFER_METERS
        else:
            off[has] = ~shapely.intersects(geoms, shapely.points(lon[has], lat[has]))
        return off

    def _prepare(self, shape_idx: np.ndarray) -> np.ndarray:
        """Buffered (degrees) or projected (metric) geometries, built once per shape."""
        todo = np.unique(shape_idx[~self._ready[shape_idx]])
        if todo.size:
            lines = self.lines[todo]
            if self.metric:
                built = shapely.transform(lines, self._projector())
            else:
                built = shapely.buffer(lines, TRIP_BUFFER_DEGREES, quad_segs=8)
            shapely.prepare(built)
            self._prepared[todo] = built
            self._ready[todo] = True
        return np.asarray(self._prepared[shape_idx])

    def _projector(self) -> Callable[[np.ndarray], np.ndarray]:
        if self._project is None:
            coords = shapely.get_coordinates(self.lines)
            lon, lat = float(coords[:, 0].mean()), float(coords[:, 1].mean())
            zone = int((lon + 180) // 6) % 60 + 1
            epsg = (32600 if lat >= 0 else 32700) + zone
            transformer = pyproj.Transformer.from_crs(4326, epsg, always_xy=True)

            def project(xy: np.ndarray) -> np.ndarray:
                x, y = transformer.transform(xy[:, 0], xy[:, 1])
                return np.column_stack([x, y])

            self._project = project
        return self._project
