"""Fetch one GTFS-realtime feed over HTTP(S), politely and without leaking keys.

Behaviour (see ANCHORS.md §1):

- separate connect and read timeouts, plus a total deadline for slow-drip bodies;
- within one tick, retry only timeouts, transport errors and 5xx: at most ``max_attempts``
  attempts, waiting ``1 s, 2 s, 4 s …`` capped at 10 s (the sleep is injectable);
- never retry 400/401/403/404/410 (nor any other 4xx);
- 429 honours ``Retry-After`` (seconds or HTTP date): a short wait is taken inside the tick,
  a long one defers the feed to a later tick (:attr:`FetchResult.deferred_until`);
- conditional GET (``If-None-Match``/``If-Modified-Since``): a 304 is recorded, not parsed;
- redirects are followed and the final URL is recorded (redacted);
- ``Content-Encoding`` is undone while streaming; gzip sent *without* the header is left to
  the decoder, which sniffs the magic bytes;
- the response size is capped while streaming (also after decompression);
- API keys come from environment-variable *names* in the config, read at fetch time. Their
  values are scrubbed from every string and body this module returns, and from urllib3's
  debug log lines, so they never reach a path, a log or a metadata file.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
import urllib3.exceptions

from transitnet import __version__
from transitnet.realtime.secrets import (
    MissingSecretError,
    read_secrets,
    scrub_bytes,
    scrub_text,
)

logger = logging.getLogger(__name__)

DEFAULT_USER_AGENT = f"transitnet/{__version__} (GTFS-realtime archiver)"
#: Response headers kept in the archive metadata and passed to the caller.
SELECTED_HEADERS = ("ETag", "Last-Modified", "Content-Type", "Content-Encoding",
                    "Content-Length", "Date", "Age", "Cache-Control", "Retry-After")  # fmt: skip
#: Statuses that are never retried.
NO_RETRY_STATUSES = frozenset({400, 401, 403, 404, 410})
_ERROR_BODY_LIMIT = 1 << 20


@dataclass(frozen=True)
class FeedEndpoint:
    """Everything needed to poll one feed (built from a ``feeds.yaml`` entry).

    Attributes:
        feed_id: Stable feed id (used in paths and partitions).
        url: HTTP(S) URL; must not itself contain keys (use ``params_from_env``).
        connect_timeout_s: Timeout to establish the connection.
        read_timeout_s: Timeout between two bytes from the server.
        total_timeout_s: Deadline for a whole attempt, against slow-drip servers.
        max_bytes: Largest body accepted (after Content-Encoding is undone).
        user_agent: ``User-Agent`` header.
        headers_from_env: Header name → NAME of the environment variable holding its value.
        params_from_env: Query parameter → NAME of the environment variable holding its value.
        max_attempts: Attempts per tick (retries only for timeouts, transport errors, 5xx).
        backoff_base_s: First wait between attempts.
        backoff_cap_s: Longest wait between attempts.
        max_retry_after_s: A 429 ``Retry-After`` up to this is waited out inside the tick.
    """

    feed_id: str
    url: str
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    total_timeout_s: float = 60.0
    max_bytes: int = 50 * 2**20
    user_agent: str = DEFAULT_USER_AGENT
    headers_from_env: Mapping[str, str] = field(default_factory=dict)
    params_from_env: Mapping[str, str] = field(default_factory=dict)
    max_attempts: int = 3
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 10.0
    max_retry_after_s: float = 10.0


@dataclass
class FetchAttempt:
    """One HTTP attempt; every attempt becomes exactly one fetch-log row.

    Attributes:
        attempt: 1-based attempt number within the tick.
        started_at: Our UTC clock when the attempt started (names the archive file).
        duration_s: Wall time of the attempt.
        outcome: ``ok``, ``not_modified``, ``http_error``, ``rate_limited``, ``timeout``,
            ``transport_error``, ``too_large`` or ``config_error``.
        status: HTTP status, None when no response arrived.
        body: Bytes received (Content-Encoding undone, secrets scrubbed), None if none.
        body_complete: False when the transfer broke off (``body`` is then partial).
        bytes_received: Body bytes read, also when the body was refused or partial.
        headers: The :data:`SELECTED_HEADERS` present in the response.
        final_url: URL after redirects, with secrets redacted.
        redirects: Number of redirects followed.
        error_class: Short stable error id (``read_timeout``, ``http_404``, ``too_large`` …).
        error: Human-readable message, scrubbed of secrets.
        redacted: Whether a secret value was scrubbed out of the body.
    """

    attempt: int
    started_at: datetime
    duration_s: float = 0.0
    outcome: str = "ok"
    status: int | None = None
    body: bytes | None = None
    body_complete: bool = True
    bytes_received: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    final_url: str | None = None
    redirects: int = 0
    error_class: str | None = None
    error: str | None = None
    redacted: bool = False

    @property
    def retryable(self) -> bool:
        """Timeouts, transport errors and 5xx may be retried within the tick."""
        if self.outcome in ("timeout", "transport_error"):
            return True
        return self.status is not None and self.status >= 500


@dataclass
class FetchResult:
    """All attempts of one tick; the last one decides the tick's outcome.

    Attributes:
        attempts: Every attempt made, in order (never empty).
        deferred_until: Set when a 429 asked us to wait past this tick.
    """

    attempts: list[FetchAttempt]
    deferred_until: datetime | None = None

    @property
    def final(self) -> FetchAttempt:
        """The last attempt."""
        return self.attempts[-1]


def backoff_s(endpoint: FeedEndpoint, attempt: int) -> float:
    """Wait before attempt ``attempt + 1``: base x 2^(attempt-1), capped."""
    return float(min(endpoint.backoff_cap_s, endpoint.backoff_base_s * 2 ** (attempt - 1)))


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP date).

    Returns None when the header is absent or unreadable; past dates give 0.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        logger.warning("unreadable Retry-After header %r", value[:64])
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def fetch_feed(
    endpoint: FeedEndpoint,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    session: requests.Session | None = None,
    sleep: Callable[[float], Any] = time.sleep,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    keep_going: Callable[[], bool] = lambda: True,
    on_attempt: Callable[[FetchAttempt], None] | None = None,
) -> FetchResult:
    """Poll ``endpoint`` once (one tick), with retries inside the tick.

    Args:
        endpoint: The feed to poll.
        etag: ETag of the last good response (sent as ``If-None-Match``).
        last_modified: Last-Modified of the last good response (``If-Modified-Since``).
        session: A requests session to reuse connections; a private one otherwise.
        sleep: Waits between attempts (tests inject a fake; shutdown an interruptible one).
        clock: Our UTC clock.
        keep_going: Checked before every retry; False (e.g. on shutdown) stops retrying.
        on_attempt: Called right after each attempt, e.g. to archive its body at once.

    Returns:
        Every attempt made; never raises for feed or network problems.
    """
    attempts: list[FetchAttempt] = []
    deferred: datetime | None = None
    own = session is None
    sess = requests.Session() if session is None else session
    try:
        for n in range(1, endpoint.max_attempts + 1):
            attempt = fetch_attempt(endpoint, sess, n, clock, etag, last_modified)
            attempts.append(attempt)
            if on_attempt is not None:
                on_attempt(attempt)
            wait, deferred = _next_wait(endpoint, attempt, n, clock())
            if wait is None or not keep_going():
                break
            logger.info("%s: %s, retrying in %.1f s", endpoint.feed_id, attempt.error_class, wait)
            sleep(wait)
            if not keep_going():
                break
    finally:
        if own:
            sess.close()
    return FetchResult(attempts, deferred)


def _next_wait(
    endpoint: FeedEndpoint, attempt: FetchAttempt, n: int, now: datetime
) -> tuple[float | None, datetime | None]:
    """Seconds to wait before retrying (None: stop), and a deferral for long 429 waits."""
    last = n >= endpoint.max_attempts
    if attempt.status == 429:
        delay = parse_retry_after(attempt.headers.get("Retry-After"), now)
        if delay is None:
            return None, None
        if delay <= endpoint.max_retry_after_s and not last:
            return delay, None
        return None, now + timedelta(seconds=delay)
    if attempt.retryable and not last:
        return backoff_s(endpoint, n), None
    return None, None


def fetch_attempt(
    endpoint: FeedEndpoint,
    session: requests.Session,
    n: int,
    clock: Callable[[], datetime],
    etag: str | None = None,
    last_modified: str | None = None,
) -> FetchAttempt:
    """Make one HTTP GET and classify the result (never raises for network errors)."""
    attempt = FetchAttempt(attempt=n, started_at=clock())
    t0 = time.monotonic()
    secrets: tuple[str, ...] = ()
    try:
        sec = read_secrets(endpoint.headers_from_env, endpoint.params_from_env)
        secrets = sec.values
        headers = {"User-Agent": endpoint.user_agent, "Accept": "application/x-protobuf, */*"}
        headers.update(_conditional_headers(etag, last_modified))
        headers.update(sec.headers)
        with session.get(
            endpoint.url, headers=headers, params=sec.params or None, stream=True,
            timeout=(endpoint.connect_timeout_s, endpoint.read_timeout_s),
        ) as resp:  # fmt: skip
            _read_response(endpoint, resp, attempt, t0)
    except MissingSecretError as exc:
        _fail(attempt, "config_error", "missing_secret", str(exc))
    except Exception as exc:  # every network failure becomes a log row, never a crash
        _classify_exception(attempt, exc)
    attempt.duration_s = time.monotonic() - t0
    _scrub_attempt(attempt, secrets)
    return attempt


def _conditional_headers(etag: str | None, last_modified: str | None) -> dict[str, str]:
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    return headers


def _read_response(
    endpoint: FeedEndpoint, resp: requests.Response, attempt: FetchAttempt, t0: float
) -> None:
    """Fill ``attempt`` from a response: status, headers, URL and (capped) body."""
    attempt.status = resp.status_code
    attempt.headers = {h: resp.headers[h] for h in SELECTED_HEADERS if h in resp.headers}
    attempt.final_url = resp.url
    attempt.redirects = len(resp.history)
    if resp.status_code == 304:
        attempt.outcome = "not_modified"
        return
    ok = 200 <= resp.status_code < 300
    limit = endpoint.max_bytes if ok else min(endpoint.max_bytes, _ERROR_BODY_LIMIT)
    declared = resp.headers.get("Content-Length", "")
    if ok and declared.isdigit() and int(declared) > limit:
        attempt.bytes_received = 0
        _fail(attempt, "too_large", "too_large", f"Content-Length {declared} > cap {limit}")
        return
    deadline = t0 + endpoint.total_timeout_s
    body = _read_capped(resp, attempt, limit, deadline, truncate=not ok)
    if body is None:
        return
    attempt.body = body
    if not ok:
        _classify_status(attempt, resp.status_code)


def _read_capped(
    resp: requests.Response, attempt: FetchAttempt, limit: int, deadline: float, *, truncate: bool
) -> bytes | None:
    """Stream the body up to ``limit`` bytes; None (and a failed attempt) if refused."""
    buf = bytearray()
    # Check the length ourselves so the bytes of a broken-off transfer are kept.
    resp.raw.enforce_content_length = False
    try:
        for chunk in resp.iter_content(chunk_size=65536):
            buf += chunk
            attempt.bytes_received = len(buf)
            if len(buf) > limit:
                if truncate:
                    return bytes(buf[:limit])
                _fail(attempt, "too_large", "too_large", f"body exceeds the cap of {limit} bytes")
                return None
            if time.monotonic() > deadline:
                raise TimeoutError("total attempt deadline exceeded while reading the body")
        _check_length(resp)
    except Exception as exc:
        _classify_exception(attempt, exc)
        attempt.body = bytes(buf) if buf else None
        attempt.body_complete = False
        return None
    return bytes(buf)


def _check_length(resp: requests.Response) -> None:
    """Raise ChunkedEncodingError when fewer wire bytes arrived than Content-Length said."""
    declared = resp.headers.get("Content-Length", "")
    received = resp.raw.tell()
    if declared.isdigit() and received < int(declared):
        raise requests.exceptions.ChunkedEncodingError(
            f"connection closed after {received} of {declared} bytes"
        )


def _classify_status(attempt: FetchAttempt, status: int) -> None:
    if status == 429:
        _fail(attempt, "rate_limited", "http_429", "429 Too Many Requests")
    else:
        _fail(attempt, "http_error", f"http_{status}", f"HTTP {status}")


def _classify_exception(attempt: FetchAttempt, exc: Exception) -> None:
    """Map a requests/urllib3 exception onto (outcome, error_class)."""
    inner = exc.args[0] if exc.args else None
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        _fail(attempt, "timeout", "connect_timeout", str(exc))
    elif isinstance(exc, requests.exceptions.ReadTimeout) or isinstance(
        inner, urllib3.exceptions.ReadTimeoutError
    ):
        _fail(attempt, "timeout", "read_timeout", str(exc))
    elif isinstance(exc, TimeoutError):
        _fail(attempt, "timeout", "total_timeout", str(exc))
    elif isinstance(exc, requests.exceptions.ChunkedEncodingError):
        _fail(attempt, "transport_error", "incomplete_read", str(exc))
    elif isinstance(exc, requests.exceptions.ContentDecodingError):
        _fail(attempt, "http_error", "bad_content_encoding", str(exc))
    elif isinstance(exc, requests.exceptions.TooManyRedirects):
        _fail(attempt, "http_error", "too_many_redirects", str(exc))
    elif isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
        _fail(attempt, "config_error", "invalid_url", str(exc))
    elif isinstance(exc, requests.exceptions.SSLError):
        _fail(attempt, "transport_error", "ssl_error", str(exc))
    elif isinstance(exc, requests.exceptions.RequestException):
        _fail(attempt, "transport_error", "connection_error", str(exc))
    else:
        _fail(attempt, "transport_error", f"unexpected_{type(exc).__name__}", repr(exc))


def _fail(attempt: FetchAttempt, outcome: str, error_class: str, message: str) -> None:
    attempt.outcome, attempt.error_class, attempt.error = outcome, error_class, message[:2000]


def _scrub_attempt(attempt: FetchAttempt, secrets: tuple[str, ...]) -> None:
    """Remove secret values from every string and body of an attempt."""
    if not secrets:
        return
    if attempt.final_url is not None:
        attempt.final_url = scrub_text(attempt.final_url, secrets)
    if attempt.error is not None:
        attempt.error = scrub_text(attempt.error, secrets)
    attempt.headers = {k: scrub_text(v, secrets) for k, v in attempt.headers.items()}
    if attempt.body is not None:
        attempt.body, attempt.redacted = scrub_bytes(attempt.body, secrets)
