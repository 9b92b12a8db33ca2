"""Resolve realtime trips to static shapes across feed-version drift.

Realtime ids often do not match the static version at hand: Auckland's ids carry a
``-<feedversion>`` suffix that changes with every static release, and the Austin 2016
positions reference trips from an older feed. :func:`resolve_trip_shapes` tries, in order:

1. ``trip_id`` exactly in the static trips → ``ok``;
2. ``"suffix"``: the trip_id after id normalisation (e.g. version suffix stripped) names
   exactly one static trip → ``fallback_suffix``;
3. ``"headsign"``: (normalised route_id, trip_headsign) → the group's modal shape →
   ``fallback_headsign``;
4. ``"variant"``: the normalised route_id (a route variant such as Auckland's ``07005``
   when the full id differs) plus the direction when the feed gives one → modal shape →
   ``fallback_variant``;
5. ``"route"``: the same on an exactly matching route_id (e.g. Bull Runner positions that
   carry only a route) → ``fallback_route``.

The headsign step takes the group's modal shape (a headsign fixes the direction). The
route-level steps use a modal shape only when it carries at least ``min_modal_share`` of
the group's trips, so an ambiguous group (both directions of a route, equally common) is
not guessed.
Rows whose resolved shape is a polyline through stops get ``fallback_stops``; a static
trip without any geometry gives ``no_shape``; rows nothing matched give
``trip_not_in_static``. ``resolve_via`` keeps the id step even when the status is
``fallback_stops``, so nothing is silently guessed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from transitnet.gtfs.artefacts import StaticArtefacts
from transitnet.gtfs.lines import (
    DEFAULT_NORMALISERS,
    Normaliser,
    compute_line_keys,
    normalise_ids,
    to_object_array,
)

logger = logging.getLogger(__name__)

#: Fallback steps, tried in this order after the exact trip_id.
FALLBACKS: tuple[str, ...] = ("suffix", "headsign", "variant", "route")
DEFAULT_FALLBACKS: tuple[str, ...] = FALLBACKS
#: Every ``resolve_status`` value.
RESOLVE_STATUSES: tuple[str, ...] = (
    "ok",
    "fallback_suffix",
    "fallback_headsign",
    "fallback_variant",
    "fallback_route",
    "fallback_stops",
    "trip_not_in_static",
    "no_shape",
)
#: Columns added (or replaced) by :func:`resolve_trip_shapes`.
RESOLVE_COLUMNS: tuple[str, ...] = (
    "shape_id",
    "line_key",
    "direction_id",
    "static_version",
    "resolve_status",
    "resolve_via",
    "static_trip_id",
)


def _text(df: pd.DataFrame, column: str) -> pd.Series:
    if column not in df.columns:
        return pd.Series(pd.NA, index=range(len(df)), dtype="string")
    return df[column].astype("string").str.strip().reset_index(drop=True)


def _modal_shapes(trips: pd.DataFrame, keys: list[str], min_share: float) -> pd.DataFrame:
    """Return ``keys + [shape_id, direction_id]``: each key group's modal shape."""
    with_shape = trips.dropna(subset=[*keys, "shape_id"])
    counts = with_shape.groupby([*keys, "shape_id"], dropna=False).size().rename("n").reset_index()
    counts["share"] = counts["n"] / counts.groupby(keys)["n"].transform("sum")
    counts = counts.sort_values(
        [*keys, "n", "shape_id"], ascending=[True] * len(keys) + [False, True]
    )
    modal = counts.drop_duplicates(keys)
    modal = modal[modal["share"] >= min_share]
    if "direction_id" in keys:
        return modal[[*keys, "shape_id"]]
    directions = _shape_directions(trips)
    modal = modal.assign(direction_id=modal["shape_id"].map(directions).astype("Int32"))
    return modal[[*keys, "shape_id", "direction_id"]]


def _shape_directions(trips: pd.DataFrame) -> pd.Series:
    """Return the most common direction_id of each shape's trips, indexed by shape_id."""
    pairs = trips.dropna(subset=["shape_id", "direction_id"])
    counts = pairs.groupby(["shape_id", "direction_id"]).size().rename("n").reset_index()
    counts = counts.sort_values(["shape_id", "n", "direction_id"], ascending=[True, False, True])
    return counts.drop_duplicates("shape_id").set_index("shape_id")["direction_id"]


