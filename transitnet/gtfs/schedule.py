"""Stop positions along shapes and scheduled stop times in seconds.

Stop distances (``dist_m``) are computed once per distinct (shape, stop pattern):

1. ``shape_dist_traveled`` when both ``stop_times.txt`` and ``shapes.txt`` carry it: the
   stop's value is interpolated between the shape vertices' values onto the metric
   ``cum_m`` (unit-free, exact at vertices);
2. ``shape_dist_traveled`` only in ``stop_times.txt``: converted to metres with the unit
   detected by comparing its maximum to the metric shape length (m, km, mi or ft);
3. otherwise a loop-safe projection in stop order (:func:`locate_in_order`).

A result whose median stop offset exceeds :data:`MAX_MEDIAN_OFFSET_M` is rejected for the
next method, so inconsistent ``shape_dist_traveled`` never silently wins. The method used
is recorded per row in ``dist_source``.
"""

from __future__ import annotations

import logging
from typing import cast

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from transitnet.gtfs.shapes import ShapeTable, interpolate_xy, project_lonlat

logger = logging.getLogger(__name__)

#: Metres per unit of ``shape_dist_traveled`` that unit detection snaps to (m, km, mi, ft).
KNOWN_UNITS_M: tuple[float, ...] = (1.0, 1000.0, 1609.344, 0.3048)
#: A stop-distance method whose median stop offset is larger than this is rejected.
MAX_MEDIAN_OFFSET_M = 100.0
#: Tie-breaker: metres of cost per metre of progress, so ties go to the earliest position.
_PROGRESS_PENALTY = 1e-4
#: Consecutive stops must lie this share of their straight-line distance apart along the shape.
_MIN_PROGRESS_SHARE = 0.5

STOP_DIST_COLUMNS: tuple[str, ...] = (
    "shape_id",
    "pattern_id",
    "stop_index",
    "stop_sequence",
    "stop_id",
    "dist_m",
    "offset_m",
    "dist_source",
)


def parse_gtfs_times(times: pd.Series) -> np.ndarray:
    """Parse GTFS ``H:MM:SS`` times to float64 seconds after service-day noon minus 12 h.

    Times past 24:00 stay as they are (e.g. ``25:10:00`` is 90600). Missing values and
    malformed strings give NaN; malformed ones are counted in a warning.
    """
    text = times.astype("string").str.strip()
    parts = text.str.extract(r"^(\d{1,3}):([0-5]\d):([0-5]\d)$")
    nums = parts.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    seconds = nums[:, 0] * 3600 + nums[:, 1] * 60 + nums[:, 2]
    malformed = text.notna().to_numpy() & (text != "").fillna(False).to_numpy() & np.isnan(seconds)
    if malformed.any():
        examples = text[malformed].unique()[:3].tolist()
        logger.warning(
            "stop_times.txt: %d malformed times read as missing, e.g. %s",
            int(malformed.sum()),
            examples,
        )
    return np.asarray(seconds, dtype=np.float64)


