"""Forecast outputs: positions on the shape, next downstream stops, arrival times.

A forecast says how many metres a vehicle will travel along its shape from its anchor fix
at each horizon. These functions turn that into what riders and maps use:

- :func:`compute_forecast_lonlat`: WGS 84 positions of the forecasts, interpolated on the
  shape (clamped to its ends, NaN where the shape is unknown);
- :func:`find_next_stops`: the next stops downstream of each anchor on its trip's stop
  pattern, with their distance ahead;
- :func:`compute_arrival_offsets`: when the forecast curve first reaches each of those
  distances (seconds after the anchor).

Pure numpy/pandas: no torch, no Lightning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from transitnet.gtfs.artefacts import StaticArtefacts
from transitnet.gtfs.shapes import ShapeTable, interpolate_lonlat

logger = logging.getLogger(__name__)

#: Columns of :func:`find_next_stops`' result, in order.
NEXT_STOP_COLUMNS: tuple[str, ...] = (
    "window",
    "stop_rank",
    "stop_id",
    "stop_sequence",
    "stop_index",
    "ahead_m",
    "pattern_via",
)
_SEP = "\x1f"


def compute_forecast_lonlat(
    shapes: ShapeTable, shape_id: Any, anchor_dist_m: Any, travelled_m: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Return the (lon, lat) of forecasts placed on their shapes.

    Args:
        shapes: The metric shapes (``StaticArtefacts.shapes``).
        shape_id: ``(N,)`` shape id of each window (Series or array; null allowed).
        anchor_dist_m: ``(N,)`` distance along the shape at the anchor fix, metres.
        travelled_m: ``(N, ...)`` metres travelled from the anchor, e.g. ``(N, H)`` or
            ``(N, H, Q)``.

    Returns:
        ``lon, lat`` float64 arrays shaped like ``travelled_m``. Positions are clamped to
        the shape's ends; NaN where the shape id is unknown or null, or where the anchor
        distance or the forecast is NaN.

    Raises:
        ValueError: When the leading dimensions disagree.
    """
    travelled = np.asarray(travelled_m, dtype=np.float64)
    anchor = np.asarray(anchor_dist_m, dtype=np.float64)
    idx = shapes.index_of(shape_id)
    if anchor.ndim != 1 or travelled.ndim < 1 or not len(idx) == len(anchor) == len(travelled):
        raise ValueError(
            f"shape_id ({len(idx)},), anchor_dist_m {anchor.shape} and travelled_m "
            f"{travelled.shape} must share their first dimension N"
        )
    expand = (slice(None),) + (None,) * (travelled.ndim - 1)
    dist = anchor[expand] + travelled
    rows = np.broadcast_to(idx[expand], dist.shape)
    lon, lat = interpolate_lonlat(shapes, rows.ravel(), dist.ravel())
    return lon.reshape(dist.shape), lat.reshape(dist.shape)


def check_horizons(horizons_s: Sequence[int]) -> np.ndarray:
    """Return the horizons as float64 seconds.

    Raises:
        ValueError: Unless they are positive and strictly increasing.
    """
    h = np.asarray(horizons_s, dtype=np.float64)
    if h.ndim != 1 or len(h) == 0 or not np.all(h > 0) or np.any(np.diff(h) <= 0):
        raise ValueError(f"horizons_s must be positive and increasing, got {list(horizons_s)}")
    return h


def compute_arrival_offsets(
    horizons_s: Sequence[int], travelled_m: Any, ahead_m: Any
) -> np.ndarray:
    """Return when each forecast curve first reaches each distance ahead, in seconds.

    The curve of window ``n`` passes through (0 s, 0 m) and (``horizons_s[h]``,
    ``travelled_m[n, h]``), made monotone non-decreasing (running maximum), and is
    linear between these knots.

    Args:
        horizons_s: ``(H,)`` positive, increasing horizons in seconds.
        travelled_m: ``(N, H)`` metres travelled from the anchor at each horizon.
        ahead_m: ``(N, S)`` distances ahead of the anchor, metres (e.g. to the next stops).

    Returns:
        ``(N, S)`` float64 seconds after the anchor: 0 where ``ahead_m <= 0`` (already
        there or passed), NaN where the curve never reaches the distance by the last
        horizon, where ``ahead_m`` is NaN, or past a NaN forecast knot.

    Raises:
        ValueError: For bad horizons or mismatched shapes.
    """
    h = check_horizons(horizons_s)
    travelled = np.asarray(travelled_m, dtype=np.float64)
    ahead = np.asarray(ahead_m, dtype=np.float64)
    if travelled.ndim != 2 or travelled.shape[1] != len(h):
        raise ValueError(f"travelled_m must be (N, {len(h)}), got {travelled.shape}")
    if ahead.ndim != 2 or ahead.shape[0] != travelled.shape[0]:
        raise ValueError(f"ahead_m must be (N={travelled.shape[0]}, S), got {ahead.shape}")
    zeros = np.zeros((len(travelled), 1))
    # running maximum; a NaN knot makes every later knot NaN (never "reached")
    knots_d = np.maximum.accumulate(np.concatenate([zeros, travelled], axis=1), axis=1)
    knots_t = np.concatenate([[0.0], h])
    with np.errstate(invalid="ignore"):
        reached = knots_d[:, None, :] >= ahead[:, :, None]
    found = reached.any(axis=2)
    k = np.maximum(reached.argmax(axis=2), 1)
    d0 = np.take_along_axis(knots_d, k - 1, axis=1)
    d1 = np.take_along_axis(knots_d, k, axis=1)
    t0, t1 = knots_t[k - 1], knots_t[k]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = t0 + (ahead - d0) / (d1 - d0) * (t1 - t0)
    out = np.where(found & (ahead > 0), t, np.nan)
    return np.where(ahead <= 0, 0.0, out)


