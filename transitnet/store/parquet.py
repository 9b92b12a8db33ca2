"""The positions store: a Hive-partitioned, zstd Parquet dataset.

Files live at ``positions/feed=<id>/date=<UTC date>/part-*.parquet`` and hold every column
of :data:`transitnet.schema.POSITIONS_SCHEMA` (``feed_id`` included, so a single file is
self-describing); the partition keys are ``feed`` and ``date``. The date is the UTC date of
``fetched_at``, or of ``vehicle_timestamp`` for backfilled rows without a fetch time.

Every write is atomic and adds one new file per partition touched, so concurrent readers
(pandas, ``pyarrow.dataset``, DuckDB) only ever see complete files. Compaction
(:mod:`transitnet.store.compact`) later merges a day's parts into ``part-compacted.parquet``
and records the merged part names in that file's metadata; readers here skip any part
listed there, which hides the duplicates a crash between publish and delete could leave.
Tools that glob the folder themselves (DuckDB ``read_parquet('positions/**/*.parquet',
hive_partitioning = true)``, ``pandas.read_parquet('positions')``) see exactly the same rows
except in that crash window, until the next compaction removes the leftover parts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from transitnet.schema import POSITIONS_SCHEMA
from transitnet.store.dedup import dedup_positions
from transitnet.store.layout import (
    COMPACTED_NAME,
    POSITIONS_DIR,
    check_feed_id,
    list_parts,
    new_part_name,
    partition_dir,
    publish_path,
)

logger = logging.getLogger(__name__)

#: Parquet key-value metadata key listing the part files merged into a compacted file.
MERGED_PARTS_KEY = b"transitnet.merged_parts"
PARTITION_SCHEMA = pa.schema([("feed", pa.string()), ("date", pa.date32())])
_PANDAS_TYPES = {pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype(),
                 pa.uint64(): pd.UInt64Dtype(), pa.bool_(): pd.BooleanDtype()}  # fmt: skip


def conform_table(table: pa.Table, schema: pa.Schema, *, optional: Iterable[str]) -> pa.Table:
    """Cast ``table`` onto ``schema``: same column order, columns in ``optional`` added as null.

    Args:
        table: Input table; its columns must be a subset of ``schema``'s.
        schema: Target schema.
        optional: Columns that may be missing (filled with nulls). Nullable columns not
            listed here must be present too, so a typo never silently becomes a null column.

    Raises:
        ValueError: unknown or missing columns, values that do not cast, naive timestamps,
            or nulls in a non-nullable column.
    """
    unknown = sorted(set(table.column_names) - set(schema.names))
    if unknown:
        raise ValueError(f"unknown columns {unknown}; expected a subset of the stored schema")
    allowed_missing = set(optional)
    missing = [f.name for f in schema if f.name not in table.column_names]
    not_allowed = [m for m in missing if m not in allowed_missing]
    if not_allowed:
        raise ValueError(f"missing required columns {not_allowed}")
    arrays = [_cast_column(table, f) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _cast_column(table: pa.Table, target: pa.Field) -> pa.ChunkedArray:
    if target.name not in table.column_names:
        return pa.chunked_array([pa.nulls(table.num_rows, target.type)], target.type)
    col = table.column(target.name)
    if col.type == target.type:
        out = col
    elif pa.types.is_timestamp(target.type) and pa.types.is_timestamp(col.type):
        if col.type.tz is None:
            raise ValueError(f"column {target.name!r} holds naive timestamps; make them UTC")
        out = pc.cast(col, target.type, safe=False)  # ns → us only drops sub-µs digits
    else:
        try:
            out = pc.cast(col, target.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValueError(f"column {target.name!r} ({col.type}) does not cast to "
                             f"{target.type}: {exc}") from exc  # fmt: skip
    if not target.nullable and out.null_count:
        raise ValueError(f"column {target.name!r} has {out.null_count} nulls; it must be set")
    return out


def conform_positions(table: pa.Table) -> pa.Table:
    """Cast positions onto :data:`~transitnet.schema.POSITIONS_SCHEMA`.

    Columns in: any subset of the schema that includes ``feed_id`` (missing columns,
    flags included, become null). Columns out: exactly the schema's, in its order.

    Raises:
        ValueError: see :func:`conform_table`.
    """
    optional = [n for n in POSITIONS_SCHEMA.names if n != "feed_id"]
    return conform_table(table, POSITIONS_SCHEMA, optional=optional)


def compute_partition_dates(table: pa.Table, *columns: str) -> pa.Array:
    """UTC date of the first non-null of ``columns`` per row, as ``date32``.

    Raises:
        ValueError: when some row has none of the columns set.
    """
    moments = pc.coalesce(*(table.column(c) for c in columns))
    if moments.null_count:
        raise ValueError(
            f"{moments.null_count} rows have no {' or '.join(columns)}: cannot choose a date "
            "partition for them (set fetched_at or vehicle_timestamp)"
        )
    return pc.cast(moments, pa.date32()).combine_chunks()


def write_partitioned(
    store: Path, kind: str, table: pa.Table, days: pa.Array, now: datetime | None = None
) -> list[Path]:
    """Write one new zstd part file per (feed_id, day) group of ``table``, atomically.

    Args:
        store: Store root.
        kind: Table folder (``positions`` or ``fetch_log``).
        table: Rows with a non-null ``feed_id`` column, already conformed.
        days: Partition date per row (``date32``), aligned with ``table``.
        now: Clock used in the part file names.

    Returns:
        The files written, one per partition touched.
    """
    written: list[Path] = []
    if table.num_rows == 0:
        return written
    groups = pa.table({"f": table.column("feed_id"), "d": days}).group_by(["f", "d"])
    for row in groups.aggregate([]).to_pylist():
        mask = pc.and_(pc.equal(table.column("feed_id"), row["f"]), pc.equal(days, row["d"]))
        part = table.filter(mask)
        path = partition_dir(store, kind, check_feed_id(row["f"]), row["d"]) / new_part_name(now)
        write_parquet_atomic(path, part)
        written.append(path)
    return written


def write_parquet_atomic(
    path: Path, table: pa.Table, metadata: dict[bytes, bytes] | None = None
) -> None:
    """Write ``table`` as zstd Parquet to ``path`` atomically (optional schema metadata)."""
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    with publish_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def write_positions(store: Path, table: pa.Table, *, now: datetime | None = None) -> list[Path]:
    """Append positions to the store: one new part file per (feed, UTC date) partition.

    Columns in: a subset of :data:`~transitnet.schema.POSITIONS_SCHEMA` with ``feed_id``
    and, per row, ``fetched_at`` or ``vehicle_timestamp`` (the partition date comes from
    the first that is set). Missing flag or decoded columns are stored as null.

    Returns:
        The part files written.

    Raises:
        ValueError: for unknown columns, uncastable values, invalid feed ids, or rows with
            neither timestamp (nothing is written then).
    """
    conformed = conform_positions(table)
    days = compute_partition_dates(conformed, "fetched_at", "vehicle_timestamp")
    for feed_id in pc.unique(conformed.column("feed_id")).to_pylist():
        check_feed_id(feed_id)
    paths = write_partitioned(store, POSITIONS_DIR, conformed, days, now)
    logger.debug("wrote %d positions rows into %d files", conformed.num_rows, len(paths))
    return paths


def read_merged_parts(compacted: Path) -> set[str]:
    """Names of the part files a compacted file already contains (from its metadata)."""
    meta = pq.read_schema(compacted).metadata or {}
    raw = meta.get(MERGED_PARTS_KEY)
    return set(json.loads(raw)) if raw else set()


def list_visible_parts(folder: Path) -> list[Path]:
    """Part files of one partition, minus those already merged into its compacted file."""
    parts = list_parts(folder)
    compacted = folder / COMPACTED_NAME
    if not compacted.is_file():
        return parts
    merged = read_merged_parts(compacted)
    return [p for p in parts if p.name not in merged]


def list_table_files(
    store: Path, kind: str, feed_ids: Sequence[str] | None, dates: Iterable[date | str] | None
) -> list[Path]:
    """Visible part files of a partitioned table, pruned by feed ids and dates."""
    root = store / kind
    wanted_days = {d if isinstance(d, str) else d.isoformat() for d in dates} if dates else None
    files: list[Path] = []
    feeds = sorted(root.glob("feed=*")) if root.is_dir() else []
    for feed_dir in feeds:
        if feed_ids is not None and feed_dir.name.removeprefix("feed=") not in feed_ids:
            continue
        for date_dir in sorted(feed_dir.glob("date=*")):
            if wanted_days is None or date_dir.name.removeprefix("date=") in wanted_days:
                files.extend(list_visible_parts(date_dir))
    return files


def open_dataset(root: Path, files: list[Path], schema: pa.Schema) -> ds.Dataset:
    """A dataset over ``files`` with ``feed``/``date`` Hive partition fields added."""
    full = pa.schema(list(schema) + list(PARTITION_SCHEMA), metadata=schema.metadata)
    return ds.dataset(
        [str(f) for f in files],
        schema=full,
        format="parquet",
        partitioning=ds.partitioning(PARTITION_SCHEMA, flavor="hive"),
        partition_base_dir=str(root),
    )


def positions_dataset(
    store: Path,
    feed_ids: Sequence[str] | None = None,
    dates: Iterable[date | str] | None = None,
) -> ds.Dataset:
    """The positions as a ``pyarrow.dataset.Dataset`` (partition fields ``feed``, ``date``).

    Columns: :data:`~transitnet.schema.POSITIONS_SCHEMA` plus ``feed`` and ``date``. Files
    written before a column existed read it as null. Parts already merged into a compacted
    file are left out.
    """
    files = list_table_files(store, POSITIONS_DIR, feed_ids, dates)
    return open_dataset(store / POSITIONS_DIR, files, POSITIONS_SCHEMA)


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow → pandas with nullable integer/boolean dtypes and tz-aware UTC timestamps."""
    frame: pd.DataFrame = table.to_pandas(types_mapper=_PANDAS_TYPES.get)
    return frame