def locate_in_order(
    px: np.ndarray, py: np.ndarray, sx: np.ndarray, sy: np.ndarray, scum: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Place points visited in order on one polyline, keeping distance increasing.

    A dynamic programme picks one position per point, minimising the summed cross-track
    offsets, such that each point lies at least half its straight-line distance from the
    previous point further along the shape (falling back to mere non-decreasing order
    when no placement satisfies that). The last stop of a loop lands at its end, and the
    inbound stops of an out-and-back on the inbound leg, even opposite an outbound stop.

    Args:
        px: (n,) point eastings, metres (NaN points are skipped and give NaN).
        py: (n,) point northings.
        sx: (m+1,) shape vertex eastings.
        sy: (m+1,) shape vertex northings.
        scum: (m+1,) cumulative distance at each vertex.

    Returns:
        ``(dist_m, offset_m)`` per point.
    """
    dist, off = np.full(len(px), np.nan), np.full(len(px), np.nan)
    valid = np.isfinite(px) & np.isfinite(py)
    if not valid.any():
        return dist, off
    qx, qy = px[valid], py[valid]
    ax, ay, dx, dy = sx[:-1], sy[:-1], np.diff(sx), np.diff(sy)
    len2 = dx * dx + dy * dy
    rx, ry = qx[:, None] - ax, qy[:, None] - ay
    t = np.clip((rx * dx + ry * dy) / np.where(len2 > 0, len2, 1.0), 0.0, 1.0)
    offsets = np.hypot(rx - t * dx, ry - t * dy)
    pos = scum[:-1] + t * np.diff(scum)
    gaps = _MIN_PROGRESS_SHARE * np.concatenate([[0.0], np.hypot(np.diff(qx), np.diff(qy))])
    cost = offsets + _PROGRESS_PENALTY * pos
    seg = _monotone_path(cost, pos, gaps)
    if seg is None:
        seg = _monotone_path(cost, pos, np.zeros(len(gaps)))
    rows = np.arange(len(qx))
    chosen = pos[rows, seg] if seg is not None else np.full(len(qx), np.nan)
    dist[valid] = np.fmax.accumulate(chosen)
    off[valid] = offsets[rows, seg] if seg is not None else np.nan
    return dist, off


def _monotone_path(cost: np.ndarray, pos: np.ndarray, gaps: np.ndarray) -> np.ndarray | None:
    """Return the min-cost segment per row with ``pos`` advancing by ``gaps``; None if none."""
    n, m = cost.shape
    back = np.zeros((n, m), dtype=np.int64)
    total = cost[0].copy()
    for i in range(1, n):
        prefix = np.minimum.accumulate(total)
        first = np.ones(m, dtype=bool)
        first[1:] = total[1:] < prefix[:-1]
        argmin = np.maximum.accumulate(np.where(first, np.arange(m), 0))
        last_ok = np.searchsorted(pos[i - 1], pos[i] - gaps[i], side="right") - 1
        k = np.maximum(last_ok, 0)
        back[i] = argmin[k]
        total = cost[i] + np.where(last_ok >= 0, prefix[k], np.inf)
    if not np.isfinite(total).any():
        return None
    path = np.empty(n, dtype=np.int64)
    path[-1] = int(np.argmin(total))
    for i in range(n - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    return path


def _offsets(
    table: ShapeTable, s: int, dist: np.ndarray, px: np.ndarray, py: np.ndarray
) -> np.ndarray:
    qx, qy = interpolate_xy(table, np.full(len(dist), s), dist)
    return np.asarray(np.hypot(qx - px, qy - py), dtype=np.float64)


def _acceptable(offsets: np.ndarray) -> bool:
    finite = offsets[np.isfinite(offsets)]
    return bool(len(finite)) and float(np.median(finite)) <= MAX_MEDIAN_OFFSET_M


def _from_dist_traveled(table: ShapeTable, s: int, sdt: np.ndarray) -> np.ndarray | None:
    lo, hi = table.offsets[s], table.offsets[s + 1]
    length = float(table.cum_m[hi - 1])
    if not np.isfinite(sdt).all() or not len(sdt):
        return None
    shape_sdt = None if table.dist_traveled is None else table.dist_traveled[lo:hi]
    if shape_sdt is not None and np.isfinite(shape_sdt).all() and (np.diff(shape_sdt) >= 0).all():
        return np.asarray(np.interp(sdt, shape_sdt, table.cum_m[lo:hi]), dtype=np.float64)
    top = float(np.max(sdt))
    if top <= 0:
        return None
    ratio = length / top
    unit = min(KNOWN_UNITS_M, key=lambda u: abs(np.log(ratio / u)))
    if abs(np.log(ratio / unit)) > np.log(1.15):
        return None
    return np.asarray(np.clip(sdt * unit, 0.0, length), dtype=np.float64)


def _locate_group(
    table: ShapeTable, s: int, px: np.ndarray, py: np.ndarray, sdt: np.ndarray
) -> tuple[np.ndarray, np.ndarray, str]:
    if s < 0:
        nan = np.full(len(px), np.nan)
        return nan, nan, "no_shape"
    dist = _from_dist_traveled(table, s, sdt)
    if dist is not None:
        off = _offsets(table, s, dist, px, py)
        if _acceptable(off):
            return dist, off, "shape_dist_traveled"
    lo, hi = table.offsets[s], table.offsets[s + 1]
    dist, off = locate_in_order(px, py, table.x[lo:hi], table.y[lo:hi], table.cum_m[lo:hi])
    return dist, off, "stops_polyline" if table.from_stops[s] else "projection"


def compute_stop_distances(
    ordered: pd.DataFrame, trips: pd.DataFrame, stops: pd.DataFrame, table: ShapeTable
) -> pd.DataFrame:
    """Place every stop of every distinct (shape, stop pattern) along its shape.

    Args:
        ordered: Stop times from :func:`transitnet.gtfs.shapes.order_stop_times`
            (``trip_id, stop_index, stop_sequence, stop_id[, shape_dist_traveled]``).
        trips: ``trip_id, shape_id, pattern_id``.
        stops: ``stop_id, lat, lon``.
        table: The feed's shapes.

    Returns:
        :data:`STOP_DIST_COLUMNS`: one row per stop of each (shape_id, pattern_id), with
        ``dist_m`` and ``offset_m`` in metres (NaN when the stop has no coordinates or the
        shape is unknown) and ``dist_source`` in {``shape_dist_traveled``, ``projection``,
        ``stops_polyline``, ``no_shape``}.
    """
    rows = _representative_stops(ordered, trips, stops)
    px, py = project_lonlat(
        table.crs,
        rows["lon"].to_numpy(np.float64, na_value=np.nan),
        rows["lat"].to_numpy(np.float64, na_value=np.nan),
    )
    sdt = rows["shape_dist_traveled"].to_numpy(np.float64, na_value=np.nan)
    dist, off = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
    source = np.empty(len(rows), dtype=object)
    groups = rows.groupby(["shape_id", "pattern_id"], sort=False).indices
    shape_rows = table.index_of(np.array([cast(tuple[str, str], k)[0] for k in groups], object))
    bar = tqdm(total=len(groups), desc="stop distances", disable=len(groups) < 500)
    for s, ix in zip(shape_rows, groups.values(), strict=True):
        dist[ix], off[ix], source[ix] = _locate_group(table, int(s), px[ix], py[ix], sdt[ix])
        bar.update()
    bar.close()
    out = rows[["shape_id", "pattern_id", "stop_index", "stop_sequence", "stop_id"]].copy()
    out["dist_m"], out["offset_m"] = dist, off
    out["dist_source"] = pd.array(source, dtype="string")
    return out[list(STOP_DIST_COLUMNS)]


def _representative_stops(
    ordered: pd.DataFrame, trips: pd.DataFrame, stops: pd.DataFrame
) -> pd.DataFrame:
    """Return the stops of one trip per (shape_id, pattern_id), in order, with coordinates."""
    keys = ["shape_id", "pattern_id"]
    reps = trips.dropna(subset=keys).drop_duplicates(keys)[["trip_id", *keys]]
    cols = ["trip_id", "stop_index", "stop_sequence", "stop_id"]
    rows = ordered.reindex(columns=[*cols, "shape_dist_traveled"])
    rows = rows.merge(reps, on="trip_id").merge(
        stops[["stop_id", "lat", "lon"]], on="stop_id", how="left"
    )
    rows = rows.sort_values([*keys, "stop_index"], kind="stable")
    return rows.reset_index(drop=True)


def build_stop_times(
    ordered: pd.DataFrame, trips: pd.DataFrame, stop_dist: pd.DataFrame
) -> pd.DataFrame:
    """Return scheduled stop times in seconds with each stop's distance along the shape.

    Args:
        ordered: Stop times from :func:`transitnet.gtfs.shapes.order_stop_times`
            (``trip_id, stop_index, stop_sequence, stop_id, arrival_time, departure_time``).
        trips: ``trip_id, shape_id, pattern_id``.
        stop_dist: Output of :func:`compute_stop_distances`.

    Returns:
        ``trip_id, stop_sequence, stop_index, stop_id, arrival_s, departure_s, dist_m``;
        times are float64 seconds after service-day noon minus 12 h (NaN when not given,
        trips past 24:00 kept), ``dist_m`` NaN when the trip has no shape.
    """
    out = pd.DataFrame(
        {
            "trip_id": ordered["trip_id"].astype("string"),
            "stop_sequence": ordered["stop_sequence"].astype("Int64"),
            "stop_index": ordered["stop_index"].astype(np.int64),
            "stop_id": ordered["stop_id"].astype("string"),
            "arrival_s": parse_gtfs_times(ordered["arrival_time"]),
            "departure_s": parse_gtfs_times(ordered["departure_time"]),
        }
    )
    keys = trips[["trip_id", "shape_id", "pattern_id"]]
    dists = stop_dist[["shape_id", "pattern_id", "stop_index", "dist_m"]]
    out = out.merge(keys, on="trip_id", how="left").merge(
        dists, on=["shape_id", "pattern_id", "stop_index"], how="left"
    )
    return out.drop(columns=["shape_id", "pattern_id"]).reset_index(drop=True)
