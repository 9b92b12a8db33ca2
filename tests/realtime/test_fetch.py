from __future__ import annotations

import gzip
import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from tests.faultserver import FaultServer, Reply
from transitnet.realtime.fetch import FeedEndpoint, backoff_s, fetch_feed, parse_retry_after
from transitnet.realtime.secrets import REDACTED, scrub_text

KEY = "s3cr3t-API-key-0123456789"


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv


def endpoint(url: str, **kw: object) -> FeedEndpoint:
    opts: dict[str, object] = {"connect_timeout_s": 1.0, "read_timeout_s": 1.0}
    opts.update(kw)
    return FeedEndpoint("f1", url, **opts)  # type: ignore[arg-type]


def test_ok_records_headers_url_and_user_agent(server: FaultServer) -> None:
    server.route("/vp", Reply(200, b"\x0a\x00", headers={"Content-Type": "application/x-pb"}))
    result = fetch_feed(endpoint(server.url("/vp"), user_agent="agency-bot/1"), sleep=pytest.fail)
    final = result.final
    assert (final.outcome, final.status, final.body, final.error_class) == (
        "ok", 200, b"\x0a\x00", None,
    )  # fmt: skip
    assert final.headers["Content-Type"] == "application/x-pb"
    assert final.final_url == server.url("/vp")
    assert server.hits("/vp")[0].headers["User-Agent"] == "agency-bot/1"
    assert final.started_at.tzinfo is not None and final.duration_s > 0


def test_read_timeout_is_retried_three_times_with_backoff(server: FaultServer) -> None:
    server.route("/slow", Reply(200, b"late", delay_s=1.0))
    sleeps: list[float] = []
    result = fetch_feed(endpoint(server.url("/slow"), read_timeout_s=0.2), sleep=sleeps.append)
    assert [a.error_class for a in result.attempts] == ["read_timeout"] * 3
    assert [a.outcome for a in result.attempts] == ["timeout"] * 3
    assert sleeps == [1.0, 2.0]
    assert len(server.hits("/slow")) == 3


def test_5xx_then_success(server: FaultServer) -> None:
    server.route("/vp", Reply(503, b"busy"), Reply(502), Reply(200, b"ok"))
    sleeps: list[float] = []
    result = fetch_feed(endpoint(server.url("/vp")), sleep=sleeps.append)
    assert [a.status for a in result.attempts] == [503, 502, 200]
    assert [a.error_class for a in result.attempts] == ["http_503", "http_502", None]
    assert result.attempts[0].body == b"busy"  # error bodies are kept for the archive
    assert sleeps == [1.0, 2.0] and result.final.body == b"ok"


def test_5xx_gives_up_after_three_attempts(server: FaultServer) -> None:
    server.route("/vp", Reply(500))
    result = fetch_feed(endpoint(server.url("/vp")), sleep=lambda s: None)
    assert len(result.attempts) == 3 and result.final.outcome == "http_error"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 418])
def test_client_errors_are_not_retried(server: FaultServer, status: int) -> None:
    server.route("/vp", Reply(status, b"nope"))
    result = fetch_feed(endpoint(server.url("/vp")), sleep=pytest.fail)
    assert len(result.attempts) == 1 and len(server.hits("/vp")) == 1
    assert result.final.error_class == f"http_{status}"
    assert result.final.outcome == "http_error"


def test_429_short_retry_after_is_waited_within_the_tick(server: FaultServer) -> None:
    server.route("/vp", Reply(429, headers={"Retry-After": "2"}), Reply(200, b"ok"))
    sleeps: list[float] = []
    result = fetch_feed(endpoint(server.url("/vp")), sleep=sleeps.append)
    assert sleeps == [2.0]
    assert [a.error_class for a in result.attempts] == ["http_429", None]
    assert result.deferred_until is None


def test_429_long_retry_after_defers_to_a_later_tick(server: FaultServer) -> None:
    server.route("/vp", Reply(429, headers={"Retry-After": "120"}))
    now = datetime(2024, 5, 1, 12, tzinfo=UTC)
    result = fetch_feed(endpoint(server.url("/vp")), sleep=pytest.fail, clock=lambda: now)
    assert len(result.attempts) == 1 and result.final.outcome == "rate_limited"
    assert result.deferred_until == now + timedelta(seconds=120)


def test_429_retry_after_as_http_date(server: FaultServer) -> None:
    now = datetime(2024, 5, 1, 12, tzinfo=UTC)
    later = format_datetime(now + timedelta(minutes=10), usegmt=True)
    server.route("/vp", Reply(429, headers={"Retry-After": later}))
    result = fetch_feed(endpoint(server.url("/vp")), sleep=pytest.fail, clock=lambda: now)
    assert result.deferred_until == now + timedelta(minutes=10)


