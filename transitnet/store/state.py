"""Per-feed state kept between ticks: ``state/<id>.json``, written atomically.

The state holds what the next tick of a feed needs to know about the previous ones: the
last archived snapshot (sha256, path and whether it decoded), ETag/Last-Modified for
conditional GETs, a 429 deferral, the circuit breaker, the validator's cross-snapshot state
and the last fix key per vehicle (for row dedup). A state file that cannot be read is moved
aside (``<id>.json.corrupt-<UTC>``) with a warning and the feed starts afresh: losing it
costs at most one re-stored snapshot, never archived data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from transitnet.store.atomic import write_text_atomic
from transitnet.store.layout import state_path

logger = logging.getLogger(__name__)

STATE_VERSION = 1


@dataclass
class FeedState:
    """What one feed's next tick needs from the previous ones.

    Attributes:
        feed_id: Feed id.
        last_sha256: sha256 of the last archived snapshot body.
        last_raw: Store-relative path of that snapshot's ``.pb``.
        last_error_class: Its decode error class, None when it decoded.
        etag: ETag of the last good response (for ``If-None-Match``).
        last_modified: Last-Modified of the last good response.
        deferred_until: No polling before this time (a 429's ``Retry-After``).
        breaker: :meth:`CircuitBreaker.state_dict` output.
        validator: ``FeedValidator.state_dict()`` output.
        last_keys: Vehicle key → ``[vehicle_timestamp_raw, trip_id, start_time]``.
    """

    feed_id: str
    last_sha256: str | None = None
    last_raw: str | None = None
    last_error_class: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    deferred_until: datetime | None = None
    breaker: dict[str, Any] = field(default_factory=dict)
    validator: dict[str, Any] | None = None
    last_keys: dict[str, list[Any]] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialise (datetimes as ISO 8601 UTC)."""
        # Shallow copy: dataclasses.asdict would deep-copy last_keys, the slow part here.
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["version"] = STATE_VERSION
        if self.deferred_until is not None:
            data["deferred_until"] = self.deferred_until.astimezone(UTC).isoformat()
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, feed_id: str) -> FeedState:
        """Parse :meth:`to_json` output.

        Raises:
            ValueError: for malformed JSON, another version, or another feed's state.
        """
        data = json.loads(text)
        if not isinstance(data, dict) or data.pop("version", None) != STATE_VERSION:
            raise ValueError(f"not a version-{STATE_VERSION} feed state")
        if data.get("feed_id") != feed_id:
            raise ValueError(f"state belongs to feed {data.get('feed_id')!r}")
        until = data.get("deferred_until")
        data["deferred_until"] = datetime.fromisoformat(until) if until else None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown state fields {unknown}")
        return cls(**data)


def load_feed_state(store: Path, feed_id: str) -> FeedState:
    """Read a feed's state; a missing file gives a fresh state, a corrupt one is set aside."""
    path = state_path(store, feed_id)
    if not path.is_file():
        return FeedState(feed_id)
    try:
        return FeedState.from_json(path.read_text(encoding="utf-8"), feed_id)
    except (ValueError, TypeError, OSError) as exc:
        aside = path.with_name(f"{path.name}.corrupt-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
        path.replace(aside)
        logger.warning("%s: unreadable state (%s); moved to %s, starting afresh",
                       feed_id, exc, aside.name)  # fmt: skip
        return FeedState(feed_id)


def save_feed_state(store: Path, state: FeedState) -> Path:
    """Write a feed's state atomically; returns the path."""
    path = state_path(store, state.feed_id)
    write_text_atomic(path, state.to_json())
    return path


class FeedLockedError(RuntimeError):
    """Another process is running a tick of the same feed on the same store."""


@contextlib.contextmanager
def feed_lock(store: Path, feed_id: str) -> Iterator[None]:
    """Hold ``state/<id>.lock`` exclusively for one tick (at most one run per feed).

    Raises:
        FeedLockedError: when another process holds it (e.g. two overlapping cron runs).
    """
    busy = FeedLockedError(f"feed {feed_id} is being polled by another process")
    with hold_lock(state_path(store, feed_id).with_suffix(".lock"), busy):
        yield


@contextlib.contextmanager
def hold_lock(path: Path, busy: Exception) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created with its folder if missing).

    Raises:
        Exception: ``busy``, at once, when another process holds the lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise busy from exc
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
