"""Metric shapes: every shape as a polyline in UTM metres with cumulative distances.

All shapes of a feed live in one :class:`ShapeTable` (flat vertex arrays plus offsets),
projected to the UTM zone of the feed's centroid, so a matcher can work on numpy arrays
without per-shape Python objects.

Shapes come from ``shapes.txt``. Trips without a usable shape (no ``shape_id``, an id
missing from ``shapes.txt``, or a shape with fewer than two valid points) get a polyline
through their stops in stop order when ``stop_times.txt`` exists: one per distinct stop
pattern, with shape_id ``"stops:<pattern_id>"`` (:func:`stop_shape_id`) and
``from_stops=True``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyproj

logger = logging.getLogger(__name__)

#: Prefix of shape ids built through a trip's stops.
STOP_SHAPE_PREFIX = "stops:"
_WGS84 = "EPSG:4326"


@dataclass(frozen=True)
class ShapeTable:
    """All shapes of a feed as flat metric arrays.

    Attributes:
        shape_ids: (S,) shape ids (object array of str), unique.
        offsets: (S+1,) int64; the vertices of shape ``i`` are ``[offsets[i], offsets[i+1])``.
            Every shape has at least two vertices.
        x: (V,) float64 easting in metres (``crs``).
        y: (V,) float64 northing in metres.
        cum_m: (V,) float64 distance along the shape at each vertex, metres (0 at the
            first vertex of each shape, non-decreasing).
        crs: The projected CRS, e.g. ``"EPSG:32614"``.
        from_stops: (S,) bool; True for polylines through a trip's stops (no shape).
        dist_traveled: (V,) float64 ``shape_dist_traveled`` in the feed's own units
            (NaN where absent), or None.
    """

    shape_ids: np.ndarray
    offsets: np.ndarray
    x: np.ndarray
    y: np.ndarray
    cum_m: np.ndarray
    crs: str
    from_stops: np.ndarray
    dist_traveled: np.ndarray | None = None

    @functools.cached_property
    def _index(self) -> pd.Index:
        index: pd.Index = pd.Index(np.asarray(self.shape_ids, dtype=object))
        return index

    def __len__(self) -> int:
        return len(self.shape_ids)

    def index_of(self, shape_ids: Any) -> np.ndarray:
        """Return the int64 row of each shape id, -1 when absent or null."""
        values = np.asarray(pd.Series(shape_ids, dtype=object).to_numpy(), dtype=object)
        return np.asarray(self._index.get_indexer(pd.Index(values)), dtype=np.int64)

    def length_m(self) -> np.ndarray:
        """Return the (S,) float64 length of every shape in metres."""
        return np.asarray(self.cum_m[self.offsets[1:] - 1], dtype=np.float64)

    def vertex_shape(self) -> np.ndarray:
        """Return the (V,) int64 shape row of every vertex."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.offsets))


