"""Rule flags for flattened rows, streaming row dedup, and partitioned writing for imports.

Flags for flattened tables (no FeedMessage, often no header): the row rules of
:mod:`transitnet.realtime.validate_vehicle` are evaluated (W002, E026, E027, W004, W001,
E001, E012, W006, W009, E020, E021), E052 per header-timestamp snapshot, E050 against the
row's header timestamp (the recording clock is unknown), each only when the source has
the columns it reads (:data:`RULE_INPUTS`; e.g. no W009 for a CSV without a
schedule_relationship column), static rules through a
:class:`~transitnet.realtime.validate.StaticChecker` when given. Feed-level rules stay
null ("not evaluated"): there is no header to judge. An exact (0, 0) position, which
flattened exports write for an unset Position, is flagged E026 and kept as given.

Row dedup (:class:`SeenKeys`) follows :mod:`transitnet.store.dedup`: a row whose
:data:`~transitnet.schema.DEDUP_KEY` was seen in an *earlier* snapshot (or is already in
the store) is dropped; rows of one snapshot never knock each other out; rows without a
vehicle timestamp or vehicle key are always kept.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transitnet.realtime.validate import StaticChecker
from transitnet.realtime.validate_header import (
    IN_FUTURE_TOLERANCE_S,
    MAX_POSIX_TIME,
    MIN_POSIX_TIME,
)
from transitnet.realtime.validate_vehicle import (
    Flags,
    compute_trip_flags,
    compute_vehicle_flags,
    is_present,
)
from transitnet.schema import POSITIONS_SCHEMA, flag_column
from transitnet.store.dedup import compute_vehicle_key
from transitnet.store.layout import POSITIONS_DIR, check_feed_id
from transitnet.store.parquet import conform_positions, positions_dataset, write_partitioned

logger = logging.getLogger(__name__)

_TRIP_COLUMNS = ("trip_id", "route_id", "direction_id", "start_time", "start_date",
                 "schedule_relationship")  # fmt: skip
#: Source columns a row rule reads; without them in the source, its flag stays null.
RULE_INPUTS: dict[str, tuple[str, ...]] = {
    "W002": ("vehicle_id",), "E052": ("vehicle_id",), "E026": ("latitude", "longitude"),
    "E027": ("bearing",), "W004": ("speed",), "W001": ("vehicle_timestamp_raw",),
    "E001": ("vehicle_timestamp_raw",), "E012": ("vehicle_timestamp_raw", "header_timestamp_raw"),
    "E050": ("vehicle_timestamp_raw", "header_timestamp_raw"), "W006": ("trip_id",),
    "W009": ("schedule_relationship",), "E020": ("start_time",), "E021": ("start_date",),
}  # fmt: skip
_KEY_INPUTS = ("feed_id", "entity_id", "vehicle_id", "vehicle_label", "vehicle_timestamp_raw",
               "trip_id", "start_time")  # fmt: skip


def split_extras(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Split a table into stored-schema columns and extra columns (e.g. ``trip_headsign``)."""
    core = [c for c in table.column_names if c in POSITIONS_SCHEMA.names]
    extra = [c for c in table.column_names if c not in POSITIONS_SCHEMA.names]
    return table.select(core), table.select(extra)


def flag_flat_rows(
    table: pa.Table, zero_positions: np.ndarray, static_checker: StaticChecker | None = None
) -> pa.Table:
    """Conform flattened rows to the stored schema and fill the rule flags they allow.

    Args:
        table: Positions columns (any subset, ``feed_id`` set) plus extra columns.
        zero_positions: Row mask of (0, 0) coordinates to flag E026.
        static_checker: Evaluates the static rules when given.

    Returns:
        :data:`~transitnet.schema.POSITIONS_SCHEMA` columns (flags filled as described in
        the module doc, others null) followed by the extra columns.
    """
    core, extras = split_extras(table)
    positions = conform_positions(core)
    flags = _compute_flags(positions, zero_positions)
    for rule, needed in RULE_INPUTS.items():
        if rule in flags and not set(needed) <= set(core.column_names):
            del flags[rule]  # the source never had that field: not evaluated (null)
    if static_checker is not None:
        flags.update(
            {r: np.asarray(v, dtype=bool) for r, v in static_checker.check(positions).items()}
        )
    for rule, values in flags.items():
        index = positions.schema.get_field_index(flag_column(rule))
        array = values if isinstance(values, pa.Array) else pa.array(values, pa.bool_())
        positions = positions.set_column(index, flag_column(rule), array)
    for name in extras.column_names:
        positions = positions.append_column(name, extras.column(name))
    return positions


