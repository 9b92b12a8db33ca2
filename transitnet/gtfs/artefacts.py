"""Static artefacts: everything downstream needs from a static feed, built once per version.

:func:`build_artefacts` turns a gtfs-kit Feed into metric shapes, trips with line keys and
stop patterns, stop distances along shapes, scheduled stop times and stops.
:func:`load_or_build_artefacts` caches them as Parquet under
``<cache_dir>/static/<version>/`` (plus ``artefacts.json``, written last); a second call
with the same feed loads them without any gtfs-kit work. The cache is keyed by the feed
version and checked against the feed's content hash, so a feed republished under an
unchanged ``feed_version`` is rebuilt, not served stale.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from transitnet.gtfs.feeds import (
    compute_content_hash,
    compute_feed_version,
    open_static_source,
    read_static_feed,
)
from transitnet.gtfs.lines import compute_line_keys
from transitnet.gtfs.schedule import build_stop_times, compute_stop_distances
from transitnet.gtfs.shapes import (
    ShapeTable,
    build_shape_table,
    compute_stop_patterns,
    order_stop_times,
    stop_shape_id,
)
from transitnet.store.atomic import write_text_atomic, write_with_atomic

logger = logging.getLogger(__name__)

#: Bumped whenever the cached layout or its meaning changes; older caches are rebuilt.
CACHE_FORMAT = 2
META_FILE = "artefacts.json"
TRIP_COLUMNS: tuple[str, ...] = (
    "trip_id",
    "route_id",
    "direction_id",
    "shape_id",
    "service_id",
    "trip_headsign",
    "block_id",
    "line_key",
    "pattern_id",
)
ROUTE_COLUMNS: tuple[str, ...] = (
    "route_id",
    "agency_id",
    "route_short_name",
    "route_long_name",
    "route_type",
    "line_key",
)


@dataclass(frozen=True)
class StaticArtefacts:
    """Static artefacts of one feed version.

    Attributes:
        version: Feed version id (:func:`transitnet.gtfs.feeds.compute_feed_version`).
        shapes: Metric shapes, including stop polylines (``from_stops``).
        trips: :data:`TRIP_COLUMNS`; ``shape_id`` is the usable shape (a stop polyline
            ``"stops:<pattern_id>"`` when the trip had none, null when it has no geometry);
            ``pattern_id`` is the stop-pattern hash (null without stop_times);
            ``direction_id`` is Int32 (nullable).
        stop_dist: ``shape_id, pattern_id, stop_index, stop_sequence, stop_id, dist_m,
            offset_m, dist_source``: every stop of each distinct (shape, pattern) along the
            shape in metres (empty without stop_times).
        stop_times: ``trip_id, stop_sequence, stop_index, stop_id, arrival_s, departure_s,
            dist_m`` (seconds after service-day noon minus 12 h), or None without stop_times.
        stops: ``stop_id, stop_name, lat, lon, location_type, parent_station``.
        routes: :data:`ROUTE_COLUMNS`.
        line_key_mode: The mode of the ``line_key`` columns (see :mod:`transitnet.gtfs.lines`).
        timezone: The feed's IANA time zone (agency.txt ``agency_timezone``), or None.
    """

    version: str
    shapes: ShapeTable
    trips: pd.DataFrame
    stop_dist: pd.DataFrame
    stop_times: pd.DataFrame | None
    stops: pd.DataFrame
    routes: pd.DataFrame
    line_key_mode: str = "route"
    timezone: str | None = None


def _column(df: pd.DataFrame, name: str, dtype: Any) -> pd.Series:
    if name in df.columns:
        column: pd.Series = df[name].astype(dtype).reset_index(drop=True)
        return column
    empty: pd.Series = pd.Series(pd.NA, index=range(len(df)), dtype=dtype)
    return empty


def _build_routes(feed: Any) -> pd.DataFrame:
    r = feed.routes
    return (
        pd.DataFrame(
            {
                "route_id": _column(r, "route_id", "string"),
                "agency_id": _column(r, "agency_id", "string"),
                "route_short_name": _column(r, "route_short_name", "string"),
                "route_long_name": _column(r, "route_long_name", "string"),
                "route_type": _column(r, "route_type", "Int32"),
            }
        )
        .drop_duplicates("route_id")
        .reset_index(drop=True)
    )


def _build_stops(feed: Any) -> pd.DataFrame:
    s = feed.stops
    return pd.DataFrame(
        {
            "stop_id": _column(s, "stop_id", "string"),
            "stop_name": _column(s, "stop_name", "string"),
            "lat": _column(s, "stop_lat", "Float64").astype("float64"),
            "lon": _column(s, "stop_lon", "Float64").astype("float64"),
            "location_type": _column(s, "location_type", "Int32").fillna(0),
            "parent_station": _column(s, "parent_station", "string"),
        }
    )


def _build_trips(feed: Any, shapes: ShapeTable, patterns: pd.DataFrame | None) -> pd.DataFrame:
    t = feed.trips
    trips = pd.DataFrame({c: _column(t, c, "string") for c in TRIP_COLUMNS[:-2]})
    trips["direction_id"] = _column(t, "direction_id", "Int32")
    duplicated = trips["trip_id"].duplicated() | trips["trip_id"].isna()
    if duplicated.any():
        logger.warning("trips.txt: %d rows with a null or repeated trip_id ignored (first kept)",
                       int(duplicated.sum()))  # fmt: skip
        trips = trips[~duplicated].reset_index(drop=True)
    if patterns is not None:
        trips = trips.merge(patterns[["trip_id", "pattern_id"]], on="trip_id", how="left")
    else:
        trips["pattern_id"] = pd.Series(pd.NA, index=trips.index, dtype="string")
    usable = trips["shape_id"].isin(shapes.shape_ids[~shapes.from_stops])
    polyline = stop_shape_id(trips["pattern_id"])
    fallback = polyline.where(polyline.isin(shapes.shape_ids[shapes.from_stops]))
    trips["shape_id"] = trips["shape_id"].where(usable, fallback).astype("string")
    missing = trips["shape_id"].isna()
    if missing.any():
        logger.warning("%d trips have no usable shape and no stop polyline", int(missing.sum()))
    trips["line_key"] = pd.Series(pd.NA, index=trips.index, dtype="string")
    return trips[list(TRIP_COLUMNS)]


def assign_line_keys(art: StaticArtefacts, mode: str) -> StaticArtefacts:
    """Return ``art`` with ``line_key`` recomputed in ``mode`` on trips and routes.

    Line keys come from the route (normalised route_id, direction, short name), so any
    mode is computed from the cached tables without a rebuild.
    """
    names = art.routes.set_index("route_id")["route_short_name"]
    trips = art.trips.copy()
    trips["line_key"] = compute_line_keys(
        trips["route_id"],
        trips["direction_id"],
        mode=mode,
        short_names=trips["route_id"].map(names),
    )
    routes = art.routes.copy()
    routes["line_key"] = compute_line_keys(
        routes["route_id"], None, mode=mode, short_names=routes["route_short_name"]
    )
    return replace(art, trips=trips, routes=routes, line_key_mode=mode)


def build_artefacts(
    feed: Any, *, line_key_mode: str = "route", version: str | None = None
) -> StaticArtefacts:
    """Compute the static artefacts of a feed.

    Args:
        feed: A gtfs-kit Feed, ideally from :func:`transitnet.gtfs.feeds.read_static_feed`.
        line_key_mode: See :mod:`transitnet.gtfs.lines`.
        version: The version id to record; default :func:`compute_feed_version` of ``feed``.

    Returns:
        The :class:`StaticArtefacts`.
    """
    version = version or compute_feed_version(feed)
    shapes = build_shape_table(feed)
    stops = _build_stops(feed)
    has_st = feed.stop_times is not None and not feed.stop_times.empty
    ordered = order_stop_times(feed.stop_times) if has_st else None
    patterns = compute_stop_patterns(ordered) if ordered is not None else None
    trips = _build_trips(feed, shapes, patterns)
    stop_dist, stop_times = _empty_stop_dist(), None
    if ordered is not None:
        stop_dist = compute_stop_distances(ordered, trips, stops, shapes)
        stop_times = build_stop_times(ordered, trips, stop_dist)
    art = StaticArtefacts(
        version, shapes, trips, stop_dist, stop_times, stops, _build_routes(feed),
        timezone=read_timezone(feed),
    )  # fmt: skip
    logger.info(
        "static %s: %d shapes (%d from stops), %d trips, %d stop distances",
        version,
        len(shapes),
        int(shapes.from_stops.sum()),
        len(trips),
        len(stop_dist),
    )
    return assign_line_keys(art, line_key_mode)


def read_timezone(feed: Any) -> str | None:
    """Return the feed's ``agency_timezone`` (the first; a warning when agencies disagree)."""
    agency = feed.agency
    if agency is None or "agency_timezone" not in agency.columns:
        return None
    zones = agency["agency_timezone"].dropna().astype(str).str.strip()
    zones = zones[zones != ""].unique().tolist()
    if len(zones) > 1:
        logger.warning("agencies disagree on agency_timezone %s; using %s", zones, zones[0])
    return str(zones[0]) if zones else None