_DEDUP_INPUTS = ("feed_id", "entity_id", "vehicle_id", "vehicle_label", "vehicle_timestamp_raw",
                 "trip_id", "start_time", "fetched_at", "header_timestamp_raw",
                 "source_file")  # fmt: skip


def read_positions(
    store: Path,
    feed_ids: Sequence[str] | None = None,
    dates: Iterable[date | str] | None = None,
    columns: Sequence[str] | None = None,
    filter: pc.Expression | None = None,
    *,
    dedup: bool = True,
) -> pd.DataFrame:
    """Read stored positions into pandas.

    Args:
        store: Store root.
        feed_ids: Only these feeds (None: all).
        dates: Only these UTC partition dates (``date`` or ``YYYY-MM-DD``; None: all).
        columns: Columns to return (default: every stored column, no partition fields).
        filter: A pyarrow expression on stored columns or ``feed``/``date``.
        dedup: Drop rows repeating an earlier snapshot's fix (see
            :func:`transitnet.store.dedup.dedup_positions`).

    Returns:
        Columns ``columns`` (or all of POSITIONS_SCHEMA); nullable ints/booleans,
        timestamps ``datetime64[us, UTC]``.
    """
    wanted = list(columns) if columns is not None else list(POSITIONS_SCHEMA.names)
    unknown = sorted(set(wanted) - set(POSITIONS_SCHEMA.names) - set(PARTITION_SCHEMA.names))
    if unknown:
        raise ValueError(f"unknown columns {unknown}")
    dataset = positions_dataset(store, feed_ids, dates)
    read_cols = list(dict.fromkeys(wanted + (list(_DEDUP_INPUTS) if dedup else [])))
    table = dataset.to_table(columns=read_cols, filter=filter)
    if dedup:
        table = dedup_positions(table)
    return to_pandas(table.select(wanted))