def _compute_flags(
    positions: pa.Table, zero_positions: np.ndarray
) -> dict[str, np.ndarray | pa.Array]:
    flags: dict[str, np.ndarray | pa.Array] = {}
    vehicle = _compute_vehicle_flags_per_snapshot(positions)
    flags.update(vehicle)
    flags["E026"] = vehicle["E026"] | zero_positions
    flags.update(_compute_timestamp_flags(positions))
    has_trip = np.zeros(positions.num_rows, dtype=bool)
    for name in _TRIP_COLUMNS:
        has_trip |= is_present(positions.column(name).combine_chunks())
    flags.update(compute_trip_flags(positions, has_trip))
    return flags


def _compute_vehicle_flags_per_snapshot(positions: pa.Table) -> Flags:
    header = positions.column("header_timestamp_raw")
    flags = compute_vehicle_flags(positions)
    if header.null_count == positions.num_rows:
        flags.pop("E052")  # no snapshots to compare vehicle ids within: not evaluated
        return flags
    e052 = np.zeros(positions.num_rows, dtype=bool)
    codes = pc.dictionary_encode(header.combine_chunks()).indices.to_numpy(zero_copy_only=False)
    for code in np.unique(codes[~np.isnan(codes.astype(float))].astype(np.int64)):
        rows = np.flatnonzero(codes == code)
        e052[rows] = compute_vehicle_flags(positions.take(pa.array(rows)))["E052"]
    flags["E052"] = e052
    return flags


def _compute_timestamp_flags(positions: pa.Table) -> dict[str, np.ndarray | pa.Array]:
    ts = _uint_as_int(positions.column("vehicle_timestamp_raw"))
    header = _uint_as_int(positions.column("header_timestamp_raw"))
    has_header = header != 0
    set_ = ts != 0
    posix = (ts >= MIN_POSIX_TIME) & (ts <= MAX_POSIX_TIME)
    e050 = set_ & posix & has_header & (ts - header > IN_FUTURE_TOLERANCE_S)
    return {
        "W001": ~set_,
        "E001": set_ & ~posix,
        "E012": set_ & has_header & (ts > header),
        "E050": pa.array(e050, mask=~has_header, type=pa.bool_()),
    }


def _uint_as_int(values: pa.ChunkedArray) -> np.ndarray:
    filled = pc.fill_null(values, 0).to_numpy()
    return np.asarray(filled, dtype=np.uint64).view(np.int64)


