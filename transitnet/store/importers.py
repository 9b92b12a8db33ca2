"""Backfill recorded archives into the positions store (``transitnet ingest import``).

:func:`import_paths` takes files and folders and recognises what each holds:

- raw GTFS-realtime snapshots: ``.pb``/``.pb.gz``/``.pb.bz2`` files, folders of them, or
  tars (``.tar``, ``.tar.gz``, ``.tar.xz``, ``.tar.bz2``). Each snapshot is archived raw,
  decoded, validated (cross-snapshot rules in name order), deduplicated and stored
  (see :mod:`transitnet.store.importers_pb` for the archive clock);
- flattened tables (CSV/Parquet): Austin CapMetrics CSV, flattened GTFS-realtime with
  dotted field-path columns, store exports, or any layout given a ``columns`` mapping
  (see :mod:`transitnet.store.importers_flat`). Their rows get the rule flags a table
  allows (:mod:`transitnet.store.importers_rows`).

Rows repeating a fix already imported or stored are dropped (DEDUP_KEY; see
:class:`~transitnet.store.importers_rows.SeenKeys`); nothing else is. A file that cannot
be read is reported in :attr:`ImportResult.failed` and the others still import; a file
with a header but no rows imports 0 rows with a log line.

Stored columns: :data:`~transitnet.schema.POSITIONS_SCHEMA` plus ``trip_headsign`` when
the source has it (CapMetrics). ``fetched_at`` is null for every imported row.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from transitnet.realtime.validate import FeedValidator, StaticChecker
from transitnet.store.importers_flat import LayoutError, is_table_path, read_flat_table
from transitnet.store.importers_pb import (
    RawSnapshot,
    SnapshotImporter,
    count_raw_snapshots,
    is_raw_source,
    iter_raw_snapshots,
)
from transitnet.store.importers_rows import (
    SeenKeys,
    compute_partition_days,
    flag_flat_rows,
    write_rows,
)
from transitnet.store.layout import check_feed_id

logger = logging.getLogger(__name__)

#: Rows gathered from snapshots before they are deduplicated and written as one part.
FLUSH_ROWS = 400_000


@dataclass
class ImportResult:
    """What an import did.

    Attributes:
        feed_id: Feed id written into every row.
        files: Input files (tables, snapshot files, tars) processed.
        layouts: Layout recognised per input path (``raw_pb``, ``capmetrics``, ...).
        snapshots: Raw snapshots read.
        duplicate_snapshots: Byte-identical snapshots not decoded again.
        decode_failures: Snapshots archived raw but not decodable.
        rows_read: Position rows decoded or read.
        rows_written: Rows stored.
        duplicate_rows: Rows dropped as repeats of an earlier fix.
        empty_files: Inputs that held no rows (e.g. a header-only CSV).
        failed: ``(path, error)`` for inputs that could not be imported at all.
        notes: Findings worth a look (speed units, unmapped columns, ...).
        rule_counts: Rule occurrences over the stored and dropped rows.
        written: Part files written.
    """

    feed_id: str
    files: int = 0
    layouts: dict[str, str] = field(default_factory=dict)
    snapshots: int = 0
    duplicate_snapshots: int = 0
    decode_failures: int = 0
    rows_read: int = 0
    rows_written: int = 0
    duplicate_rows: int = 0
    empty_files: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rule_counts: dict[str, int] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every input could be read (decode failures of single snapshots aside)."""
        return not self.failed

    def summary(self) -> str:
        """One line for logs and the CLI."""
        return (f"feed {self.feed_id}: {self.files} inputs, {self.snapshots} snapshots "
                f"({self.duplicate_snapshots} duplicate, {self.decode_failures} undecodable), "
                f"{self.rows_read} rows read, {self.duplicate_rows} duplicates dropped, "
                f"{self.rows_written} rows stored in {len(self.written)} files; "
                f"{len(self.empty_files)} empty, {len(self.failed)} failed")  # fmt: skip