def _empty_stop_dist() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "shape_id": pd.Series(dtype="string"),
            "pattern_id": pd.Series(dtype="string"),
            "stop_index": pd.Series(dtype="int64"),
            "stop_sequence": pd.Series(dtype="Int32"),
            "stop_id": pd.Series(dtype="string"),
            "dist_m": pd.Series(dtype="float64"),
            "offset_m": pd.Series(dtype="float64"),
            "dist_source": pd.Series(dtype="string"),
        }
    )


def cache_dir_for(cache_dir: Path, version: str) -> Path:
    """Return ``<cache_dir>/static/<version>`` with unsafe characters replaced by ``_``."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", version).strip(".") or "_"
    return Path(cache_dir) / "static" / safe


def _write_parquet(path: Path, df: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False)
    write_with_atomic(path, lambda fh: pq.write_table(table, fh))


def _shape_frames(shapes: ShapeTable) -> tuple[pd.DataFrame, pd.DataFrame]:
    sdt = (
        shapes.dist_traveled if shapes.dist_traveled is not None else np.full(len(shapes.x), np.nan)
    )
    vertices = pd.DataFrame(
        {"x": shapes.x, "y": shapes.y, "cum_m": shapes.cum_m, "dist_traveled": sdt}
    )
    index = pd.DataFrame(
        {
            "shape_id": pd.array(shapes.shape_ids.astype(str), dtype="string"),
            "start": shapes.offsets[:-1],
            "stop": shapes.offsets[1:],
            "from_stops": shapes.from_stops,
        }
    )
    return vertices, index


def write_artefacts(
    art: StaticArtefacts, directory: Path, *, content_hash: str | None = None
) -> None:
    """Write artefacts as Parquet files plus ``artefacts.json`` (last), each atomically."""
    (directory / META_FILE).unlink(missing_ok=True)
    vertices, index = _shape_frames(art.shapes)
    frames = {
        "shape_vertices": vertices,
        "shape_index": index,
        "trips": art.trips,
        "stop_dist": art.stop_dist,
        "stops": art.stops,
        "routes": art.routes,
    }
    if art.stop_times is not None:
        frames["stop_times"] = art.stop_times
    for name, df in frames.items():
        _write_parquet(directory / f"{name}.parquet", df)
    meta = {
        "format": CACHE_FORMAT,
        "version": art.version,
        "content_hash": content_hash,
        "crs": art.shapes.crs,
        "line_key_mode": art.line_key_mode,
        "timezone": art.timezone,
        "has_stop_times": art.stop_times is not None,
        "n_shapes": len(art.shapes),
        "n_trips": len(art.trips),
        "built_at": datetime.now(UTC).isoformat(),
    }
    write_text_atomic(directory / META_FILE, json.dumps(meta, indent=2))


def _read_parquet(directory: Path, name: str) -> pd.DataFrame:
    df: pd.DataFrame = pq.read_table(directory / f"{name}.parquet").to_pandas()
    return df


def _read_shapes(directory: Path, crs: str) -> ShapeTable:
    vertices = _read_parquet(directory, "shape_vertices")
    index = _read_parquet(directory, "shape_index")
    return ShapeTable(
        shape_ids=np.asarray(index["shape_id"].astype(str), dtype=object),
        offsets=np.append(index["start"].to_numpy(np.int64), len(vertices)).astype(np.int64),
        x=vertices["x"].to_numpy(np.float64),
        y=vertices["y"].to_numpy(np.float64),
        cum_m=vertices["cum_m"].to_numpy(np.float64),
        crs=crs,
        from_stops=index["from_stops"].to_numpy(bool),
        dist_traveled=vertices["dist_traveled"].to_numpy(np.float64),
    )


def read_artefacts(directory: Path) -> StaticArtefacts:
    """Read artefacts written by :func:`write_artefacts`.

    Raises:
        FileNotFoundError: When ``artefacts.json`` (written last) is absent.
    """
    meta = json.loads((directory / META_FILE).read_text())
    tables = {n: _read_parquet(directory, n) for n in ("trips", "stop_dist", "stops", "routes")}
    return StaticArtefacts(
        version=str(meta["version"]),
        shapes=_read_shapes(directory, str(meta["crs"])),
        stop_times=_read_parquet(directory, "stop_times") if meta["has_stop_times"] else None,
        line_key_mode=str(meta["line_key_mode"]),
        timezone=meta.get("timezone"),
        **tables,
    )


def _cached_meta(directory: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((directory / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def load_or_build_artefacts(
    static_path: str | Path, cache_dir: Path, *, line_key_mode: str = "route"
) -> StaticArtefacts:
    """Load a feed's artefacts from the cache, building and caching them on a miss.

    Args:
        static_path: Zip, folder or URL of the static feed.
        cache_dir: Root of the cache; artefacts go to ``cache_dir/static/<version>/``.
        line_key_mode: Line key mode (recomputed on load; it never forces a rebuild).

    Returns:
        The :class:`StaticArtefacts`.

    Raises:
        transitnet.gtfs.feeds.StaticFeedError: When the feed cannot be read.
    """
    with open_static_source(static_path) as local:
        version = compute_feed_version(local)
        content = compute_content_hash(local)
        directory = cache_dir_for(cache_dir, version)
        meta = _cached_meta(directory)
        if meta and meta.get("format") == CACHE_FORMAT and meta.get("version") == version:
            if meta.get("content_hash") == content:
                logger.info("static %s: loading cached artefacts from %s", version, directory)
                art = read_artefacts(directory)
                return (
                    art
                    if art.line_key_mode == line_key_mode
                    else assign_line_keys(art, line_key_mode)
                )
            logger.warning("static %s: content changed under the same version; rebuilding", version)
        art = build_artefacts(read_static_feed(local), line_key_mode=line_key_mode, version=version)
    write_artefacts(art, directory, content_hash=content)
    return art