def _group_keys(shape_id: pd.Series, pattern_id: pd.Series) -> np.ndarray:
    """Return ``shape<SEP>pattern`` keys as an object array (None where either is null)."""
    s = shape_id.astype("string")
    p = pattern_id.astype("string")
    keys = (s + _SEP + p).astype(object)
    return np.asarray(keys.where(keys.notna(), None).to_numpy(), dtype=object)


def _stop_groups(stop_dist: pd.DataFrame) -> tuple[pd.DataFrame, pd.Index, np.ndarray]:
    """Stops sorted by (group, stop_index), the group keys, and group offsets ``(G+1,)``."""
    usable = stop_dist.dropna(subset=["shape_id", "pattern_id", "dist_m"])
    if len(usable) < len(stop_dist):
        logger.info("%d stop distances without a shape, pattern or distance left out",
                    len(stop_dist) - len(usable))  # fmt: skip
    keys = _group_keys(usable["shape_id"], usable["pattern_id"])
    codes, uniques = pd.factorize(keys)
    stops = usable.assign(group=codes).sort_values(["group", "stop_index"], kind="stable")
    offsets = np.searchsorted(stops["group"].to_numpy(), np.arange(len(uniques) + 1))
    return stops.reset_index(drop=True), pd.Index(uniques), offsets


def _first_stop_ahead(
    stops: pd.DataFrame, offsets: np.ndarray, group: np.ndarray, dist: np.ndarray
) -> np.ndarray:
    """Row of the first stop of ``group`` whose distance exceeds ``dist`` (-1: none)."""
    g_of_row = stops["group"].to_numpy()
    mono = stops.groupby("group", sort=False)["dist_m"].cummax().to_numpy(np.float64)
    mono = np.maximum(mono, 0.0)
    span = np.zeros(len(offsets) - 1)
    np.maximum.at(span, g_of_row, mono)
    base = np.concatenate([[0.0], np.cumsum(span + 1.0)])
    key = base[g_of_row] + mono
    ok = (group >= 0) & np.isfinite(dist)
    g = np.where(ok, group, 0)
    # keep each search inside its own group's key range [base[g], base[g] + span[g] + 1)
    d = np.clip(np.where(ok, dist, 0.0), -0.5, span[g] + 0.5)
    pos = np.maximum(np.searchsorted(key, base[g] + d, side="right"), offsets[g])
    inside = ok & (pos < offsets[g + 1])
    return np.where(inside, pos, -1).astype(np.int64)


def find_next_stops(
    meta: pd.DataFrame, artefacts: StaticArtefacts, n_stops: int = 3
) -> pd.DataFrame:
    """Find the next ``n_stops`` stops downstream of each window's anchor.

    A window's stops are those of its trip's stop pattern on the window's shape
    (``artefacts.stop_dist`` for that (shape, pattern)), in stop order. When the trip is
    not in the static feed (realtime trip ids of another feed version, matched to a
    shape by variant), the pattern most trips on that shape follow is used instead, and
    ``pattern_via`` says so. The first stop is the
    first whose distance along the shape exceeds ``dist_along_m`` (distances are taken
    as a running maximum for the search, so a stop placed out of order cannot hide the
    ones after it).

    Args:
        meta: One row per window; columns ``trip_id``, ``shape_id``, ``dist_along_m``.
        artefacts: Static artefacts with ``trips`` (``trip_id, pattern_id``) and
            ``stop_dist`` (``shape_id, pattern_id, stop_index, stop_sequence, stop_id,
            dist_m``).
        n_stops: Stops per window (>= 1).

    Returns:
        ``N * n_stops`` rows ordered by window then rank, so that
        ``frame["ahead_m"].to_numpy().reshape(N, n_stops)`` is the matrix of distances:
        ``window`` (int64 row of ``meta``), ``stop_rank`` (1..n_stops), ``stop_id``
        (string), ``stop_sequence`` (Int32), ``stop_index`` (Int64), ``ahead_m``
        (float64, stop distance minus ``dist_along_m``), ``pattern_via`` (string:
        ``trip``, ``shape`` or null). Windows with no stop pattern on their shape, or
        with fewer stops left, get nulls (NaN ``ahead_m``).

    Raises:
        ValueError: When a column is missing or ``n_stops < 1``.
    """
    missing = sorted({"trip_id", "shape_id", "dist_along_m"} - set(meta.columns))
    if missing:
        raise ValueError(f"find_next_stops: meta lacks columns {missing}")
    if n_stops < 1:
        raise ValueError(f"n_stops must be >= 1, got {n_stops}")
    stops, groups, offsets = _stop_groups(artefacts.stop_dist)
    group, via = _window_groups(meta, artefacts, groups)
    dist = pd.to_numeric(meta["dist_along_m"]).to_numpy(dtype=np.float64, na_value=np.nan)
    first = np.full(len(meta), -1, dtype=np.int64)
    if len(stops):
        first = _first_stop_ahead(stops, offsets, group, dist)
    out = _gather_next_stops(stops, offsets, group, first, dist, n_stops)
    out["pattern_via"] = pd.Series(np.repeat(via, n_stops), dtype="string")
    return out


