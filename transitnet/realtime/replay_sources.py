"""Recorded snapshots to replay: folders and tars of ``.pb`` files, or re-encoded tables.

Snapshots are listed in name order (relative path in a folder, member name in a tar);
bodies are kept byte for byte (gzip stays gzip). A folder is searched recursively, so a
store's ``raw/`` tree replays too (``.meta.json``, ``.body`` and ``.tmp-*`` files are
skipped).
"""

from __future__ import annotations

import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from google.protobuf.message import DecodeError
from google.transit import gtfs_realtime_pb2

from transitnet.realtime.decode import FeedDecodeError, decompress_body
from transitnet.realtime.encode import encode_snapshots

logger = logging.getLogger(__name__)

SNAPSHOT_SUFFIXES = (".pb", ".pb.gz", ".pb.bz2", ".pbf", ".gz", ".bz2")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2")


@dataclass(frozen=True)
class Snapshot:
    """One recorded snapshot.

    Attributes:
        name: File or member name (its order key).
        header_timestamp_raw: FeedHeader.timestamp, or None when absent/undecodable.
        body: The recorded bytes, or None when they are read lazily from ``path``.
        path: The file holding the bytes when ``body`` is None.
    """

    name: str
    header_timestamp_raw: int | None
    body: bytes | None = None
    path: Path | None = None

    def read(self) -> bytes:
        """Return the snapshot's bytes exactly as recorded."""
        if self.body is not None:
            return self.body
        if self.path is None:
            raise ValueError(f"snapshot {self.name} has neither bytes nor a path")
        return self.path.read_bytes()


def read_header_timestamp(body: bytes) -> int | None:
    """Return the FeedHeader timestamp of a (possibly compressed) body, or None.

    Only the header is parsed when it comes first (as every publisher writes it);
    otherwise the whole message. Undecodable bodies (truncated, HTML, empty...) give None:
    they are still served.
    """
    try:
        raw = decompress_body(body)
        header = _parse_leading_header(raw)
        if header is None:
            msg = gtfs_realtime_pb2.FeedMessage()
            msg.ParseFromString(raw)
            header = msg.header
    except (FeedDecodeError, DecodeError):
        return None
    return int(header.timestamp) if header.HasField("timestamp") else None


def _parse_leading_header(raw: bytes) -> Any:
    """Parse field 1 (FeedHeader) when it is the first field of the message, else None."""
    if not raw or raw[0] != 0x0A:
        return None
    length, shift, pos = 0, 0, 1
    while pos < len(raw) and shift < 35:
        byte = raw[pos]
        length |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            break
    else:
        return None
    if pos + length > len(raw):
        return None
    header = gtfs_realtime_pb2.FeedHeader()
    header.ParseFromString(raw[pos : pos + length])
    return header


def is_tar_path(path: Path) -> bool:
    """Whether ``path`` names a tar archive (by suffix)."""
    return path.name.lower().endswith(TAR_SUFFIXES)


def is_snapshot_name(name: str) -> bool:
    """Whether a file/member name looks like a raw snapshot (not metadata or a temp file)."""
    base = name.rsplit("/", 1)[-1]
    if base.startswith(".") or base.endswith((".json", ".json.gz")):
        return False
    return base.lower().endswith(SNAPSHOT_SUFFIXES)


def load_snapshots(source: Path, *, lazy: bool = True) -> list[Snapshot]:
    """List the snapshots of a folder or tar archive in name order.

    Args:
        source: A folder (searched recursively) or a tar file.
        lazy: For folders, re-read bytes from disk when served instead of holding them.

    Returns:
        Snapshots sorted by relative path / member name.

    Raises:
        FileNotFoundError: when ``source`` does not exist.
        ValueError: when it holds no snapshot files or is neither a folder nor a tar.
    """
    if not source.exists():
        raise FileNotFoundError(f"replay source not found: {source}")
    if source.is_dir():
        snaps = _load_folder(source, lazy=lazy)
    elif is_tar_path(source):
        snaps = _load_tar(source)
    else:
        raise ValueError(f"{source} is neither a folder nor a tar of .pb snapshots")
    if not snaps:
        raise ValueError(f"no snapshot files (*.pb, *.pb.gz, *.pb.bz2) in {source}")
    return snaps


def _load_folder(folder: Path, *, lazy: bool) -> list[Snapshot]:
    files = sorted(
        (p for p in folder.rglob("*") if p.is_file() and is_snapshot_name(p.name)),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    out = []
    for path in files:
        body = path.read_bytes()
        name = path.relative_to(folder).as_posix()
        ts = read_header_timestamp(body)
        out.append(Snapshot(name, ts, None if lazy else body, path))
    return out


def _load_tar(path: Path) -> list[Snapshot]:
    out = []
    with tarfile.open(path) as tar:
        for member in tar:
            if not member.isfile() or not is_snapshot_name(member.name):
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            body = handle.read()
            out.append(Snapshot(member.name, read_header_timestamp(body), body))
    out.sort(key=lambda s: s.name)
    return out


def snapshots_from_table(
    positions: pa.Table, *, feed_version: str | None = None, bin_s: int | None = 30
) -> list[Snapshot]:
    """Re-encode a positions table into one FeedMessage snapshot per timestamp.

    Args:
        positions: Positions columns (see :func:`transitnet.realtime.encode.encode_snapshots`
            for the grouping by ``header_timestamp_raw`` or ``vehicle_timestamp_raw``).
        feed_version: Optional FeedHeader.feed_version for every message.
        bin_s: For tables without header timestamps (e.g. CapMetrics CSV): one snapshot
            per window of this many seconds, holding the fixes made in it; None = one
            snapshot per distinct vehicle timestamp.

    Returns:
        Snapshots named ``snapshot-<timestamp>`` in time order.
    """
    encoded = encode_snapshots(positions, feed_version=feed_version, bin_s=bin_s)
    return [
        Snapshot(f"snapshot-{e.header_timestamp_raw}", e.header_timestamp_raw, e.body)
        for e in encoded
    ]