def test_parse_retry_after() -> None:
    now = datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert parse_retry_after("30", now) == 30.0
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("soon", now) is None
    past = format_datetime(now - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(past, now) == 0.0


def test_backoff_grows_from_1_to_10_seconds() -> None:
    ep = FeedEndpoint("f", "http://x")
    assert [backoff_s(ep, n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_conditional_get_304(server: FaultServer) -> None:
    server.route("/vp", Reply(200, b"snapshot", etag='"v1"', headers={"Last-Modified": "x"}))
    first = fetch_feed(endpoint(server.url("/vp"))).final
    assert first.headers["ETag"] == '"v1"'
    second = fetch_feed(endpoint(server.url("/vp")), etag='"v1"', last_modified="x").final
    assert (second.outcome, second.status, second.body) == ("not_modified", 304, None)
    sent = server.hits("/vp")[1].headers
    assert sent["If-None-Match"] == '"v1"' and sent["If-Modified-Since"] == "x"


def test_redirect_is_followed_and_final_url_recorded(server: FaultServer) -> None:
    server.route("/old", Reply(302, headers={"Location": "/new"}))
    server.route("/new", Reply(200, b"moved"))
    final = fetch_feed(endpoint(server.url("/old"))).final
    assert final.body == b"moved" and final.redirects == 1
    assert final.final_url == server.url("/new")


@pytest.mark.parametrize("chunked", [False, True])
def test_oversized_body_is_refused(server: FaultServer, chunked: bool) -> None:
    server.route("/big", Reply(200, b"x" * 300_000, chunked=chunked))
    result = fetch_feed(endpoint(server.url("/big"), max_bytes=100_000), sleep=pytest.fail)
    assert len(result.attempts) == 1
    final = result.final
    assert (final.outcome, final.error_class, final.body) == ("too_large", "too_large", None)


def test_gzip_bomb_is_capped_after_decompression(server: FaultServer) -> None:
    server.route("/bomb", Reply(200, b"\0" * 5_000_000, gzip_encoding=True))
    final = fetch_feed(endpoint(server.url("/bomb"), max_bytes=1_000_000)).final
    assert final.error_class == "too_large"


def test_truncated_transfer_is_a_retried_transport_error(server: FaultServer) -> None:
    server.route("/cut", Reply(200, b"y" * 10_000, truncate_to=4000))
    result = fetch_feed(endpoint(server.url("/cut")), sleep=lambda s: None)
    assert [a.error_class for a in result.attempts] == ["incomplete_read"] * 3
    final = result.final
    assert not final.body_complete and final.body == b"y" * 4000


def test_content_encoding_is_undone_but_bare_gzip_is_kept(server: FaultServer) -> None:
    payload = b"\x0a\x04\x0a\x02\x32\x2e" * 50
    server.route("/enc", Reply(200, payload, gzip_encoding=True))
    server.route("/bare", Reply(200, gzip.compress(payload)))
    enc = fetch_feed(endpoint(server.url("/enc"))).final
    assert enc.body == payload and enc.headers["Content-Encoding"] == "gzip"
    bare = fetch_feed(endpoint(server.url("/bare"))).final
    assert bare.body is not None and bare.body[:2] == b"\x1f\x8b"


def test_connection_refused_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps: list[float] = []
    result = fetch_feed(endpoint(f"http://127.0.0.1:{port}/vp"), sleep=sleeps.append)
    assert [a.error_class for a in result.attempts] == ["connection_error"] * 3
    assert result.final.status is None and sleeps == [1.0, 2.0]


def test_keep_going_false_stops_retrying(server: FaultServer) -> None:
    server.route("/vp", Reply(503))
    result = fetch_feed(endpoint(server.url("/vp")), sleep=pytest.fail, keep_going=lambda: False)
    assert len(result.attempts) == 1


def test_secrets_come_from_env_and_never_leak(
    server: FaultServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FEED_KEY", KEY)
    monkeypatch.setenv("FEED_TOKEN", KEY + "-hdr")
    server.route("/vp", Reply(401, f"invalid key {KEY}".encode()))
    ep = endpoint(
        server.url("/vp"), params_from_env={"api_key": "FEED_KEY"},
        headers_from_env={"X-Api-Key": "FEED_TOKEN"},
    )  # fmt: skip
    caplog.set_level(logging.DEBUG)
    final = fetch_feed(ep).final
    hit = server.hits("/vp")[0]
    assert hit.query["api_key"] == [KEY] and hit.headers["X-Api-Key"] == KEY + "-hdr"
    assert final.final_url is not None and KEY not in final.final_url
    assert f"api_key={REDACTED}" in final.final_url
    assert final.body is not None and KEY.encode() not in final.body and final.redacted
    assert KEY not in caplog.text and "127.0.0.1" in caplog.text  # urllib3 did log the URL


def test_secret_is_scrubbed_from_transport_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEED_KEY", KEY)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ep = endpoint(f"http://127.0.0.1:{port}/vp", params_from_env={"key": "FEED_KEY"})
    result = fetch_feed(ep, sleep=lambda s: None)
    for attempt in result.attempts:
        assert attempt.error is not None and KEY not in attempt.error


def test_missing_secret_is_a_config_error_without_request(
    server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    server.route("/vp", Reply(200, b"x"))
    ep = endpoint(server.url("/vp"), headers_from_env={"Authorization": "NOT_SET_ANYWHERE"})
    result = fetch_feed(ep, sleep=pytest.fail)
    assert result.final.error_class == "missing_secret"
    assert "NOT_SET_ANYWHERE" in (result.final.error or "")
    assert server.hits("/vp") == []


def test_scrub_text_handles_url_encoding() -> None:
    secret = "a b/c+d"
    text = "x=a%20b%2Fc%2Bd&y=a+b%2Fc%2Bd&z=a b/c+d"
    assert scrub_text(text, (secret,)).count(REDACTED) == 3
