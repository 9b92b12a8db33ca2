"""Stable line keys and id normalisation.

A *line key* is the string that identifies a line everywhere downstream (the embedding
vocabulary, classifier classes, per-line metrics). It must survive static feed updates,
so feed-version suffixes are stripped from ids before a key is formed.

Key format, by ``mode``:

- ``"route"`` (default): ``<normalised route_id>``, e.g. ``"1"`` (Austin),
  ``"07005"`` (Auckland ``07005-20190719095551_v82.14``), ``"F"`` (Bull Runner).
- ``"route_direction"``: ``<normalised route_id>:<direction_id>``, e.g. ``"07005:0"``;
  an unknown direction gives ``"<route>:na"``.
- ``"short_name"``: ``<route_short_name>`` when the route has one, else the normalised
  route_id; e.g. all Auckland variants ``07005``, ``07006``, ``07014`` become ``"70"``.

Normalisation (:func:`strip_version_suffix`) removes a trailing ``-<digits>_v<version>``
(Auckland Transport's ``<id>-<feedversion>``, e.g. ``-20190613111133_v80.31``) and
surrounding whitespace. Nothing else is changed, so ids from feeds without such
suffixes are their own keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

#: A feed-version suffix: ``-`` then 8-14 digits (a date or timestamp), ``_v`` and a version.
VERSION_SUFFIX_RE = re.compile(r"-\d{8,14}_v[0-9][0-9A-Za-z.]*$")
#: Accepted values of ``mode``.
LINE_KEY_MODES: tuple[str, ...] = ("route", "route_direction", "short_name")
#: Direction part of a ``route_direction`` key when the direction is unknown.
UNKNOWN_DIRECTION = "na"

#: An id normaliser maps a Series of ids to normalised ids (nulls stay null).
Normaliser = Callable[[pd.Series], pd.Series]


def strip_version_suffix(ids: pd.Series) -> pd.Series:
    """Strip whitespace and a trailing feed-version suffix from every id.

    Args:
        ids: String ids (nulls allowed).

    Returns:
        The normalised ids, same index, nulls kept; ``"07005-20190613111133_v80.31"``
        becomes ``"07005"``.
    """
    text = ids.astype("string").str.strip()
    return text.str.replace(VERSION_SUFFIX_RE, "", regex=True)


#: Normalisers applied in order by :func:`normalise_ids` unless told otherwise.
DEFAULT_NORMALISERS: tuple[Normaliser, ...] = (strip_version_suffix,)


def normalise_ids(
    ids: pd.Series, normalisers: Sequence[Normaliser] = DEFAULT_NORMALISERS
) -> pd.Series:
    """Apply ``normalisers`` in order to a Series of ids (nulls stay null).

    Args:
        ids: String ids.
        normalisers: Functions from Series to Series, e.g. :func:`strip_version_suffix`.

    Returns:
        The normalised ids as a ``string`` Series (same index); empty strings become
        null. Each distinct id is normalised once.
    """
    codes, uniques = pd.factorize(ids.astype("string"), use_na_sentinel=True)
    out = pd.Series(uniques, dtype="string").str.strip()
    for normaliser in normalisers:
        out = normaliser(out).astype("string")
    out = out.mask(out == "")
    values = to_object_array(out.take(np.maximum(codes, 0))) if len(out) else None
    result = pd.Series(values if values is not None else pd.NA, index=ids.index, dtype="string")
    return result.mask(codes < 0)


def to_object_array(values: pd.Series) -> np.ndarray:
    """Return a Series as an object array with ``None`` for nulls (for index lookups)."""
    obj = values.astype(object)
    return np.asarray(obj.where(values.notna(), None).to_numpy(), dtype=object)


def _check_mode(mode: str) -> None:
    if mode not in LINE_KEY_MODES:
        raise ValueError(f"unknown line key mode {mode!r}; expected one of {LINE_KEY_MODES}")


def compute_line_key(
    route_id: str,
    direction_id: int | None = None,
    *,
    mode: str = "route",
    short_name: str | None = None,
) -> str:
    """Return the line key of one route (see the module docstring for the format).

    Args:
        route_id: The route_id, static or realtime (a version suffix is stripped).
        direction_id: 0 or 1; used only by ``mode="route_direction"``.
        mode: One of :data:`LINE_KEY_MODES`.
        short_name: The route's ``route_short_name``; used only by ``mode="short_name"``.

    Raises:
        ValueError: For an empty route_id, an unknown mode or a direction not in {0, 1}.
    """
    _check_mode(mode)
    if route_id is None or not str(route_id).strip():
        raise ValueError("route_id is empty: a line key needs a route")
    if direction_id is not None and direction_id not in (0, 1):
        raise ValueError(f"direction_id must be 0, 1 or None, got {direction_id!r}")
    keys = compute_line_keys(
        pd.Series([route_id]),
        None if direction_id is None else pd.Series([direction_id]),
        mode=mode,
        short_names=None if short_name is None else pd.Series([short_name]),
    )
    return str(keys.iloc[0])


def compute_line_keys(
    route_ids: pd.Series,
    direction_ids: pd.Series | None = None,
    *,
    mode: str = "route",
    short_names: pd.Series | None = None,
    normalisers: Sequence[Normaliser] = DEFAULT_NORMALISERS,
) -> pd.Series:
    """Vectorised :func:`compute_line_key` over aligned Series.

    Args:
        route_ids: Route ids; a null route_id gives a null key (no guess).
        direction_ids: Directions (0/1, nulls allowed), aligned with ``route_ids``.
        mode: One of :data:`LINE_KEY_MODES`.
        short_names: ``route_short_name`` per row (nulls allowed) for ``mode="short_name"``.
        normalisers: Id normalisers applied to the route ids.

    Returns:
        A ``string`` Series of keys with the index of ``route_ids``.
    """
    _check_mode(mode)
    keys = normalise_ids(route_ids, normalisers)
    if mode == "short_name" and short_names is not None:
        names = pd.Series(np.asarray(short_names, dtype=object), index=keys.index)
        names = names.astype("string").str.strip()
        keys = names.mask(names == "").fillna(keys)
        keys = keys.mask(route_ids.isna().to_numpy())
    if mode == "route_direction":
        direction = _direction_text(direction_ids, keys.index)
        keys = keys + ":" + direction
    return keys.astype("string")


def _direction_text(direction_ids: pd.Series | None, index: pd.Index) -> pd.Series:
    if direction_ids is None:
        return pd.Series(UNKNOWN_DIRECTION, index=index, dtype="string")
    values = pd.to_numeric(pd.Series(np.asarray(direction_ids, dtype=object)), errors="coerce")
    valid = values.isin([0, 1])
    text = values.where(valid).astype("Int64").astype("string").fillna(UNKNOWN_DIRECTION)
    text.index = index
    return text
