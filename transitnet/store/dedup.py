"""Row deduplication for positions.

A fix is identified by :data:`transitnet.schema.DEDUP_KEY`: (feed, vehicle key, raw vehicle
timestamp, trip_id, start_time), where the vehicle key is ``vehicle.id``, else
``vehicle.label``, else the entity id (prefixed ``id:``/``label:``/``entity:`` so the three
never collide; empty strings count as missing). Feeds re-publish unchanged fixes on every
poll, so most rows of a snapshot repeat the previous one's.

Rules (nothing is dropped for a validator flag):

- only rows of a *later* snapshot are dropped: rows of one snapshot never knock each other
  out (two entities with the same vehicle id are flagged E052, and both kept);
- a row without a vehicle timestamp or vehicle key is never dropped (it cannot be told
  apart from a new fix);
- a snapshot is identified by (``fetched_at``, header timestamp, ``source_file``); rows
  with neither fetch time nor source file count as their own snapshot each, in table
  order (backfills);
- a second copy of the same entity (same entity id and key) within one snapshot is
  dropped: that is the same snapshot stored twice (e.g. a file imported twice).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

#: Seconds after which a vehicle not seen again is forgotten by :func:`filter_new_fixes`.
FORGET_AFTER_S = 86_400


def compute_vehicle_key(table: pa.Table) -> pa.ChunkedArray:
    """The vehicle key per row: ``id:<vehicle_id>``, else ``label:…``, else ``entity:…``.

    Columns in: ``vehicle_id``, ``vehicle_label``, ``entity_id``. Null when all three are
    null or empty.
    """
    parts = []
    for column, prefix in (("vehicle_id", "id:"), ("vehicle_label", "label:"),
                           ("entity_id", "entity:")):  # fmt: skip
        col = table.column(column).cast(pa.string())
        empty = pc.fill_null(pc.equal(col, ""), True)
        prefixed = pc.binary_join_element_wise(pa.scalar(prefix), col, "")
        parts.append(pc.if_else(empty, pa.scalar(None, pa.string()), prefixed))
    return pc.coalesce(*parts)


def _codes(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Integer code per row (equal values, equal codes; null → -1)."""
    if pa.types.is_dictionary(column.type):  # chunks may hold different dictionaries
        column = pc.cast(column, column.type.value_type)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    indices = pc.dictionary_encode(column).indices.fill_null(-1)
    return np.asarray(indices.to_numpy(zero_copy_only=False), dtype=np.int64)


def _ints(column: pa.ChunkedArray, null: int) -> np.ndarray:
    """Integers of a timestamp/uint64 column as int64, nulls replaced by ``null``."""
    values = pc.cast(column, pa.int64(), safe=False) if column.type != pa.int64() else column
    return np.asarray(pc.fill_null(values, null).to_numpy(), dtype=np.int64)


def _snapshot_ids(table: pa.Table) -> np.ndarray:
    """Snapshot ordinal per row, ordered by (fetched_at, header timestamp, source_file)."""
    fetched = table.column("fetched_at")
    frame = pd.DataFrame(
        {
            "f": _ints(fetched, np.iinfo(np.int64).max),
            "h": _ints(table.column("header_timestamp_raw"), -1),
            "s": _codes(table.column("source_file")),
        }
    )
    ids = np.array(frame.groupby(["f", "h", "s"], sort=True).ngroup().to_numpy(), np.int64)
    anonymous = np.asarray(
        pc.and_(pc.is_null(fetched), pc.is_null(table.column("source_file"))), dtype=bool
    )
    if anonymous.any():
        ids[anonymous] = ids.max() + 1 + np.arange(int(anonymous.sum()))
    return ids


def compute_dedup_mask(table: pa.Table) -> np.ndarray:
    """True for rows to keep: see :func:`dedup_positions` for the rules and columns."""
    if table.num_rows == 0:
        return np.ones(0, dtype=bool)
    vk = compute_vehicle_key(table)
    ts = table.column("vehicle_timestamp_raw")
    keys = pd.DataFrame(
        {
            "feed": _codes(table.column("feed_id")),
            "vk": _codes(vk),
            "ts": _ints(ts, -1),
            "trip": _codes(table.column("trip_id")),
            "start": _codes(table.column("start_time")),
        }
    )
    snap = pd.Series(_snapshot_ids(table))
    first = snap.groupby([keys[c] for c in keys.columns], sort=False).transform("min")
    copies = keys.assign(entity=_codes(table.column("entity_id")), snap=snap).duplicated()
    unkeyed = np.asarray(pc.or_(pc.is_null(ts), pc.is_null(vk)), dtype=bool)
    keep: np.ndarray = ((snap == first) & ~copies).to_numpy(dtype=bool) | unkeyed
    return keep


