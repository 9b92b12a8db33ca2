"""Import raw GTFS-realtime snapshots (``.pb``/``.pb.gz``/``.pb.bz2`` folders or tars).

Each snapshot goes the way a fetched one does: archived raw and atomically into
``raw/feed=<id>/date=…/hour=…/<id>-<UTC>.pb`` with a ``.meta.json``, then decoded,
validated, deduplicated and stored. There is no fetch clock for a recorded archive, so:

- the archive time (which names and partitions the raw file) is the snapshot's **header
  timestamp**; a snapshot without one (or undecodable) takes its predecessor's time, and
  the first one the file's modification time. The meta says so in ``headers``
  (``X-Transitnet-Archive-Clock``) and names the origin in ``final_url``;
- ``fetched_at`` stays null in the positions (the store partitions such rows by
  ``vehicle_timestamp``);
- the validator's "now" is the archive time, so the age rules (W008, E050) judge each
  snapshot against its own header instead of today's clock.

Snapshots are processed in name order (relative path or tar member name). A snapshot
byte-identical to any earlier one of the import is not written again (``duplicate_of``)
nor decoded; one already in ``raw/`` under the same name and hash is not rewritten, so
importing twice adds nothing.

Raw files are published in batches (:class:`BatchPublisher`): each file is written under
a ``.tmp-*`` name, the batch is flushed to disk with one ``syncfs`` (instead of one
``fsync`` per file, which dominated a day's import), and only then renamed onto its final
name. Readers never see a partial file; a crash leaves only ``.tmp-*`` files.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import logging
import lzma
import os
import queue
import tarfile
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from transitnet.realtime.decode import FeedDecodeError, decode_vehicle_positions
from transitnet.realtime.replay import is_snapshot_name, is_tar_path, read_header_timestamp
from transitnet.realtime.validate import FeedValidator
from transitnet.store.archive import RawMeta, relative_to_store
from transitnet.store.atomic import TEMP_PREFIX
from transitnet.store.layout import (
    ERROR_BODY_SUFFIX,
    META_SUFFIX,
    RAW_SUFFIX,
    raw_dir,
    raw_stem,
    to_utc,
)

logger = logging.getLogger(__name__)

ARCHIVE_CLOCK_NOTE = "header timestamp (recorded archive: no fetch clock)"


@dataclass(frozen=True)
class RawSnapshot:
    """One recorded snapshot read from a folder or tar.

    Attributes:
        origin: Where it came from (``<file>`` or ``<tar>!<member>``).
        name: Its order key (relative path or member name).
        body: The bytes as recorded.
        mtime: File/member modification time (POSIX seconds), if known.
    """

    origin: str
    name: str
    body: bytes
    mtime: float | None


def is_raw_source(path: Path) -> bool:
    """Whether ``path`` is a tar, a snapshot file, or a folder holding snapshot files."""
    if path.is_dir():
        return any(p.is_file() and is_snapshot_name(p.name) for p in path.rglob("*"))
    return is_tar_path(path) or is_snapshot_name(path.name)


def count_raw_snapshots(path: Path) -> int | None:
    """Number of snapshot files in a folder or file; None for a tar (not read twice)."""
    if path.is_dir():
        return sum(1 for p in path.rglob("*") if p.is_file() and is_snapshot_name(p.name))
    return None if is_tar_path(path) else 1


def iter_raw_snapshots(path: Path, *, prefetch: int = 64) -> Iterator[RawSnapshot]:
    """Yield the snapshots of a folder (recursive), tar or single file in name order.

    Reading (and decompressing) runs in a background thread, ``prefetch`` snapshots ahead,
    so it overlaps with the caller's work (``lzma``/``zlib`` release the GIL).

    Raises:
        ValueError: when a tar cannot be read.
    """
    if prefetch > 0:
        yield from _prefetched(iter_raw_snapshots(path, prefetch=0), prefetch)
        return
    if path.is_dir():
        files = sorted((p for p in path.rglob("*") if p.is_file() and is_snapshot_name(p.name)),
                       key=lambda p: p.relative_to(path).as_posix())  # fmt: skip
        for f in files:
            name = f.relative_to(path).as_posix()
            yield RawSnapshot(str(f), name, f.read_bytes(), f.stat().st_mtime)
    elif is_tar_path(path):
        yield from _iter_tar(path)
    else:
        yield RawSnapshot(str(path), path.name, path.read_bytes(), path.stat().st_mtime)


def _prefetched(items: Iterator[RawSnapshot], size: int) -> Iterator[RawSnapshot]:
    """Run ``items`` in a daemon thread, ``size`` items ahead; errors are re-raised here."""
    buffer: queue.Queue[RawSnapshot | BaseException | None] = queue.Queue(maxsize=size)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put(item)
            buffer.put(None)
        except BaseException as exc:  # handed to the consumer
            buffer.put(exc)

    thread = threading.Thread(target=produce, name="import-reader", daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                buffer.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def _iter_tar(path: Path) -> Iterator[RawSnapshot]:
    """Stream a tar's snapshots in name order.

    A first pass reads only the member names. When the archive is already in name order
    (the usual case) the second pass streams it; otherwise the members are read into
    memory and sorted (a compressed tar cannot be read backwards cheaply).
    """
    try:
        with tarfile.open(path, mode="r|*") as tar:
            names = [m.name for m in tar if m.isfile() and is_snapshot_name(m.name)]
        in_order = all(a <= b for a, b in itertools.pairwise(names))
        if not in_order:
            logger.info("%s: members are not in name order; reading them into memory", path)
        snaps = _stream_tar(path)
        yield from snaps if in_order else sorted(snaps, key=lambda s: s.name)
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        raise ValueError(f"{path}: cannot read the tar archive: {exc}") from exc


def _stream_tar(path: Path) -> Iterator[RawSnapshot]:
    with tarfile.open(path, mode="r|*") as tar:
        for member in tar:
            if not member.isfile() or not is_snapshot_name(member.name):
                continue
            handle = tar.extractfile(member)
            body = handle.read() if handle is not None else b""
            yield RawSnapshot(f"{path}!{member.name}", member.name, body, float(member.mtime))


def sync_filesystem(folder: Path) -> None:
    """Flush every dirty page of the filesystem holding ``folder`` (``syncfs``, else ``sync``)."""
    syncfs = getattr(_LIBC, "syncfs", None) if _LIBC is not None else None
    if syncfs is not None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            if syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    os.sync()


def _load_libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()


class BatchPublisher:
    """Writes files under ``.tmp-*`` names and publishes them together, durably.

    :meth:`publish` syncs the filesystem once, then renames every pending file onto its
    final name; :meth:`discard` removes them (e.g. on an error).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pending: list[tuple[Path, Path]] = []
        self.reserved: set[Path] = set()
        self._folders: set[Path] = set()

    def add(self, path: Path, data: bytes) -> None:
        """Stage ``data`` for ``path`` (invisible to ``*.pb``/``*.json`` globs until published)."""
        if path.parent not in self._folders:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(path.parent)
        staged = path.with_name(f"{TEMP_PREFIX}{path.name}.staged")
        staged.write_bytes(data)
        self.pending.append((staged, path))
        self.reserved.add(path)

    def publish(self) -> None:
        """Make every staged file durable, then visible under its final name."""
        if not self.pending:
            return
        sync_filesystem(self.root)
        for staged, final in self.pending:
            os.replace(staged, final)
        self.pending = []

    def discard(self) -> None:
        """Remove every staged file."""
        for staged, _ in self.pending:
            staged.unlink(missing_ok=True)
        self.pending = []


