"""Serve a recorded GTFS-realtime archive over HTTP on 127.0.0.1, in order, at a speed-up.

Sources (see :func:`load_snapshots`): a folder of snapshots (``*.pb``, ``*.pb.gz``,
``*.pb.bz2``, searched recursively, so a store's ``raw/`` tree works too), a tar
(``.tar``, ``.tar.gz``/``.tgz``, ``.tar.xz``, ``.tar.bz2``), or a positions table that
:func:`snapshots_from_table` re-encodes into one FeedMessage per timestamp. Snapshots are
served in name order (relative path, or tar member name), bodies byte for byte as
recorded (gzip bodies stay gzip, without a ``Content-Encoding`` header).

Clock: with ``speed > 0`` the snapshot on air is the last one whose recorded header
timestamp, minus the first one's, divided by ``speed``, has elapsed since the server
started (see :func:`compute_offsets` for snapshots without a usable timestamp). With
``speed == 0`` every feed request is answered with the next snapshot (useful in tests).
After the last snapshot the server keeps serving it, and ``/status`` says ``done`` once it
has been served, unless ``loop`` restarts from the first one (one typical interval after
the last).

Endpoints: ``/feed`` (also ``/`` and ``/feed.pb``) with ``ETag`` (sha256 of the body)
and ``Last-Modified`` (the header timestamp), answering conditional GETs with 304;
``/status`` JSON: ``position``, ``total``, ``served``, ``loops``, ``done``, ``name``,
``header_timestamp``, ``speed``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from transitnet.realtime.replay_sources import (
    Snapshot,
    is_snapshot_name,
    is_tar_path,
    load_snapshots,
    read_header_timestamp,
    snapshots_from_table,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ReplayServer",
    "Snapshot",
    "compute_offsets",
    "is_snapshot_name",
    "is_tar_path",
    "load_snapshots",
    "read_header_timestamp",
    "snapshots_from_table",
]
#: Header timestamps at or above this are milliseconds or worse: not used for the clock.
_MS_RANGE = 100_000_000_000
FEED_PATHS = ("/", "/feed", "/feed.pb")


def compute_offsets(snapshots: list[Snapshot]) -> list[float]:
    """Seconds after the first snapshot at which each snapshot goes on air (at speed 1).

    Offsets follow the header timestamps. A snapshot without one, or whose timestamp did
    not advance (E017/E018), goes on air one typical interval (the median positive gap)
    after its predecessor, so every snapshot is served, in name order.
    """
    stamps = [s.header_timestamp_raw for s in snapshots]
    known = [t for t in stamps if t is not None and t < _MS_RANGE]
    gaps = sorted(b - a for a, b in itertools.pairwise(known) if b > a)
    step = float(gaps[len(gaps) // 2]) if gaps else 1.0
    first = known[0] if known else 0
    offsets: list[float] = []
    for ts in stamps:
        previous = offsets[-1] if offsets else None
        usable = ts is not None and ts < _MS_RANGE
        candidate = float(ts - first) if usable and ts is not None else None
        if previous is None:
            offsets.append(candidate if candidate is not None and candidate >= 0 else 0.0)
        elif candidate is None or candidate <= previous:
            offsets.append(previous + step)
        else:
            offsets.append(candidate)
    return offsets


class _Clock:
    """Which snapshot is on air; thread-safe."""

    def __init__(
        self, snapshots: list[Snapshot], speed: float, loop: bool, now: Callable[[], float]
    ) -> None:
        self.snapshots = snapshots
        self.offsets = compute_offsets(snapshots)
        self.speed = speed
        self.loop = loop
        self.now = now
        self.lock = threading.Lock()
        self.started = now()
        self.served = 0
        self.final_served = False  # the last snapshot has been served at least once
        self.step = 0  # speed 0: index of the next snapshot to serve (counting loops)
        self.last_position = 0
        self.last_loops = 0

    def _position_at(self, elapsed: float) -> tuple[int, int]:
        recorded = elapsed * self.speed
        n = len(self.snapshots)
        if self.loop:
            # one median gap between the last and the first snapshot of the next loop
            period = self.offsets[-1] + self._gap()
            loops, recorded = divmod(recorded, period)
        else:
            loops = 0
        index = _last_at_or_before(self.offsets, recorded)
        return min(index, n - 1), int(loops)

    def _gap(self) -> float:
        gaps = sorted(b - a for a, b in itertools.pairwise(self.offsets))
        return gaps[len(gaps) // 2] if gaps else 1.0

    def take(self) -> tuple[int, int]:
        """Return ``(position, loops)`` for one feed request and advance the counters."""
        with self.lock:
            n = len(self.snapshots)
            if self.speed == 0:
                step = self.step if self.loop else min(self.step, n - 1)
                self.step += 1
                position, loops = step % n, step // n
            else:
                position, loops = self._position_at(self.now() - self.started)
            self.served += 1
            self.final_served |= position == n - 1
            self.last_position, self.last_loops = position, loops
            return position, loops

    def status(self) -> dict[str, Any]:
        """Return the ``/status`` document."""
        with self.lock:
            n = len(self.snapshots)
            if self.speed == 0:
                position, loops = self.last_position, self.last_loops
            else:
                position, loops = self._position_at(self.now() - self.started)
            done = not self.loop and self.final_served
            snap = self.snapshots[position]
            return {
                "position": position,
                "total": n,
                "served": self.served,
                "loops": loops,
                "done": done,
                "name": snap.name,
                "header_timestamp": snap.header_timestamp_raw,
                "speed": self.speed,
                "loop": self.loop,
            }


def _last_at_or_before(offsets: list[float], value: float) -> int:
    lo, hi = 0, len(offsets)
    while lo < hi:
        mid = (lo + hi) // 2
        if offsets[mid] <= value:
            lo = mid + 1
        else:
            hi = mid
    return max(lo - 1, 0)


class ReplayServer:
    """An HTTP server replaying snapshots on 127.0.0.1; a context manager.

    Example:
        >>> with ReplayServer(load_snapshots(path), speed=0) as server:  # doctest: +SKIP
        ...     requests.get(server.url)

    Args:
        snapshots: What to serve, in order (see :func:`load_snapshots`).
        speed: Recorded seconds per wall second; 0 advances on every feed request.
        loop: Start again from the first snapshot after the last.
        port: TCP port; 0 picks a free one (see :attr:`url`).
        host: Interface to bind; loopback by default.
        clock: Monotonic time source (injectable for tests).
    """

    def __init__(
        self,
        snapshots: list[Snapshot],
        *,
        speed: float = 1.0,
        loop: bool = False,
        port: int = 0,
        host: str = "127.0.0.1",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not snapshots:
            raise ValueError("nothing to replay: the snapshot list is empty")
        if speed < 0:
            raise ValueError(f"speed must be >= 0 (0 = advance per request), got {speed}")
        self.snapshots = snapshots
        self.speed = speed
        self.loop = loop
        self._clock_fn = clock
        self._etags: dict[int, str] = {}
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None
        self._clock = _Clock(snapshots, speed, loop, clock)

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The feed URL, e.g. ``http://127.0.0.1:8765/feed``."""
        return f"http://127.0.0.1:{self.port}/feed"

    @property
    def status_url(self) -> str:
        """The ``/status`` URL."""
        return f"http://127.0.0.1:{self.port}/status"

    def start(self) -> ReplayServer:
        """Start serving in a background thread; the replay clock starts now."""
        self._clock = _Clock(self.snapshots, self.speed, self.loop, self._clock_fn)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="replay", daemon=True
        )
        self._thread.start()
        logger.info(
            "replaying %d snapshots at %s (speed %s%s)",
            len(self.snapshots),
            self.url,
            self.speed or "0 = one per request",
            ", looping" if self.loop else "",
        )
        return self

    def stop(self) -> None:
        """Stop serving, close the socket and join the thread (idempotent)."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._httpd.server_close()

    def status(self) -> dict[str, Any]:
        """The ``/status`` document (see module doc)."""
        return self._clock.status()

    def wait_done(self, timeout: float | None = None, poll_s: float = 0.05) -> bool:
        """Block until the last snapshot has been served; returns whether it was."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.status()["done"]:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(poll_s)
        return True

    def next_response(self) -> tuple[int, bytes, str]:
        """Pick the snapshot for one feed request: ``(index, body, etag)``."""
        index, _ = self._clock.take()
        body = self.snapshots[index].read()
        etag = self._etags.get(index)
        if etag is None:
            etag = '"' + hashlib.sha256(body).hexdigest()[:40] + '"'
            self._etags[index] = etag
        return index, body, etag

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _make_handler(server: ReplayServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_ReplayHandler):
        replay = server

    return Handler