def _static_lookup(art: StaticArtefacts, normalisers: Sequence[Normaliser]) -> pd.DataFrame:
    trips = art.trips.drop_duplicates("trip_id").reset_index(drop=True)
    return trips.assign(
        norm_trip=normalise_ids(trips["trip_id"], normalisers),
        norm_route=normalise_ids(trips["route_id"], normalisers),
        headsign=trips["trip_headsign"].astype("string").str.strip(),
    )


class _State:
    """Per-row resolution results, filled step by step."""

    def __init__(self, n: int) -> None:
        self.shape = pd.Series(pd.NA, index=range(n), dtype="string")
        self.trip = pd.Series(pd.NA, index=range(n), dtype="string")
        self.route = pd.Series(pd.NA, index=range(n), dtype="string")
        self.direction = pd.Series(pd.NA, index=range(n), dtype="Int32")
        self.via = pd.Series(pd.NA, index=range(n), dtype="string")

    def fill(self, mask: np.ndarray, via: str | pd.Series, found: pd.DataFrame) -> None:
        """Record ``found`` (shape_id, direction_id[, trip_id, route_id]) on rows in ``mask``."""
        self.shape[mask] = found.loc[mask, "shape_id"]
        self.direction[mask] = found.loc[mask, "direction_id"]
        for col, target in (("trip_id", self.trip), ("route_id", self.route)):
            if col in found.columns:
                target[mask] = found.loc[mask, col]
        self.via[mask] = via if isinstance(via, str) else via[mask]

    def open(self) -> np.ndarray:
        return np.asarray(self.via.isna().to_numpy(), dtype=bool)


def _by_trip(state: _State, ids: pd.Series, static: pd.DataFrame, key: str, via: str) -> None:
    table = static.dropna(subset=[key]).drop_duplicates(key, keep=False)
    if table.empty:
        return
    idx = pd.Index(table[key]).get_indexer(pd.Index(to_object_array(ids)))
    found = table.iloc[np.maximum(idx, 0)].reset_index(drop=True)
    state.fill(state.open() & (idx >= 0) & ids.notna().to_numpy(), via, found)


def _by_group(
    state: _State,
    rows: pd.DataFrame,
    modal: pd.DataFrame,
    keys: list[str],
    via: str | pd.Series,
    mask: np.ndarray,
) -> None:
    found = rows[keys].merge(modal, on=keys, how="left")
    state.fill(state.open() & mask & found["shape_id"].notna().to_numpy(), via, found)


def _run_fallbacks(
    state: _State,
    rows: pd.DataFrame,
    static: pd.DataFrame,
    fallbacks: Sequence[str],
    min_share: float,
) -> None:
    if "suffix" in fallbacks:
        _by_trip(state, rows["norm_trip"], static, "norm_trip", "suffix")
    if "headsign" in fallbacks:
        modal = _modal_shapes(static, ["norm_route", "headsign"], 0.0)
        _by_group(
            state, rows, modal, ["norm_route", "headsign"], "headsign", np.ones(len(rows), bool)
        )
    known = pd.Index(static["route_id"].dropna().unique())
    exact = known.get_indexer(pd.Index(to_object_array(rows["route_id"]))) >= 0
    allowed = (exact & ("route" in fallbacks)) | (~exact & ("variant" in fallbacks))
    via = pd.Series(np.where(exact, "route", "variant"), dtype="string")
    has_dir = rows["direction_id"].notna().to_numpy() & bool(static["direction_id"].notna().any())
    modal = _modal_shapes(static, ["norm_route", "direction_id"], min_share)
    _by_group(state, rows, modal, ["norm_route", "direction_id"], via, allowed & has_dir)
    _by_group(
        state,
        rows,
        _modal_shapes(static, ["norm_route"], min_share),
        ["norm_route"],
        via,
        allowed & ~has_dir,
    )


def _status(state: _State, art: StaticArtefacts) -> pd.Series:
    idx = art.shapes.index_of(to_object_array(state.shape))
    from_stops = np.where(idx >= 0, art.shapes.from_stops[np.maximum(idx, 0)], False)
    via = to_object_array(state.via)
    status = np.where(
        via == "trip_id", "ok", "fallback_" + state.via.fillna("").to_numpy(dtype=str)
    )
    status = np.where(from_stops, "fallback_stops", status)
    status = np.where(idx < 0, "no_shape", status)
    status = np.where(pd.isna(via), "trip_not_in_static", status)
    return pd.Series(status, dtype="string")