def compute_utm_crs(lon: float, lat: float) -> str:
    """Return the WGS 84 UTM CRS (``"EPSG:326zz"`` north, ``"EPSG:327zz"`` south) at a point.

    Raises:
        ValueError: When the point is not a finite longitude/latitude.
    """
    if not (np.isfinite(lon) and np.isfinite(lat) and -180 <= lon <= 180 and -80 <= lat <= 84):
        raise ValueError(f"no UTM zone for lon={lon}, lat={lat}")
    zone = min(int((lon + 180) // 6) + 1, 60)
    if 56 <= lat < 64 and 3 <= lon < 12:
        zone = 32  # south-west Norway
    elif lat >= 72 and 0 <= lon < 42:
        zone = {0: 31, 1: 33, 2: 33, 3: 35, 4: 35, 5: 37, 6: 37}[int(lon // 6)]  # Svalbard
    return f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"


@functools.lru_cache(maxsize=32)
def _transformer(src: str, dst: str) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(src, dst, always_xy=True)


def valid_lonlat(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Return a bool mask of finite, in-range positions that are not (0, 0)."""
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    ok = np.isfinite(lon) & np.isfinite(lat) & (np.abs(lon) <= 180) & (np.abs(lat) <= 90)
    return np.asarray(ok & ~((lon == 0) & (lat == 0)), dtype=bool)


def project_lonlat(crs: str, lon: Any, lat: Any) -> tuple[np.ndarray, np.ndarray]:
    """Project WGS 84 longitudes/latitudes to ``crs`` metres, vectorised.

    Non-finite, out-of-range and (0, 0) inputs give NaN (never inf).
    """
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    ok = valid_lonlat(lon, lat)
    x = np.full(lon.shape, np.nan)
    y = np.full(lon.shape, np.nan)
    if ok.any():
        px, py = _transformer(_WGS84, crs).transform(lon[ok], lat[ok])
        x[ok], y[ok] = px, py
    bad = ~(np.isfinite(x) & np.isfinite(y))
    x[bad], y[bad] = np.nan, np.nan
    return x, y


def unproject_xy(crs: str, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`project_lonlat`: metres in ``crs`` to (lon, lat); NaN stays NaN."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    lon = np.full(x.shape, np.nan)
    lat = np.full(x.shape, np.nan)
    if ok.any():
        lon[ok], lat[ok] = _transformer(crs, _WGS84).transform(x[ok], y[ok])
    return lon, lat


def make_shape_table(
    shape_ids: Any,
    xs: list[np.ndarray],
    ys: list[np.ndarray],
    crs: str,
    *,
    from_stops: Any = None,
    dist_traveled: list[np.ndarray] | None = None,
) -> ShapeTable:
    """Build a :class:`ShapeTable` from per-shape metric coordinates (e.g. synthetic tests).

    Raises:
        ValueError: On duplicate ids, mismatched lengths, a shape with fewer than two
            vertices, or non-finite coordinates.
    """
    ids = np.asarray(list(shape_ids), dtype=object)
    if len(set(ids.tolist())) != len(ids) or not len(ids) == len(xs) == len(ys):
        raise ValueError("shape ids must be unique and match the coordinate lists")
    counts = np.array([len(x) for x in xs], dtype=np.int64)
    if (counts < 2).any() or any(len(x) != len(y) for x, y in zip(xs, ys, strict=True)):
        raise ValueError("every shape needs at least two (x, y) vertices")
    x = np.concatenate(xs).astype(np.float64) if len(xs) else np.empty(0)
    y = np.concatenate(ys).astype(np.float64) if len(ys) else np.empty(0)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("shape coordinates must be finite")
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    flags = np.zeros(len(ids), bool) if from_stops is None else np.asarray(from_stops, bool)
    sdt = None if dist_traveled is None else np.concatenate(dist_traveled).astype(np.float64)
    return ShapeTable(ids, offsets, x, y, compute_cum_m(x, y, offsets), crs, flags, sdt)


def compute_cum_m(x: np.ndarray, y: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Return the cumulative distance (m) at each vertex, restarting at 0 on every shape."""
    seg = np.zeros(len(x))
    if len(x) > 1:
        seg[1:] = np.hypot(np.diff(x), np.diff(y))
    seg[offsets[:-1][offsets[:-1] < len(x)]] = 0.0
    total = np.cumsum(seg)
    starts = np.repeat(offsets[:-1], np.diff(offsets))
    return np.asarray(total - total[starts], dtype=np.float64)


def stop_shape_id(pattern_ids: pd.Series) -> pd.Series:
    """Return the shape id of the polyline through each stop pattern (``"stops:<id>"``)."""
    return (STOP_SHAPE_PREFIX + pattern_ids.astype("string")).astype("string")


def order_stop_times(stop_times: pd.DataFrame) -> pd.DataFrame:
    """Sort stop times per trip and number the stops.

    Args:
        stop_times: Columns ``trip_id, stop_sequence, stop_id`` (others kept).

    Returns:
        Rows with a null trip_id/stop_sequence/stop_id dropped (logged), sorted by
        ``trip_id, stop_sequence``, plus ``stop_index`` (0-based position in the trip).
    """
    keys = ["trip_id", "stop_sequence", "stop_id"]
    bad = stop_times[keys].isna().any(axis=1)
    if bad.any():
        logger.warning(
            "stop_times.txt: %d rows without trip_id/stop_sequence/stop_id ignored", int(bad.sum())
        )
    st = stop_times.loc[~bad].sort_values(["trip_id", "stop_sequence"], kind="stable")
    st = st.reset_index(drop=True)
    st["stop_index"] = st.groupby("trip_id", sort=False).cumcount().astype(np.int64)
    return st


def compute_stop_patterns(ordered: pd.DataFrame) -> pd.DataFrame:
    """Hash each trip's ordered stop list into a ``pattern_id``.

    Args:
        ordered: Output of :func:`order_stop_times` (``trip_id, stop_id`` in stop order).

    Returns:
        One row per trip: ``trip_id, pattern_id`` (12 hex chars of the SHA-1 of the stop
        list), ``n_stops``.
    """
    grouped = ordered.groupby("trip_id", sort=False)["stop_id"]
    joined = grouped.agg(lambda s: "\x1f".join(s.astype(str)))
    hashes = {s: hashlib.sha1(s.encode()).hexdigest()[:12] for s in pd.unique(joined.to_numpy())}
    return pd.DataFrame(
        {
            "trip_id": joined.index.astype("string"),
            "pattern_id": pd.array([hashes[s] for s in joined.to_numpy()], dtype="string"),
            "n_stops": grouped.size().to_numpy().astype(np.int64),
        }
    )


def compute_feed_crs(feed: Any) -> str:
    """Return the UTM CRS at the median valid stop (else shape point) of a feed."""
    for table, lon_col, lat_col in (
        ("stops", "stop_lon", "stop_lat"),
        ("shapes", "shape_pt_lon", "shape_pt_lat"),
    ):
        df = getattr(feed, table, None)
        if df is None or lon_col not in df.columns:
            continue
        lon = df[lon_col].to_numpy(dtype=np.float64, na_value=np.nan)
        lat = df[lat_col].to_numpy(dtype=np.float64, na_value=np.nan)
        ok = valid_lonlat(lon, lat)
        if ok.any():
            return compute_utm_crs(float(np.median(lon[ok])), float(np.median(lat[ok])))
    raise ValueError("the feed has no valid stop or shape coordinate to choose a UTM zone")


_VERTEX_COLUMNS = ["shape_id", "lon", "lat", "sdt"]


def _floats(df: pd.DataFrame, column: str) -> np.ndarray:
    """Return a column as float64 with NaN for nulls, or all NaN when it is absent."""
    if column not in df.columns:
        return np.full(len(df), np.nan)
    return np.asarray(df[column].to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


def _keep_valid(df: pd.DataFrame, label: str) -> pd.DataFrame:
    """Drop points with invalid coordinates, then shapes left with < 2 points (logged)."""
    ok = valid_lonlat(df["lon"].to_numpy(), df["lat"].to_numpy()) & df["shape_id"].notna()
    if (~ok).any():
        logger.warning("%s: %d points with missing/invalid coordinates ignored", label, (~ok).sum())
    df = df.loc[ok]
    sizes = df.groupby("shape_id", sort=False)["lon"].transform("size")
    if (sizes < 2).any():
        short = df.loc[sizes < 2, "shape_id"].unique().tolist()
        logger.warning(
            "%s: %d shapes with < 2 valid points ignored: %s", label, len(short), short[:5]
        )
    return df.loc[sizes >= 2, _VERTEX_COLUMNS].reset_index(drop=True)


def _shape_vertices(feed: Any) -> pd.DataFrame:
    shapes = feed.shapes
    if shapes is None or shapes.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in _VERTEX_COLUMNS})
    df = pd.DataFrame(
        {
            "shape_id": shapes["shape_id"].astype("string"),
            "seq": _floats(shapes, "shape_pt_sequence"),
            "lon": _floats(shapes, "shape_pt_lon"),
            "lat": _floats(shapes, "shape_pt_lat"),
            "sdt": _floats(shapes, "shape_dist_traveled"),
        }
    )
    return _keep_valid(df.sort_values(["shape_id", "seq"], kind="stable"), "shapes.txt")


def _trips_without_shape(feed: Any, usable: set[str]) -> pd.Series:
    trips: pd.DataFrame = feed.trips
    if "shape_id" not in trips.columns:
        return trips["trip_id"]
    has_shape = trips["shape_id"].astype("string").isin(usable).fillna(False)
    return trips.loc[~has_shape.to_numpy(dtype=bool), "trip_id"]


def _stop_polyline_vertices(feed: Any, usable: set[str]) -> pd.DataFrame:
    empty = pd.DataFrame({c: pd.Series(dtype="float64") for c in _VERTEX_COLUMNS})
    if feed.stop_times is None or feed.stop_times.empty:
        return empty
    needs = _trips_without_shape(feed, usable)
    if needs.empty:
        return empty
    st = order_stop_times(feed.stop_times[feed.stop_times["trip_id"].isin(needs)])
    patterns = compute_stop_patterns(st).drop_duplicates("pattern_id")
    rep = st.merge(patterns[["trip_id", "pattern_id"]], on="trip_id")
    stops = feed.stops[["stop_id", "stop_lon", "stop_lat"]].drop_duplicates("stop_id")
    rep = rep.merge(stops, on="stop_id", how="left").sort_values(["pattern_id", "stop_index"])
    out = pd.DataFrame(
        {
            "shape_id": stop_shape_id(rep["pattern_id"]),
            "lon": _floats(rep, "stop_lon"),
            "lat": _floats(rep, "stop_lat"),
            "sdt": np.nan,
        }
    )
    logger.info("building stop polylines for %d trips without a usable shape", len(needs))
    return _keep_valid(out, "stop polylines")


def build_shape_table(feed: Any) -> ShapeTable:
    """Project every usable shape of a feed to UTM metres.

    Args:
        feed: A gtfs-kit Feed (``shapes``: ``shape_id, shape_pt_lat, shape_pt_lon,
            shape_pt_sequence[, shape_dist_traveled]``; ``trips``; ``stop_times`` and
            ``stops`` for stop polylines).

    Returns:
        The :class:`ShapeTable`: shapes.txt shapes sorted by id, then stop polylines.
    """
    crs = compute_feed_crs(feed)
    real = _shape_vertices(feed)
    usable = set(real["shape_id"].dropna().unique().tolist())
    polylines = _stop_polyline_vertices(feed, usable)
    vertices = pd.concat(
        [real.assign(from_stops=False), polylines.assign(from_stops=True)], ignore_index=True
    )
    codes, ids = pd.factorize(vertices["shape_id"], sort=False)
    counts = np.bincount(codes, minlength=len(ids)).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    x, y = project_lonlat(crs, vertices["lon"].to_numpy(), vertices["lat"].to_numpy())
    from_stops = vertices["from_stops"].to_numpy(dtype=bool)[offsets[:-1]]
    return ShapeTable(
        shape_ids=np.asarray(ids.astype(str), dtype=object),
        offsets=offsets,
        x=x,
        y=y,
        cum_m=compute_cum_m(x, y, offsets),
        crs=crs,
        from_stops=from_stops,
        dist_traveled=vertices["sdt"].to_numpy(dtype=np.float64),
    )


def _vertex_position(
    table: ShapeTable, shape_idx: np.ndarray, dist_m: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return (x, y) at ``dist_m`` along each shape; NaN for -1 shapes or NaN distances."""
    lengths = table.length_m()
    ok = (shape_idx >= 0) & (shape_idx < len(table)) & np.isfinite(dist_m)
    s = np.where(ok, shape_idx, 0)
    d = np.clip(np.where(ok, dist_m, 0.0), 0.0, lengths[s] if len(lengths) else 0.0)
    base = np.concatenate([[0.0], np.cumsum(lengths + 1.0)])
    key = table.cum_m + base[table.vertex_shape()]
    v = np.searchsorted(key, base[s] + d, side="right") - 1
    v = np.clip(v, table.offsets[s], table.offsets[s + 1] - 2)
    seg = table.cum_m[v + 1] - table.cum_m[v]
    t = np.where(seg > 0, (d - table.cum_m[v]) / np.where(seg > 0, seg, 1.0), 0.0)
    x = table.x[v] + t * (table.x[v + 1] - table.x[v])
    y = table.y[v] + t * (table.y[v + 1] - table.y[v])
    return np.where(ok, x, np.nan), np.where(ok, y, np.nan)


def interpolate_xy(table: ShapeTable, shape_idx: Any, dist_m: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return metric (x, y) at ``dist_m`` metres along shape rows ``shape_idx``.

    Distances are clamped to ``[0, length]``; a shape index of -1 or a NaN distance
    gives NaN.
    """
    idx = np.asarray(shape_idx, dtype=np.int64)
    dist = np.asarray(dist_m, dtype=np.float64)
    if len(table) == 0:
        return np.full(dist.shape, np.nan), np.full(dist.shape, np.nan)
    return _vertex_position(table, idx, dist)


def interpolate_lonlat(
    table: ShapeTable, shape_idx: Any, dist_m: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Return WGS 84 (lon, lat) at ``dist_m`` metres along shape rows ``shape_idx``.

    The inverse of map matching, for drawing forecasts on a map. Distances are clamped
    to ``[0, length]``; a shape index of -1 or a NaN distance gives NaN.
    """
    x, y = interpolate_xy(table, shape_idx, dist_m)
    return unproject_xy(table.crs, x, y)