def import_paths(
    store: Path,
    feed_id: str,
    paths: list[Path],
    *,
    columns: dict[str, str] | None = None,
    progress: bool = True,
    static_checker: StaticChecker | None = None,
) -> ImportResult:
    """Import recorded archives into ``store`` under ``feed_id``.

    Args:
        store: Store root (created if missing).
        feed_id: Feed id for every imported row.
        paths: Files or folders (see module doc); folders are searched for snapshot files,
            or else for CSV/Parquet tables.
        columns: ``{source column: positions column}`` for tables of another layout.
        progress: Show tqdm progress bars.
        static_checker: Evaluates the static-GTFS rules (null flags without it).

    Returns:
        Counts, failures and notes (see :class:`ImportResult`).

    Raises:
        InvalidFeedIdError: for a feed id unusable in paths.
        FileNotFoundError: when an input path does not exist (nothing is imported).
    """
    check_feed_id(feed_id)
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"input paths not found: {missing}")
    run = _ImportRun(Path(store), feed_id, columns, progress, static_checker)
    expanded = _expand(paths)
    try:
        for path in tqdm(expanded, desc="import files", unit="file",
                         disable=not progress or len(expanded) < 2):  # fmt: skip
            run.import_one(path)
        run.flush()
    finally:
        run.finish()
    logger.info("import done: %s", run.result.summary())
    return run.result


def _expand(paths: list[Path]) -> list[Path]:
    """Folders without snapshot files become their CSV/Parquet files (sorted)."""
    out: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir() and not is_raw_source(path):
            tables = sorted(p for p in path.rglob("*") if p.is_file() and is_table_path(p))
            if not tables:
                logger.warning("%s: no snapshot or table files inside", path)
            out.extend(tables)
        else:
            out.append(path)
    return out


