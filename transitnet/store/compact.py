"""Compaction: merge a day partition's many per-tick part files into one file.

For each closed ``feed=<id>/date=<day>`` partition of ``positions`` and ``fetch_log``:

1. part files already listed in ``part-compacted.parquet``'s metadata (left behind by a
   crash between publish and delete) are deleted: their rows are in the compacted file;
2. the compacted file and the remaining parts are read, positions are deduplicated
   (:func:`~transitnet.store.dedup.dedup_positions`) and sorted by vehicle and time;
3. the result is published atomically onto ``part-compacted.parquet`` with the merged part
   names in its metadata, and only then are those parts deleted.

A crash at any point leaves either the old state or a compacted file whose merged parts
readers skip, so no row is lost or counted twice. Running it again changes nothing
(idempotent). A lock file stops two compactions of one store from running at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transitnet.schema import POSITIONS_SCHEMA
from transitnet.store.atomic import TEMP_PREFIX
from transitnet.store.dedup import compute_dedup_mask, compute_sort_indices
from transitnet.store.layout import (
    COMPACTED_NAME,
    FETCH_LOG_DIR,
    POSITIONS_DIR,
    STATE_DIR,
    list_partitions,
    list_parts,
    publish_path,
)
from transitnet.store.log import FETCH_LOG_SCHEMA_EXT
from transitnet.store.parquet import MERGED_PARTS_KEY, read_merged_parts
from transitnet.store.state import hold_lock

logger = logging.getLogger(__name__)

_SCHEMAS = {POSITIONS_DIR: POSITIONS_SCHEMA, FETCH_LOG_DIR: FETCH_LOG_SCHEMA_EXT}
#: String columns with few distinct values per day, held as dictionaries while compacting.
_DICTIONARY_COLUMNS = ("feed_id", "trip_id", "route_id", "start_time", "start_date", "stop_id",
                       "header_version", "source_file", "outcome", "error_class",
                       "final_url")  # fmt: skip
_BATCH_ROWS = 131_072


class CompactionLockedError(RuntimeError):
    """Another compaction holds the store's lock."""


@dataclass(frozen=True)
class CompactResult:
    """What compaction did to one partition.

    Attributes:
        kind: ``positions`` or ``fetch_log``.
        feed_id: Feed id.
        day: Partition date.
        parts_merged: Part files merged (and then deleted).
        stale_removed: Leftover parts already contained in the compacted file.
        rows_in: Rows read (compacted file plus parts).
        rows_out: Rows in the new compacted file (after dedup).
        error: Why the partition was left untouched, if it was.
    """

    kind: str
    feed_id: str
    day: date
    parts_merged: int = 0
    stale_removed: int = 0
    rows_in: int = 0
    rows_out: int = 0
    error: str | None = None


@contextlib.contextmanager
def compaction_lock(store: Path) -> Iterator[None]:
    """Hold ``state/compact.lock`` exclusively.

    Raises:
        CompactionLockedError: when another process holds it.
    """
    busy = CompactionLockedError(f"another compaction is running on {store}")
    with hold_lock(store / STATE_DIR / "compact.lock", busy):
        yield


def compact_partition(folder: Path, kind: str, feed_id: str, day: date) -> CompactResult:
    """Compact one partition folder (see the module docstring). Never raises for bad files.

    Columns in/out: the table's schema (positions: POSITIONS_SCHEMA; fetch_log:
    FETCH_LOG_SCHEMA_EXT); positions are deduplicated and sorted by vehicle and time.
    """
    compacted = folder / COMPACTED_NAME
    try:
        merged = read_merged_parts(compacted) if compacted.is_file() else set()
    except (OSError, pa.ArrowException, ValueError) as exc:
        return CompactResult(kind, feed_id, day, error=f"unreadable {compacted.name}: {exc}")
    parts = [p for p in list_parts(folder) if p.name != COMPACTED_NAME]
    stale = [p for p in parts if p.name in merged]
    for path in stale:
        path.unlink(missing_ok=True)
    fresh = [p for p in parts if p.name not in merged]
    if not fresh:
        return CompactResult(kind, feed_id, day, stale_removed=len(stale))
    inputs = ([compacted] if compacted.is_file() else []) + fresh
    try:
        table = _read_inputs(kind, inputs)
    except (OSError, pa.ArrowException) as exc:
        logger.error("not compacting %s: %s", folder, exc)
        return CompactResult(kind, feed_id, day, stale_removed=len(stale), error=str(exc))
    order = _compute_order(kind, table)
    names = json.dumps(sorted(p.name for p in fresh)).encode()
    _write_in_batches(compacted, table, order, _SCHEMAS[kind], {MERGED_PARTS_KEY: names})
    for path in fresh:
        path.unlink(missing_ok=True)
    return CompactResult(kind, feed_id, day, len(fresh), len(stale), table.num_rows, len(order))