def _line_keys(
    state: _State, rows: pd.DataFrame, art: StaticArtefacts, normalisers: Sequence[Normaliser]
) -> pd.Series:
    routes = art.routes.assign(norm=normalise_ids(art.routes["route_id"], normalisers))
    by_norm = routes.dropna(subset=["norm"]).drop_duplicates("norm").set_index("norm")["route_id"]
    route = state.route.fillna(rows["norm_route"].map(by_norm).astype("string")).fillna(
        rows["route_id"]
    )
    names = routes.drop_duplicates("route_id").set_index("route_id")["route_short_name"]
    return compute_line_keys(
        route,
        state.direction,
        mode=art.line_key_mode,
        short_names=route.map(names),
        normalisers=normalisers,
    )


def resolve_trip_shapes(
    positions: pd.DataFrame,
    art: StaticArtefacts,
    *,
    normalisers: Sequence[Normaliser] = DEFAULT_NORMALISERS,
    fallbacks: Sequence[str] = DEFAULT_FALLBACKS,
    min_modal_share: float = 0.5,
) -> pd.DataFrame:
    """Attach a static shape, line key and direction to every position row (vectorised).

    Args:
        positions: Columns ``trip_id, route_id`` (nulls allowed), optionally
            ``trip_headsign`` and ``direction_id``; other columns are kept untouched.
            ``start_time`` is passed through (shapes do not depend on it).
        art: The static artefacts to resolve against.
        normalisers: Id normalisers for the suffix/variant steps
            (see :mod:`transitnet.gtfs.lines`).
        fallbacks: Subset of :data:`FALLBACKS` to try, e.g. ``()`` for exact ids only.
        min_modal_share: Smallest share of a route (+direction) group's trips its modal
            shape must carry for the variant/route steps.

    Returns:
        ``positions`` (same index and row order) plus :data:`RESOLVE_COLUMNS`:
        ``shape_id`` (a row of ``art.shapes``, or null), ``line_key``, ``direction_id``
        (the feed's own when set, else the static one), ``static_version``,
        ``resolve_status`` (one of :data:`RESOLVE_STATUSES`), ``resolve_via`` (``trip_id``
        or the fallback used; null when unresolved) and ``static_trip_id`` (null for
        modal-shape fallbacks).

    Raises:
        ValueError: When ``trip_id``/``route_id`` columns are absent or a fallback is unknown.
    """
    _check_inputs(positions, fallbacks)
    rows = _prepare_rows(positions, normalisers)
    static = _static_lookup(art, normalisers)
    state = _State(len(rows))
    _by_trip(state, rows["trip_id"], static, "trip_id", "trip_id")
    _run_fallbacks(state, rows, static, fallbacks, min_modal_share)
    state.direction = rows["direction_id"].fillna(state.direction)
    added = pd.DataFrame(
        {
            "shape_id": state.shape,
            "line_key": _line_keys(state, rows, art, normalisers),
            "direction_id": state.direction,
            "static_version": pd.Series(art.version, index=rows.index, dtype="string"),
            "resolve_status": _status(state, art),
            "resolve_via": state.via,
            "static_trip_id": state.trip,
        }
    ).set_axis(positions.index)
    counts = added["resolve_status"].value_counts().to_dict()
    logger.info("resolved %d positions against static %s: %s", len(added), art.version, counts)
    out = positions.drop(columns=[c for c in RESOLVE_COLUMNS if c in positions.columns])
    return pd.concat([out, added], axis=1)


def _check_inputs(positions: pd.DataFrame, fallbacks: Sequence[str]) -> None:
    missing = [c for c in ("trip_id", "route_id") if c not in positions.columns]
    if missing:
        raise ValueError(f"positions lack column(s) {', '.join(missing)} needed to resolve shapes")
    unknown = sorted(set(fallbacks) - set(FALLBACKS))
    if unknown:
        raise ValueError(f"unknown fallback(s) {unknown}; expected a subset of {FALLBACKS}")


def _prepare_rows(positions: pd.DataFrame, normalisers: Sequence[Normaliser]) -> pd.DataFrame:
    """Return the lookup keys of every position, on a 0..n-1 index."""
    direction = pd.to_numeric(_text(positions, "direction_id"), errors="coerce")
    rows = pd.DataFrame(
        {
            "trip_id": _text(positions, "trip_id"),
            "route_id": _text(positions, "route_id"),
            "headsign": _text(positions, "trip_headsign"),
            "direction_id": direction.astype("Int32"),
        }
    )
    rows["norm_trip"] = normalise_ids(rows["trip_id"], normalisers)
    rows["norm_route"] = normalise_ids(rows["route_id"], normalisers)
    return rows
