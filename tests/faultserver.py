"""A loopback HTTP server that misbehaves on request, for fetch/ingest tests.

Usage::

    with FaultServer() as server:
        server.route("/feed", Reply(500), Reply(200, body=b"..."))
        url = server.url("/feed")

Each route holds a script of replies served in order; the last one repeats. A route may
also be a callable ``(RecordedRequest) -> Reply``. Every request is recorded
(``server.requests``) so tests can count attempts and inspect headers.

Import it as ``from tests.faultserver import FaultServer, Reply``.
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit


@dataclass
class Reply:
    """One scripted response.

    Attributes:
        status: HTTP status.
        body: Body bytes.
        headers: Extra response headers.
        delay_s: Sleep before answering (longer than the client's read timeout: a timeout).
        truncate_to: Announce ``len(body)`` but send only this many bytes, then hang up.
        etag: Send this ETag, and answer 304 when the request's If-None-Match matches.
        gzip_encoding: Gzip the body and send ``Content-Encoding: gzip``.
        chunked: Send the body with chunked transfer encoding (no Content-Length).
    """

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    truncate_to: int | None = None
    etag: str | None = None
    gzip_encoding: bool = False
    chunked: bool = False


@dataclass
class RecordedRequest:
    """What the server saw."""

    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw_path: str
    at: float


Route = list[Reply] | Callable[[RecordedRequest], Reply]


class FaultServer:
    """ThreadingHTTPServer on 127.0.0.1, port 0, serving scripted replies."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[RecordedRequest] = []
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, path: str, *replies: Reply) -> None:
        """Serve ``replies`` in order on ``path`` (the last one repeats)."""
        with self._lock:
            self.routes[path] = list(replies)
            self._counts[path] = 0

    def route_fn(self, path: str, fn: Callable[[RecordedRequest], Reply]) -> None:
        """Answer ``path`` with ``fn(request)``."""
        with self._lock:
            self.routes[path] = fn

    def hits(self, path: str) -> list[RecordedRequest]:
        """Requests recorded for ``path``."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def pick(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            route = self.routes.get(request.path)
            if route is None:
                return Reply(404, b"no such route")
            if callable(route):
                return route(request)
            n = self._counts.get(request.path, 0)
            self._counts[request.path] = n + 1
            return route[min(n, len(route) - 1)]


def _make_handler(server: FaultServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            request = RecordedRequest(
                path=parts.path,
                query=parse_qs(parts.query),
                headers={k: v for k, v in self.headers.items()},
                raw_path=self.path,
                at=time.monotonic(),
            )
            reply = server.pick(request)
            if reply.delay_s:
                time.sleep(reply.delay_s)
            try:
                _send(self, reply, request)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


def _send(handler: BaseHTTPRequestHandler, reply: Reply, request: RecordedRequest) -> None:
    if reply.etag is not None and request.headers.get("If-None-Match") == reply.etag:
        handler.send_response(304)
        handler.send_header("ETag", reply.etag)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return
    body = gzip.compress(reply.body) if reply.gzip_encoding else reply.body
    handler.send_response(reply.status)
    for key, value in reply.headers.items():
        handler.send_header(key, value)
    if reply.etag is not None:
        handler.send_header("ETag", reply.etag)
    if reply.gzip_encoding:
        handler.send_header("Content-Encoding", "gzip")
    if reply.chunked:
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for i in range(0, len(body), 8192):
            chunk = body[i : i + 8192]
            handler.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        handler.wfile.write(b"0\r\n\r\n")
        return
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if reply.truncate_to is not None:
        handler.wfile.write(body[: reply.truncate_to])
        handler.wfile.flush()
        handler.close_connection = True
        handler.connection.shutdown(socket.SHUT_RDWR)
        return
    handler.wfile.write(body)


def build_feed(vehicles: int = 2, timestamp: int = 1565683200, start: int = 0) -> bytes:
    """A small valid GTFS-rt VehiclePositions FeedMessage (for fast unit tests).

    Vehicle ``v<i>`` sits near Auckland with vehicle timestamp ``timestamp - 5``.
    """
    from google.transit import gtfs_realtime_pb2

    msg = gtfs_realtime_pb2.FeedMessage()
    msg.header.gtfs_realtime_version = "2.0"
    msg.header.incrementality = gtfs_realtime_pb2.FeedHeader.FULL_DATASET
    msg.header.timestamp = timestamp
    for i in range(start, start + vehicles):
        entity = msg.entity.add(id=f"e{i}")
        vp = entity.vehicle
        vp.vehicle.id = f"v{i}"
        vp.trip.trip_id = f"trip{i}"
        vp.position.latitude = -36.85 + i * 1e-3
        vp.position.longitude = 174.76
        vp.timestamp = timestamp - 5
    return bytes(msg.SerializeToString())