class _ImportRun:
    def __init__(self, store: Path, feed_id: str, columns: dict[str, str] | None,
                 progress: bool, static_checker: StaticChecker | None) -> None:  # fmt: skip
        self.store, self.feed_id, self.columns = store, feed_id, columns
        self.progress, self.static_checker = progress, static_checker
        self.result = ImportResult(feed_id)
        self.seen = SeenKeys()
        self.seen.load_store(store, feed_id)
        self.snapshots = SnapshotImporter(store, feed_id, FeedValidator(feed_id, static_checker))
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.snapshot_ordinal = 0
        self.rules: Counter[str] = Counter()
        # Parquet encoding releases the GIL: writes overlap with decoding the next batch
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="import-writer")
        self.writes: list[Future[list[Path]]] = []

    def import_one(self, path: Path) -> None:
        self.result.files += 1
        try:
            if is_table_path(path):
                self._import_table(path)
            elif is_raw_source(path):
                self._import_snapshots(path)
            else:
                raise LayoutError(f"{path}: not a CSV/Parquet table nor GTFS-rt snapshots")
        except (LayoutError, ValueError, OSError) as exc:
            logger.error("%s: not imported: %s", path, exc)
            self.result.failed.append((str(path), str(exc)))

    def _import_table(self, path: Path) -> None:
        flat = read_flat_table(path, columns=self.columns)
        self.result.layouts[str(path)] = flat.layout
        self.result.notes.extend(flat.notes)
        if flat.unmapped:
            self.result.notes.append(f"{path}: columns not imported: {flat.unmapped}")
        if flat.table.num_rows == 0:
            logger.info("%s: header only, no rows: nothing to import", path)
            self.result.empty_files.append(str(path))
            return
        table = flat.table
        if "feed_id" in table.column_names:  # a mapped feed_id column: --feed-id wins
            table = table.drop_columns(["feed_id"])
            self.result.notes.append(f"{path}: feed_id column replaced by {self.feed_id!r}")
        table = table.append_column("feed_id", pa.array([self.feed_id] * table.num_rows))
        flagged = flag_flat_rows(table, flat.zero_positions, self.static_checker)
        self._note_time_units(path, flagged)
        self._count_flags(flagged)
        self._add(flagged, self._table_snapshots(flagged))
        self.flush(source=str(path))

    def _note_time_units(self, path: Path, table: pa.Table) -> None:
        """Say how many timestamps were not POSIX seconds (flagged E001, scaled for use)."""
        count = pc.sum(pc.cast(table.column("flag_e001"), pa.int64())).as_py() or 0
        if count:
            message = (f"{path}: {count} vehicle timestamps are not POSIX seconds (e.g. "
                       "milliseconds): flagged E001, raw value kept, scaled in "
                       "vehicle_timestamp")  # fmt: skip
            logger.warning(message)
            self.result.notes.append(message)

    def _table_snapshots(self, table: pa.Table) -> np.ndarray:
        """Snapshot ordinal per row: one per header timestamp, else one per row."""
        header = table.column("header_timestamp_raw")
        n = table.num_rows
        if header.null_count == n:
            ids = np.arange(n, dtype=np.int64)
        else:
            raw = np.asarray(header.fill_null(0).to_numpy(), dtype=np.uint64)
            ids = np.unique(raw, return_inverse=True)[1].astype(np.int64)
        ids = ids + self.snapshot_ordinal
        self.snapshot_ordinal = int(ids.max()) + 1 if n else self.snapshot_ordinal
        return ids

    def _import_snapshots(self, path: Path) -> None:
        self.result.layouts[str(path)] = "raw_pb"
        bar = tqdm(iter_raw_snapshots(path), total=count_raw_snapshots(path),
                   desc=f"import {path.name}", unit="snap", disable=not self.progress)  # fmt: skip
        try:
            for snap in bar:
                self._import_snapshot(snap)
                if self.pending_rows >= FLUSH_ROWS:
                    self.flush(source=str(path))
        finally:
            self.flush(source=str(path))

    def _import_snapshot(self, snap: RawSnapshot) -> None:
        outcome = self.snapshots.import_snapshot(snap)
        self.result.snapshots += 1
        self.result.duplicate_snapshots += outcome.outcome == "duplicate"
        self.result.decode_failures += outcome.outcome == "decode_error"
        self.rules.update(outcome.rule_counts or {})
        if outcome.positions is not None:
            ids = np.full(outcome.positions.num_rows, self.snapshot_ordinal, dtype=np.int64)
            self.snapshot_ordinal += 1
            self._add(outcome.positions, ids)

    def _add(self, table: pa.Table, snapshot_ids: np.ndarray) -> None:
        self.result.rows_read += table.num_rows
        self.pending.append(table.append_column("__snap", pa.array(snapshot_ids, pa.int64())))
        self.pending_rows += table.num_rows

    def _count_flags(self, table: pa.Table) -> None:
        for name in table.column_names:
            if name.startswith("flag_"):
                count = pc.sum(pc.cast(table.column(name), pa.int64())).as_py() or 0
                if count:
                    self.rules[name.removeprefix("flag_").upper()] += count

    def flush(self, source: str = "import") -> None:
        """Publish the archived raw files, then deduplicate and write the pending rows."""
        self.snapshots.publish()
        if not self.pending:
            self.result.rule_counts = dict(sorted(self.rules.items()))
            return
        batch = pa.concat_tables(self.pending, promote_options="permissive")
        self.pending, self.pending_rows = [], 0
        snaps = np.asarray(batch.column("__snap").to_numpy(), dtype=np.int64)
        keep = self.seen.select_new(batch, snaps)
        fresh = batch.drop_columns(["__snap"]).filter(pa.array(keep))
        self.result.duplicate_rows += int((~keep).sum())
        if fresh.num_rows:
            days = compute_partition_days(fresh, source)  # raises here, for this input
            self.writes.append(self.writer.submit(write_rows, self.store, fresh, days))
        self.result.rows_written += fresh.num_rows
        self.result.rule_counts = dict(sorted(self.rules.items()))

    def finish(self) -> None:
        """Wait for the background Parquet writes; a write error is raised here."""
        try:
            for future in self.writes:
                self.result.written.extend(future.result())
        finally:
            self.writer.shutdown(wait=True)