def dedup_positions(table: pa.Table) -> pa.Table:
    """Drop rows that repeat a fix already seen in an earlier snapshot.

    Columns in: ``feed_id``, ``entity_id``, ``vehicle_id``, ``vehicle_label``,
    ``vehicle_timestamp_raw``, ``trip_id``, ``start_time``, ``fetched_at``,
    ``header_timestamp_raw``, ``source_file`` (plus any others, passed through).
    Columns out: the same; row order is kept.
    """
    keep = compute_dedup_mask(table)
    return table if keep.all() else table.filter(pa.array(keep))


def compute_sort_indices(table: pa.Table, keep: np.ndarray | None = None) -> pa.Array:
    """Row indices ordering (kept) rows by feed, vehicle key, vehicle time, fetch time.

    Columns in: those of :func:`compute_vehicle_key` plus ``feed_id``,
    ``vehicle_timestamp``, ``fetched_at``. Nulls sort last.

    Args:
        table: Positions.
        keep: Optional mask; rows where it is False are left out of the result.
    """
    keys = pa.table(
        {
            "feed": pc.cast(table.column("feed_id"), pa.string()),
            "vk": compute_vehicle_key(table),
            "vt": table.column("vehicle_timestamp"),
            "fa": table.column("fetched_at"),
            "i": pa.array(np.arange(table.num_rows, dtype=np.int64)),
        }
    )
    if keep is not None:
        keys = keys.filter(pa.array(keep))
    order = [("feed", "ascending"), ("vk", "ascending"), ("vt", "ascending"),
             ("fa", "ascending"), ("i", "ascending")]  # fmt: skip
    return keys.sort_by(order).column("i").combine_chunks()


def sort_positions(table: pa.Table) -> pa.Table:
    """Sort by feed, vehicle key, vehicle time, then fetch time (nulls last).

    Columns in: see :func:`compute_sort_indices`. Columns out: unchanged.
    """
    return table.take(compute_sort_indices(table))


def filter_new_fixes(
    table: pa.Table, last_keys: dict[str, list[Any]]
) -> tuple[pa.Table, dict[str, list[Any]]]:
    """Keep rows whose fix differs from the vehicle's fix in the previous snapshot.

    Args:
        table: One snapshot's positions (one feed). Columns in: those of
            :func:`compute_vehicle_key` plus ``vehicle_timestamp_raw``, ``trip_id``,
            ``start_time``.
        last_keys: Vehicle key → ``[vehicle_timestamp_raw, trip_id, start_time]`` of the
            previous snapshots (JSON-ready; from the feed state).

    Returns:
        The new rows (same columns), and the updated ``last_keys``; vehicles not seen
        for :data:`FORGET_AFTER_S` are forgotten.
    """
    vks = compute_vehicle_key(table).to_pylist()
    ts = table.column("vehicle_timestamp_raw").to_pylist()
    trips = table.column("trip_id").to_pylist()
    starts = table.column("start_time").to_pylist()
    keep: list[bool] = []
    updated = dict(last_keys)
    for vk, t, trip, start in zip(vks, ts, trips, starts, strict=True):
        if vk is None or t is None:
            keep.append(True)
            continue
        key = [t, trip, start]
        keep.append(last_keys.get(vk) != key)
        updated[vk] = key
    return table.filter(pa.array(keep, pa.bool_())), _forget_old(updated)


def _forget_old(keys: dict[str, list[Any]]) -> dict[str, list[Any]]:
    stamps = [k[0] for k in keys.values() if isinstance(k[0], int)]
    if not stamps:
        return keys
    horizon = max(stamps) - FORGET_AFTER_S
    return {vk: k for vk, k in keys.items() if not isinstance(k[0], int) or k[0] >= horizon}
