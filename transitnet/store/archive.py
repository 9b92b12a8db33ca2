"""The raw archive: every body as fetched, written atomically before anything parses it.

For each fetch attempt the archive holds, under ``raw/feed=<id>/date=…/hour=…/``:

- ``<stem>.pb``: the body of a 2xx response, byte for byte (Content-Encoding undone; gzip
  sent without the header stays gzip). A body byte-identical to the feed's previous
  snapshot (same sha256) is *not* written again: its metadata names ``duplicate_of``.
- ``<stem>.body``: the body of an error response or a transfer that broke off (evidence for
  debugging; never replayed as a snapshot).
- ``<stem>.meta.json``: one per attempt, failures included (see :class:`RawMeta`).

``<stem>`` is ``<id>-YYYY-MM-DDTHH-MM-SSZ`` by OUR UTC clock at the start of the attempt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from transitnet.store.layout import (
    ERROR_BODY_SUFFIX,
    RAW_SUFFIX,
    meta_path_for,
    publish_path,
    reserve_raw_stem,
    to_utc,
)


@dataclass
class RawMeta:
    """The ``.meta.json`` of one attempt. Paths are relative to the store root.

    Attributes:
        feed_id: Feed id.
        fetched_at: Our UTC clock at the start of the attempt (ISO 8601).
        scheduled_tick: The tick this attempt belongs to (ISO 8601 UTC), if scheduled.
        attempt: 1-based attempt number within the tick.
        duration_s: Wall time of the attempt.
        outcome: Fetch or decode outcome (``ok``, ``duplicate``, ``decode_error`` …).
        status: HTTP status, None when no response arrived.
        final_url: URL after redirects, secrets redacted.
        redirects: Redirects followed.
        headers: Selected response headers.
        bytes: Body bytes received.
        sha256: Hex digest of the body, when one arrived.
        file: Archived body file (``.pb`` or ``.body``), None when nothing was written.
        duplicate_of: Earlier snapshot with the same sha256, when this one was not written.
        body_complete: False when the transfer broke off.
        redacted: True when a secret value was scrubbed out of the body.
        header_timestamp: FeedHeader timestamp (ISO 8601 UTC) once decoded.
        header_timestamp_raw: The raw uint64 header timestamp.
        error_class: Short error id, None on success.
        error: Error message (scrubbed of secrets).
        rules: Snapshot-level validator rule ids raised.
        rows: Positions rows decoded from the snapshot.
        rows_written: Rows stored after row dedup.
    """

    feed_id: str
    fetched_at: str
    scheduled_tick: str | None = None
    attempt: int = 1
    duration_s: float | None = None
    outcome: str = "ok"
    status: int | None = None
    final_url: str | None = None
    redirects: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    bytes: int = 0
    sha256: str | None = None
    file: str | None = None
    duplicate_of: str | None = None
    body_complete: bool = True
    redacted: bool = False
    header_timestamp: str | None = None
    header_timestamp_raw: int | None = None
    error_class: str | None = None
    error: str | None = None
    rules: list[str] = field(default_factory=list)
    rows: int | None = None
    rows_written: int | None = None

    def to_json(self) -> str:
        """Serialise as pretty, key-sorted JSON."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"


@dataclass(frozen=True)
class ArchivedBody:
    """Where one attempt's body went.

    Attributes:
        stem: ``raw_dir/stem`` without suffix; the meta file is ``stem.meta.json``.
        path: The written ``.pb``/``.body`` file, None for duplicates and empty bodies.
        sha256: Hex digest of the body.
        duplicate_of: The earlier ``.pb`` (relative to the store) this body repeats.
    """

    stem: Path
    path: Path | None
    sha256: str | None
    duplicate_of: str | None


def compute_sha256(body: bytes) -> str:
    """Hex sha256 of ``body``."""
    return hashlib.sha256(body).hexdigest()


def archive_body(
    store: Path,
    feed_id: str,
    fetched_at: datetime,
    body: bytes | None,
    *,
    snapshot: bool,
    previous_sha256: str | None = None,
    previous_file: str | None = None,
) -> ArchivedBody:
    """Atomically archive one attempt's body before anything parses it.

    Args:
        store: Store root.
        feed_id: Feed id.
        fetched_at: Our tz-aware clock at the start of the attempt (names the file).
        body: Bytes received, or None when no body arrived (only the stem is reserved).
        snapshot: True for a complete 2xx body (``.pb``), False for error bodies (``.body``).
        previous_sha256: sha256 of the feed's previous snapshot, for snapshot dedup.
        previous_file: Store-relative path of that snapshot.

    Returns:
        Where the body went; ``path`` is None for a duplicate snapshot or no body.
    """
    stem = reserve_raw_stem(store, feed_id, to_utc(fetched_at))
    if body is None:
        return ArchivedBody(stem, None, None, None)
    digest = compute_sha256(body)
    if snapshot and previous_sha256 is not None and digest == previous_sha256:
        return ArchivedBody(stem, None, digest, previous_file)
    if not snapshot and not body:
        return ArchivedBody(stem, None, digest, None)
    path = stem.with_name(stem.name + (RAW_SUFFIX if snapshot else ERROR_BODY_SUFFIX))
    write_bytes_published(path, body)
    return ArchivedBody(stem, path, digest, None)


def write_bytes_published(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, invisible to globs until complete."""
    with publish_path(path) as tmp:
        tmp.write_bytes(data)


def write_meta(stem: Path, meta: RawMeta) -> Path:
    """Atomically write ``stem.meta.json``; returns its path."""
    path = meta_path_for(stem)
    write_bytes_published(path, meta.to_json().encode("utf-8"))
    return path


def read_meta(path: Path) -> dict[str, Any]:
    """Read a ``.meta.json`` file.

    Raises:
        ValueError: when the file is not a JSON object.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def relative_to_store(store: Path, path: Path | None) -> str | None:
    """``path`` relative to the store root as a POSIX string (None stays None)."""
    if path is None:
        return None
    try:
        return path.relative_to(store).as_posix()
    except ValueError:
        return path.as_posix()