@dataclass
class SnapshotOutcome:
    """What importing one snapshot did.

    Attributes:
        positions: Validated rows (POSITIONS_SCHEMA) or None (duplicate / decode failure).
        outcome: ``ok``, ``duplicate`` or ``decode_error``.
        error_class: ``decode_<kind>`` for decode failures.
        rule_counts: Validator rule occurrences.
    """

    positions: pa.Table | None
    outcome: str
    error_class: str | None = None
    rule_counts: dict[str, int] | None = None


class SnapshotImporter:
    """Archives, decodes and validates a stream of recorded snapshots of one feed.

    Call :meth:`publish` to make the archived files visible (the import does so before
    every positions write and at the end).

    Args:
        store: Store root.
        feed_id: Feed id.
        validator: The feed's validator (its cross-snapshot state follows name order).
    """

    def __init__(self, store: Path, feed_id: str, validator: FeedValidator) -> None:
        self.store, self.feed_id, self.validator = store, feed_id, validator
        self.publisher = BatchPublisher(store)
        self.seen_sha: dict[str, str] = {}
        self.clock: datetime | None = None

    def publish(self) -> None:
        """Publish the raw files and metadata archived so far."""
        self.publisher.publish()

    def import_snapshot(self, snap: RawSnapshot) -> SnapshotOutcome:
        """Archive one snapshot raw, then decode and validate it (never raises for bad bytes)."""
        digest = hashlib.sha256(snap.body).hexdigest()
        when = self._archive_time(snap)
        stem, path, duplicate_of = self._archive(snap, digest, when)
        meta = RawMeta(feed_id=self.feed_id, fetched_at=when.isoformat(),
                       final_url=f"file://{snap.origin}", bytes=len(snap.body), sha256=digest,
                       headers={"X-Transitnet-Archive-Clock": ARCHIVE_CLOCK_NOTE},
                       file=relative_to_store(self.store, path),
                       duplicate_of=duplicate_of)  # fmt: skip
        result = self._decode(snap, digest, when, meta)
        meta.outcome, meta.error_class = result.outcome, result.error_class
        self.publisher.add(stem.with_name(stem.name + META_SUFFIX), meta.to_json().encode())
        return result

    def _archive_time(self, snap: RawSnapshot) -> datetime:
        ts = read_header_timestamp(snap.body)
        if ts is not None and 1_000_000_000 <= ts < 100_000_000_000:
            self.clock = datetime.fromtimestamp(ts, UTC)
        elif self.clock is None:
            when = snap.mtime if snap.mtime is not None else datetime.now(UTC).timestamp()
            self.clock = datetime.fromtimestamp(when, UTC)
            logger.info("%s: no usable header timestamp; archived at its file time", snap.origin)
        return self.clock

    def _archive(
        self, snap: RawSnapshot, digest: str, when: datetime
    ) -> tuple[Path, Path | None, str | None]:
        """Stage the raw bytes; returns ``(stem, raw file or None, duplicate_of)``."""
        folder, base = raw_dir(self.store, self.feed_id, when), raw_stem(self.feed_id, to_utc(when))
        earlier = self.seen_sha.get(digest)
        for n in range(100_000):
            stem = folder / (base if n == 0 else f"{base}_{n}")
            raw = stem.with_name(stem.name + RAW_SUFFIX)
            if earlier is None and raw.is_file() and _sha256_file(raw) == digest:
                self.seen_sha[digest] = relative_to_store(self.store, raw) or ""
                return stem, raw, None  # archived by an earlier import of the same data
            if not self._taken(stem):
                break
        if earlier is not None:
            self.publisher.reserved.add(stem.with_name(stem.name + META_SUFFIX))
            return stem, None, earlier
        self.publisher.add(raw, snap.body)
        self.seen_sha[digest] = relative_to_store(self.store, raw) or ""
        return stem, raw, None

    def _taken(self, stem: Path) -> bool:
        names = [
            stem.with_name(stem.name + s) for s in (RAW_SUFFIX, META_SUFFIX, ERROR_BODY_SUFFIX)
        ]
        return any(p in self.publisher.reserved or p.exists() for p in names)

    def _decode(
        self, snap: RawSnapshot, digest: str, when: datetime, meta: RawMeta
    ) -> SnapshotOutcome:
        if meta.duplicate_of is not None:
            return SnapshotOutcome(None, "duplicate")
        try:
            decoded = decode_vehicle_positions(
                snap.body, feed_id=self.feed_id, source_file=meta.file
            )
        except FeedDecodeError as exc:
            logger.warning(
                "%s: not decodable (%s); archived raw as %s", snap.origin, exc, meta.file
            )
            meta.error = str(exc)
            return SnapshotOutcome(None, "decode_error", f"decode_{exc.kind}")
        validated = self.validator.validate(decoded, now=when, sha256=digest)
        meta.rules = list(validated.snapshot_rules)
        meta.rows = validated.positions.num_rows
        meta.header_timestamp_raw = decoded.header.timestamp_raw
        meta.header_timestamp = when.isoformat() if decoded.header.timestamp_raw else None
        return SnapshotOutcome(validated.positions, "ok", None, validated.rule_counts)


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