class _ReplayHandler(BaseHTTPRequestHandler):
    replay: ReplayServer
    protocol_version = "HTTP/1.1"
    server_version = "transitnet-replay"

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _respond(self, *, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/status":
            self._send(
                200, json.dumps(self.replay.status()).encode(), "application/json", {}, send_body
            )
        elif path in FEED_PATHS:
            self._respond_feed(send_body)
        else:
            self._send(404, b"not found\n", "text/plain", {}, send_body)

    def _respond_feed(self, send_body: bool) -> None:
        index, body, etag = self.replay.next_response()
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        last_modified = _last_modified(self.replay.snapshots[index])
        if last_modified is not None:
            headers["Last-Modified"] = last_modified
        if _not_modified(self.headers, etag, self.replay.snapshots[index]):
            self._send(304, b"", None, headers, send_body=False)
            return
        self._send(200, body, "application/x-protobuf", headers, send_body)

    def _send(
        self, status: int, body: bytes, ctype: str | None, headers: dict[str, str], send_body: bool
    ) -> None:
        self.send_response(status)
        if ctype is not None:
            self.send_header("Content-Type", ctype)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body) if status != 304 else 0))
        self.end_headers()
        if send_body and status != 304:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


def _last_modified(snapshot: Snapshot) -> str | None:
    ts = snapshot.header_timestamp_raw
    if ts is None or ts >= 100_000_000_000:
        return None
    return format_datetime(datetime.fromtimestamp(ts, UTC), usegmt=True)


def _not_modified(headers: Any, etag: str, snapshot: Snapshot) -> bool:
    """RFC 9110: If-None-Match wins over If-Modified-Since."""
    inm = headers.get("If-None-Match")
    if inm is not None:
        tags = [t.strip() for t in inm.split(",")]
        return etag in tags or "*" in tags or f"W/{etag}" in tags
    ims = headers.get("If-Modified-Since")
    ts = snapshot.header_timestamp_raw
    if ims is None or ts is None or ts >= 100_000_000_000:
        return False
    try:
        since = parsedate_to_datetime(ims).timestamp()
    except (TypeError, ValueError):
        return False
    return ts <= since