def _read_schema(kind: str) -> pa.Schema:
    """The table's schema with low-cardinality strings read as dictionaries (less memory)."""
    fields = [
        pa.field(f.name, pa.dictionary(pa.int32(), f.type), f.nullable)
        if f.name in _DICTIONARY_COLUMNS else f
        for f in _SCHEMAS[kind]
    ]  # fmt: skip
    return pa.schema(fields)


def _read_inputs(kind: str, files: list[Path]) -> pa.Table:
    """Read ``files`` one by one onto the table's (dictionary-encoded) schema.

    Files written before a column existed get it as nulls; a file that cannot be read
    raises, which leaves the partition untouched.
    """
    schema = _read_schema(kind)
    wanted = [c for c in _DICTIONARY_COLUMNS if c in schema.names]
    tables = []
    for path in files:
        part = pq.read_table(path, read_dictionary=wanted).replace_schema_metadata(None)
        missing = [f for f in schema if f.name not in part.column_names]
        for f in missing:
            part = part.append_column(f, pa.nulls(part.num_rows, f.type))
        tables.append(part.select(schema.names).cast(schema))
    return pa.concat_tables(tables)


def _compute_order(kind: str, table: pa.Table) -> pa.Array:
    """Indices of the rows to write, in output order (positions: deduplicated)."""
    if kind == POSITIONS_DIR:
        return compute_sort_indices(table, compute_dedup_mask(table))
    keys = [("started_at", "ascending"), ("attempt", "ascending")]
    return pc.sort_indices(table.select(["started_at", "attempt"]), sort_keys=keys)


def _write_in_batches(
    path: Path, table: pa.Table, order: pa.Array, schema: pa.Schema, metadata: dict[bytes, bytes]
) -> None:
    """Write ``table.take(order)`` atomically, one row group per batch (bounded memory)."""
    out_schema = schema.with_metadata({**(schema.metadata or {}), **metadata})
    with publish_path(path) as tmp, pq.ParquetWriter(tmp, out_schema, compression="zstd") as w:
        for start in range(0, len(order), _BATCH_ROWS):
            batch = table.take(order.slice(start, _BATCH_ROWS)).cast(schema)
            w.write_table(batch.replace_schema_metadata(out_schema.metadata))


def compact_store(
    store: Path,
    *,
    feed_ids: Sequence[str] | None = None,
    before: date | None = None,
    kinds: Sequence[str] = (POSITIONS_DIR, FETCH_LOG_DIR),
) -> list[CompactResult]:
    """Compact every closed day partition of the store.

    Args:
        store: Store root.
        feed_ids: Only these feeds (None: all).
        before: Compact partitions dated strictly before this UTC date (default: today,
            i.e. every closed day).
        kinds: Tables to compact.

    Returns:
        One result per partition looked at.

    Raises:
        CompactionLockedError: when another compaction is running.
    """
    cutoff = before if before is not None else datetime.now(UTC).date()
    results: list[CompactResult] = []
    with compaction_lock(store):
        for kind in kinds:
            for feed_id, day, folder in list_partitions(store, kind):
                if day >= cutoff or (feed_ids is not None and feed_id not in feed_ids):
                    continue
                result = compact_partition(folder, kind, feed_id, day)
                logger.info("compacted %s %s %s: %s", kind, feed_id, day, result)
                results.append(result)
    return results


def remove_stale_temp_files(root: Path, *, older_than_s: float = 3600.0) -> int:
    """Delete ``.tmp-*`` files below ``root`` untouched for ``older_than_s`` (killed writers).

    Younger ones may belong to a writer that is still running, so they are left alone.

    Returns:
        How many files were removed.
    """
    cutoff = time.time() - older_than_s
    removed = 0
    for path in root.rglob(f"{TEMP_PREFIX}*"):
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # its writer published or removed it meanwhile
            continue
    return removed
