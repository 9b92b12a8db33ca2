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
"""

from __future__ import annotations

import hashlib
import logging
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from transitnet.realtime.decode import FeedDecodeError, decode_vehicle_positions
from transitnet.realtime.replay import is_snapshot_name, is_tar_path
from transitnet.realtime.validate import FeedValidator
from transitnet.store.archive import (
    ArchivedBody,
    RawMeta,
    archive_body,
    relative_to_store,
    write_meta,
)
from transitnet.store.layout import RAW_SUFFIX, raw_dir, raw_stem

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


def count_raw_snapshots(path: Path) -> int:
    """Number of snapshot files in a folder/tar/file (for the progress bar)."""
    if path.is_dir():
        return sum(1 for p in path.rglob("*") if p.is_file() and is_snapshot_name(p.name))
    if is_tar_path(path):
        with tarfile.open(path) as tar:
            return sum(1 for m in tar.getmembers() if m.isfile() and is_snapshot_name(m.name))
    return 1


def iter_raw_snapshots(path: Path) -> Iterator[RawSnapshot]:
    """Yield the snapshots of a folder (recursive), tar or single file in name order.

    Raises:
        ValueError: when a tar cannot be read.
    """
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


def _iter_tar(path: Path) -> Iterator[RawSnapshot]:
    try:
        with tarfile.open(path) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and is_snapshot_name(m.name)]
            ordered = sorted(members, key=lambda m: m.name)
            if ordered != members:
                logger.info("%s: members are not in name order; sorting them", path)
            for member in ordered:
                handle = tar.extractfile(member)
                body = handle.read() if handle is not None else b""
                yield RawSnapshot(f"{path}!{member.name}", member.name, body, float(member.mtime))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ValueError(f"{path}: cannot read the tar archive: {exc}") from exc


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

    Args:
        store: Store root.
        feed_id: Feed id.
        validator: The feed's validator (its cross-snapshot state follows name order).
    """

    def __init__(self, store: Path, feed_id: str, validator: FeedValidator) -> None:
        self.store, self.feed_id, self.validator = store, feed_id, validator
        self.seen_sha: dict[str, str] = {}
        self.clock: datetime | None = None

    def import_snapshot(self, snap: RawSnapshot) -> SnapshotOutcome:
        """Archive one snapshot raw, then decode and validate it (never raises for bad bytes)."""
        digest = hashlib.sha256(snap.body).hexdigest()
        archive_time = self._archive_time(snap)
        archived = self._archive(snap, digest, archive_time)
        meta = RawMeta(feed_id=self.feed_id, fetched_at=archive_time.isoformat(),
                       final_url=f"file://{snap.origin}", bytes=len(snap.body), sha256=digest,
                       headers={"X-Transitnet-Archive-Clock": ARCHIVE_CLOCK_NOTE},
                       file=relative_to_store(self.store, archived.path),
                       duplicate_of=archived.duplicate_of)  # fmt: skip
        result = self._decode(snap, digest, archive_time, archived, meta)
        meta.outcome, meta.error_class = result.outcome, result.error_class
        write_meta(archived.stem, meta)
        return result

    def _archive_time(self, snap: RawSnapshot) -> datetime:
        from transitnet.realtime.replay import read_header_timestamp

        ts = read_header_timestamp(snap.body)
        if ts is not None and 1_000_000_000 <= ts < 100_000_000_000:
            self.clock = datetime.fromtimestamp(ts, UTC)
        elif self.clock is None:
            when = snap.mtime if snap.mtime is not None else datetime.now(UTC).timestamp()
            self.clock = datetime.fromtimestamp(when, UTC)
            logger.info("%s: no usable header timestamp; archived at its file time", snap.origin)
        return self.clock

    def _archive(self, snap: RawSnapshot, digest: str, when: datetime) -> ArchivedBody:
        earlier = self.seen_sha.get(digest)
        if earlier is not None:
            return archive_body(self.store, self.feed_id, when, snap.body, snapshot=True,
                                previous_sha256=digest, previous_file=earlier)  # fmt: skip
        archived = self._find_archived(when, digest)
        if archived is None:
            archived = archive_body(self.store, self.feed_id, when, snap.body, snapshot=True)
        self.seen_sha[digest] = relative_to_store(self.store, archived.path) or ""
        return archived

    def _find_archived(self, when: datetime, digest: str) -> ArchivedBody | None:
        """The same bytes already archived under this time's name (an earlier import)."""
        folder, stem = raw_dir(self.store, self.feed_id, when), raw_stem(self.feed_id, when)
        for n in range(1_000):
            name = stem if n == 0 else f"{stem}_{n}"
            path = folder / (name + RAW_SUFFIX)
            if not path.is_file():
                return None
            if hashlib.sha256(path.read_bytes()).hexdigest() == digest:
                return ArchivedBody(folder / name, path, digest, None)
        return None

    def _decode(
        self, snap: RawSnapshot, digest: str, when: datetime, archived: ArchivedBody, meta: RawMeta
    ) -> SnapshotOutcome:
        if archived.duplicate_of is not None:
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
