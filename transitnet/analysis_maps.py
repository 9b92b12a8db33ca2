"""Folium maps of trips and shapes, saved as standalone HTML.

Building a map needs no network: the HTML names its tile server and JavaScript
libraries, which load when a person opens the file (``tiles=None`` leaves the base map
out altogether).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import folium
import numpy as np
import pandas as pd

from transitnet.gtfs.artefacts import StaticArtefacts
from transitnet.gtfs.shapes import unproject_xy, valid_lonlat
from transitnet.store.atomic import write_text_atomic

logger = logging.getLogger(__name__)

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
           "#e377c2", "#7f7f7f", "#bcbd22")  # fmt: skip


def pick_trips(positions: pd.DataFrame, n: int = 5) -> list[str]:
    """The ``n`` trips with the most valid fixes (ties by trip id).

    Columns in: ``trip_id, latitude, longitude``.
    """
    ok = valid_lonlat(positions["longitude"].to_numpy(dtype=float, na_value=np.nan),
                      positions["latitude"].to_numpy(dtype=float, na_value=np.nan))  # fmt: skip
    counts = positions.loc[ok, "trip_id"].dropna().astype(str).value_counts()
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [trip for trip, _ in ranked[:n]]


def build_trip_map(
    positions: pd.DataFrame,
    trip_ids: Sequence[str],
    *,
    art: StaticArtefacts | None = None,
    timezone: str = "UTC",
    tiles: str | None = "OpenStreetMap",
) -> folium.Map:
    """A map of the fixes of ``trip_ids``, one colour and layer per trip.

    Args:
        positions: ``trip_id, latitude, longitude, vehicle_timestamp``; optional
            ``vehicle_id``, ``match_status``, ``offset_m``, ``dist_along_m`` (shown in
            tooltips) and ``shape_id`` (with ``art``: the trip's shape is drawn, dashed).
        trip_ids: Trips to draw.
        art: Static artefacts whose shapes to draw.
        timezone: Zone of the times shown in tooltips.
        tiles: Folium tile layer name, or None for no base map.

    Returns:
        The map; positions missing, out of range or at (0, 0) are left out (logged).

    Raises:
        ValueError: when none of ``trip_ids`` has a valid fix.
    """
    rows = positions[positions["trip_id"].astype("string").isin(list(trip_ids)).fillna(False)]
    lat = rows["latitude"].to_numpy(dtype=float, na_value=np.nan)
    lon = rows["longitude"].to_numpy(dtype=float, na_value=np.nan)
    ok = valid_lonlat(lon, lat)
    if (~ok).any():
        logger.info("%d fixes without a valid position are not drawn", int((~ok).sum()))
    rows = rows[ok]
    if rows.empty:
        raise ValueError(f"no valid fix for trips {list(trip_ids)}")
    fmap = folium.Map(tiles=tiles, control_scale=True)
    for i, (trip, group) in enumerate(rows.groupby(rows["trip_id"].astype(str), sort=True)):
        colour = PALETTE[i % len(PALETTE)]
        layer = folium.FeatureGroup(name=f"trip {trip}")
        if art is not None and "shape_id" in group:
            _add_shapes(layer, art, list(group["shape_id"].dropna().astype(str).unique()), colour)
        _add_fixes(layer, group.sort_values("vehicle_timestamp"), colour, timezone)
        layer.add_to(fmap)
    folium.LayerControl(collapsed=False).add_to(fmap)
    fmap.fit_bounds([[float(rows["latitude"].min()), float(rows["longitude"].min())],
                     [float(rows["latitude"].max()), float(rows["longitude"].max())]])  # fmt: skip
    return fmap


def _add_fixes(layer: folium.FeatureGroup, group: pd.DataFrame, colour: str, tz: str) -> None:
    points = group[["latitude", "longitude"]].to_numpy(dtype=float).tolist()
    line = folium.PolyLine(points, color=colour, weight=2, opacity=0.7)  # type: ignore[no-untyped-call]
    line.add_to(layer)
    times = group["vehicle_timestamp"].dt.tz_convert(tz).dt.strftime("%H:%M:%S")
    for point, (_, row), when in zip(points, group.iterrows(), times, strict=True):
        folium.CircleMarker(point, radius=3, color=colour, fill=True, fill_opacity=0.9,
                            tooltip=_tooltip(row, str(when))).add_to(layer)  # fmt: skip


def _tooltip(row: pd.Series, when: str) -> str:
    parts = [f"{when}"]
    for column, unit in (("vehicle_id", ""), ("match_status", ""), ("dist_along_m", " m"),
                         ("offset_m", " m off shape")):  # fmt: skip
        value = row.get(column)
        if value is not None and not pd.isna(value):
            parts.append(f"{value:.0f}{unit}" if isinstance(value, float) else f"{value}{unit}")
    return " · ".join(parts)


def _add_shapes(layer: folium.FeatureGroup, art: StaticArtefacts, shape_ids: Sequence[str],
                colour: str) -> None:  # fmt: skip
    table = art.shapes
    for shape_id, row in zip(shape_ids, table.index_of(list(shape_ids)), strict=True):
        if row < 0:
            logger.info("shape %s is not in static version %s; not drawn", shape_id, art.version)
            continue
        lon, lat = shape_lonlat(art, int(row))
        points = np.column_stack([lat, lon]).tolist()
        folium.PolyLine(  # type: ignore[no-untyped-call]
            points, color=colour, weight=4, opacity=0.35, dash_array="8 6",
            tooltip=f"shape {shape_id}",
        ).add_to(layer)  # fmt: skip


def shape_lonlat(art: StaticArtefacts, row: int) -> tuple[np.ndarray, np.ndarray]:
    """WGS 84 (lon, lat) vertices of shape row ``row`` of ``art.shapes``."""
    table = art.shapes
    lo, hi = int(table.offsets[row]), int(table.offsets[row + 1])
    return unproject_xy(table.crs, table.x[lo:hi], table.y[lo:hi])


def save_map(fmap: folium.Map, path: Path) -> Path:
    """Write ``fmap`` as a standalone HTML file at ``path``, atomically; returns ``path``."""
    write_text_atomic(Path(path), fmap.get_root().render())
    return Path(path)