def _shape_patterns(artefacts: StaticArtefacts) -> pd.Series:
    """Shape id → the stop pattern most trips on that shape follow (ties: smallest id)."""
    trips = artefacts.trips.dropna(subset=["shape_id", "pattern_id"])
    counts = trips.groupby(["shape_id", "pattern_id"]).size().rename("n").reset_index()
    counts = counts.sort_values(["shape_id", "n", "pattern_id"], ascending=[True, False, True])
    best = counts.drop_duplicates("shape_id")
    return pd.Series(
        best["pattern_id"].astype(object).to_numpy(), index=best["shape_id"].astype(object)
    )


def _pair_groups(
    pairs: pd.DataFrame, artefacts: StaticArtefacts, groups: pd.Index
) -> tuple[np.ndarray, np.ndarray]:
    """(shape, pattern) group (-1: none) and pattern source of ``trip_id, shape_id`` rows."""
    shape = pairs["shape_id"].reset_index(drop=True)
    trips = artefacts.trips.drop_duplicates("trip_id")
    lookup = pd.Series(
        trips["pattern_id"].astype(object).to_numpy(), index=trips["trip_id"].astype(object)
    )
    by_trip_pattern = pairs["trip_id"].reset_index(drop=True).map(lookup)
    by_trip = groups.get_indexer(pd.Index(_group_keys(shape, by_trip_pattern)))
    by_shape_pattern = shape.map(_shape_patterns(artefacts))
    by_shape = groups.get_indexer(pd.Index(_group_keys(shape, by_shape_pattern)))
    group = np.where(by_trip >= 0, by_trip, by_shape).astype(np.int64)
    via = pd.Series(np.where(by_trip >= 0, "trip", "shape"), dtype="string")
    return group, np.asarray(via.where(pd.Series(group >= 0)).to_numpy(), dtype=object)


def _window_groups(
    meta: pd.DataFrame, artefacts: StaticArtefacts, groups: pd.Index
) -> tuple[np.ndarray, np.ndarray]:
    """Each window's (shape, pattern) group (-1: none) and where its pattern came from.

    Looked up once per distinct (trip, shape) pair: windows repeat them many times.
    """
    pairs = pd.DataFrame({c: meta[c].astype(object).to_numpy() for c in ("trip_id", "shape_id")})
    trip_code, trip_ids = pd.factorize(pairs["trip_id"], use_na_sentinel=False)
    shape_code, _ = pd.factorize(pairs["shape_id"], use_na_sentinel=False)
    key = trip_code.astype(np.int64) + shape_code.astype(np.int64) * max(len(trip_ids), 1)
    _, first, codes = np.unique(key, return_index=True, return_inverse=True)
    group, via = _pair_groups(pairs.iloc[np.asarray(first)], artefacts, groups)
    return group[codes], via[codes]


def _gather_next_stops(
    stops: pd.DataFrame,
    offsets: np.ndarray,
    group: np.ndarray,
    first: np.ndarray,
    dist: np.ndarray,
    n_stops: int,
) -> pd.DataFrame:
    """Build the long next-stop frame from the first stop row of every window."""
    n = len(first)
    rank = np.arange(n_stops)
    rows = first[:, None] + rank[None, :]
    end = offsets[np.minimum(np.maximum(group, 0) + 1, len(offsets) - 1)][:, None]
    ok = (first[:, None] >= 0) & (rows < end)
    take = np.where(ok, rows, 0).ravel()
    valid = ok.ravel()

    def pick(column: str, dtype: Any) -> pd.Series:
        if len(stops) == 0:
            empty: pd.Series = pd.Series(index=range(n * n_stops), dtype=dtype)
            return empty
        values: pd.Series = stops[column].astype(dtype).iloc[take].reset_index(drop=True)
        kept: pd.Series = values.where(pd.Series(valid))
        return kept

    ahead = np.where(valid, pick("dist_m", "float64").to_numpy(np.float64), np.nan)
    return pd.DataFrame(
        {
            "window": np.repeat(np.arange(n, dtype=np.int64), n_stops),
            "stop_rank": np.tile(rank + 1, n).astype(np.int64),
            "stop_id": pick("stop_id", "string"),
            "stop_sequence": pick("stop_sequence", "Int32"),
            "stop_index": pick("stop_index", "Int64"),
            "ahead_m": ahead - np.repeat(dist, n_stops),
        }
    )