class SeenKeys:
    """The fixes of one feed already stored or imported; drops repeats in later snapshots.

    A fix is (vehicle key, vehicle_timestamp_raw, trip_id, start_time) — DEDUP_KEY within
    one feed. Strings are mapped to integer codes through dictionaries that grow with the
    distinct values seen (vehicles, trips, start times: small), so the key set holds four
    integers per fix and membership is an Arrow hash semi-join: exact, no hashing collisions.
    """

    _KEY_COLUMNS = ("v", "t", "s", "ts")

    def __init__(self) -> None:
        self._codes: dict[str, dict[str, int]] = {"v": {}, "t": {}, "s": {}}
        self._seen = pa.table({c: pa.array([], pa.int64()) for c in self._KEY_COLUMNS})
        self._pending: list[pa.Table] = []

    def __len__(self) -> int:
        return int(self._seen.num_rows) + sum(int(t.num_rows) for t in self._pending)

    def encode(self, table: pa.Table) -> tuple[pa.Table, np.ndarray]:
        """Integer key columns ``v, t, s, ts`` per row, and the mask of rows with a key.

        Columns in: ``entity_id``, ``vehicle_id``, ``vehicle_label``,
        ``vehicle_timestamp_raw``, ``trip_id``, ``start_time``. Rows without a vehicle
        key or vehicle timestamp have no key (they are never dropped).
        """
        vehicle = compute_vehicle_key(table)
        ts = table.column("vehicle_timestamp_raw")
        keyed = ~np.asarray(pc.or_(pc.is_null(vehicle), pc.is_null(ts)).to_numpy(), dtype=bool)
        columns = {
            "v": self._encode_strings(vehicle, self._codes["v"]),
            "t": self._encode_strings(table.column("trip_id"), self._codes["t"]),
            "s": self._encode_strings(table.column("start_time"), self._codes["s"]),
            "ts": np.asarray(pc.fill_null(ts, 0).to_numpy(), dtype=np.uint64).view(np.int64),
        }
        return pa.table({k: pa.array(v, pa.int64()) for k, v in columns.items()}), keyed

    @staticmethod
    def _encode_strings(values: pa.ChunkedArray, book: dict[str, int]) -> np.ndarray:
        encoded = pc.dictionary_encode(values.combine_chunks())
        words = encoded.dictionary.to_pylist()
        lookup = np.array([book.setdefault(w, len(book)) for w in words] + [-1], dtype=np.int64)
        indices = pc.fill_null(encoded.indices, len(words)).to_numpy(zero_copy_only=False)
        result: np.ndarray = lookup[np.asarray(indices, dtype=np.int64)]
        return result

    def add(self, keys: pa.Table) -> None:
        """Remember key rows (columns ``v, t, s, ts``)."""
        self._pending.append(keys)

    def _consolidate(self) -> pa.Table:
        if self._pending:
            self._seen = pa.concat_tables([self._seen, *self._pending]).combine_chunks()
            self._pending = []
        return self._seen

    def select_new(self, table: pa.Table, snapshot_ids: np.ndarray) -> np.ndarray:
        """Row mask of ``table`` to keep, and remember the kept keys.

        Args:
            table: Rows with the key input columns (see :meth:`encode`).
            snapshot_ids: Snapshot ordinal per row; rows sharing an ordinal never drop
                each other.
        """
        keys, keyed = self.encode(table)
        rows = np.flatnonzero(keyed)
        keyed_keys = keys.take(pa.array(rows))
        indexed = keyed_keys.append_column("__row", pa.array(rows, pa.int64()))
        known = indexed.join(
            self._consolidate(), keys=list(self._KEY_COLUMNS), join_type="left semi"
        )
        keep = np.ones(table.num_rows, dtype=bool)
        keep[np.asarray(known.column("__row").to_numpy(), dtype=np.int64)] = False
        keep[rows] &= _first_snapshot_of_key(keyed_keys, snapshot_ids[rows])
        self.add(keys.filter(pa.array(keep & keyed)))
        return keep

    def load_store(self, store: Path, feed_id: str) -> None:
        """Remember the keys of every row already stored for ``feed_id``."""
        root = store / POSITIONS_DIR / f"feed={check_feed_id(feed_id)}"
        if not root.is_dir():
            return
        table = positions_dataset(store, [feed_id]).to_table(columns=list(_KEY_INPUTS))
        keys, keyed = self.encode(table)
        self.add(keys.filter(pa.array(keyed)))
        logger.info("feed %s: %d stored fixes will not be imported again", feed_id, table.num_rows)


def _first_snapshot_of_key(keys: pa.Table, snapshot_ids: np.ndarray) -> np.ndarray:
    """True where the row belongs to the first snapshot that carries its key."""
    if keys.num_rows == 0:
        return np.zeros(0, dtype=bool)
    frame = keys.to_pandas()
    group = frame.groupby(list(frame.columns), sort=False).ngroup().to_numpy()
    first = np.full(int(group.max()) + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, group, snapshot_ids)
    result: np.ndarray = snapshot_ids == first[group]
    return result


def compute_partition_days(table: pa.Table, source: str) -> pa.Array:
    """UTC partition date per row: fetched_at, else vehicle_timestamp, else header_timestamp.

    Rows with none of the three (a backfill row without any time) go to the earliest date
    of the other rows of the same batch, which is logged; they keep their null times.

    Raises:
        ValueError: when no row of the batch has any time.
    """
    moments = pc.coalesce(*(table.column(c) for c in ("fetched_at", "vehicle_timestamp",
                                                      "header_timestamp")))  # fmt: skip
    days = pc.cast(moments, pa.date32())
    missing = days.null_count
    if missing == 0:
        return days.combine_chunks()
    if missing == len(days):
        raise ValueError(f"{source}: no row has a vehicle or header timestamp: cannot choose a "
                         "date partition (map a time column with --columns)")  # fmt: skip
    fallback = pc.min(days)
    logger.info("%s: %d rows without any timestamp stored in the %s partition", source, missing,
                fallback.as_py())  # fmt: skip
    return pc.fill_null(days, fallback).combine_chunks()


def write_rows(store: Path, table: pa.Table, days: pa.Array) -> list[Path]:
    """Write flagged rows (stored schema + extras) as new part files, one per (feed, day).

    Args:
        store: Store root.
        table: :data:`~transitnet.schema.POSITIONS_SCHEMA` columns then extra columns.
        days: Partition date per row (see :func:`compute_partition_days`).

    Returns:
        The part files written.
    """
    if table.num_rows == 0:
        return []
    return write_partitioned(store, POSITIONS_DIR, table, days, datetime.now(UTC))
