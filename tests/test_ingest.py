"""One feed, one tick: fetch → archive → decode → validate → dedup → store → log.

Every fault from a misbehaving loopback server must give a clear log row with an
error_class, archive the raw bytes whenever a body arrived, and keep attempts == log rows.
"""

from __future__ import annotations

import gzip
import json
import logging
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tests.faultserver import FaultServer, Reply, build_feed
from transitnet.ingest import IngestResult, ingest_feed
from transitnet.realtime.decode import decode_vehicle_positions
from transitnet.realtime.fetch import FeedEndpoint
from transitnet.store.archive import read_meta
from transitnet.store.dedup import dedup_positions
from transitnet.store.log import read_fetch_log
from transitnet.store.parquet import read_positions
from transitnet.store.state import load_feed_state

T0 = datetime(2019, 8, 13, 8, 0, 2, tzinfo=UTC)
KEY = "k3y-that-must-never-be-stored-42"


class Clock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv


@pytest.fixture
def tiny_feed() -> bytes:
    return build_feed(2)


@pytest.fixture(scope="module")
def auckland(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> list[bytes]:
    """20 consecutive rush-hour Auckland snapshots (08:00, 30 s apart)."""
    bodies: list[bytes] = []
    tar = shared_data / "auckland-2019-08-13/vehicle_positions.tar.xz"
    with tarfile.open(tar, "r|xz") as tf:
        for n, member in enumerate(m for m in tf if m.isfile()):
            if n >= 360:
                fh = tf.extractfile(member)
                bodies.append(fh.read() if fh else b"")
            if len(bodies) == 20:
                break
    return bodies


def tick(store: Path, server: FaultServer, path: str, clock: Clock, **kw: Any) -> IngestResult:
    opts: dict[str, Any] = {"connect_timeout_s": 1.0, "read_timeout_s": 1.0}
    opts.update(kw)
    endpoint = FeedEndpoint("f", server.url(path), **opts)
    return ingest_feed(
        store, endpoint, scheduled_tick=clock(), clock=clock, sleep=lambda s: clock.advance(s)
    )


def check_invariants(store: Path, results: list[IngestResult]) -> Any:
    """attempts == log rows == meta files; no temp files; every body file is described."""
    log = read_fetch_log(store)
    assert len(log) == sum(r.attempts for r in results)
    metas = sorted(store.rglob("*.meta.json"))
    assert len(metas) == len(log)
    assert not [p for p in store.rglob("*") if p.name.startswith(".tmp-")]
    described = {read_meta(m).get("file") for m in metas}
    for body in [*store.rglob("*.pb"), *store.rglob("*.body")]:
        assert body.relative_to(store).as_posix() in described
    return log


def only_meta(store: Path) -> dict[str, Any]:
    (meta,) = store.rglob("*.meta.json")
    return read_meta(meta)


@pytest.mark.real_data
def test_real_snapshots_are_stored_like_a_direct_decode(
    tmp_path: Path, server: FaultServer, auckland: list[bytes]
) -> None:
    server.route("/vp", *[Reply(200, body) for body in auckland])
    clock, results = Clock(), []
    for _ in auckland:
        results.append(tick(tmp_path, server, "/vp", clock))
        clock.advance(30)
    assert all(r.ok and r.outcome == "ok" for r in results)
    log = check_invariants(tmp_path, results)
    assert list(log["outcome"]) == ["ok"] * 20 and log["rows"].sum() == sum(
        r.rows_decoded for r in results
    )
    direct = pa.concat_tables(
        decode_vehicle_positions(b, feed_id="f", fetched_at=T0 + timedelta(seconds=30 * i),
                                 source_file=str(i)).positions
        for i, b in enumerate(auckland)
    )  # fmt: skip
    expected = dedup_positions(direct)
    stored = read_positions(tmp_path, dedup=False)
    key = ["vehicle_id", "vehicle_timestamp_raw", "trip_id", "latitude", "longitude", "fetched_at"]
    got = sorted(map(tuple, stored[key].astype(object).itertuples(index=False)))
    want = sorted(
        map(tuple, expected.select(key).to_pandas().astype(object).itertuples(index=False))
    )
    assert got == want and direct.num_rows > 10_000 and len(got) < direct.num_rows * 0.8
    assert results[1].header_age_s is not None and results[1].vehicle_age_p90_s is not None
    raw = sorted(tmp_path.rglob("*.pb"))
    assert [p.read_bytes() for p in raw] == auckland  # the archive is the bytes as served


@pytest.mark.real_data
def test_tfnsw_gzip_with_and_without_header(
    tmp_path: Path, server: FaultServer, shared_data: Path
) -> None:
    gz = (shared_data / "feeds/tfnsw-2020-09-01/GTFS_VP2020-09-01_08_00.pb.gz").read_bytes()
    server.route("/bare", Reply(200, gz))
    server.route("/enc", Reply(200, gzip.decompress(gz), gzip_encoding=True))
    clock = Clock()
    bare = tick(tmp_path / "a", server, "/bare", clock)
    enc = tick(tmp_path / "b", server, "/enc", clock)
    assert bare.ok and enc.ok and bare.rows_decoded == enc.rows_decoded > 4000
    assert next((tmp_path / "a").rglob("*.pb")).read_bytes()[:2] == b"\x1f\x8b"
    assert only_meta(tmp_path / "b")["headers"]["Content-Encoding"] == "gzip"
    assert len(read_positions(tmp_path / "a")) == len(read_positions(tmp_path / "b"))


def test_read_timeout(tmp_path: Path, server: FaultServer) -> None:
    server.route("/vp", Reply(200, b"late", delay_s=0.6))
    result = tick(tmp_path, server, "/vp", Clock(), read_timeout_s=0.15)
    assert (result.outcome, result.error_class, result.attempts) == ("timeout", "read_timeout", 3)
    log = check_invariants(tmp_path, [result])
    assert list(log["error_class"]) == ["read_timeout"] * 3 and list(log["attempt"]) == [1, 2, 3]
    assert not list(tmp_path.rglob("*.pb"))


def test_5xx_then_success(tmp_path: Path, server: FaultServer, tiny_feed: bytes) -> None:
    server.route("/vp", Reply(503, b"<h1>busy</h1>"), Reply(200, tiny_feed))
    result = tick(tmp_path, server, "/vp", Clock())
    assert result.ok and result.attempts == 2 and result.rows_written == 2
    log = check_invariants(tmp_path, [result])
    assert list(log["http_status"]) == [503, 200]
    assert list(log["error_class"].fillna("-")) == ["http_503", "-"]
    (err,) = tmp_path.rglob("*.body")
    assert err.read_bytes() == b"<h1>busy</h1>"


@pytest.mark.parametrize("status", [401, 404])
def test_client_error_is_not_retried(tmp_path: Path, server: FaultServer, status: int) -> None:
    server.route("/vp", Reply(status, b"denied"))
    result = tick(tmp_path, server, "/vp", Clock())
    assert (result.ok, result.attempts, result.error_class) == (False, 1, f"http_{status}")
    check_invariants(tmp_path, [result])
    assert len(server.hits("/vp")) == 1 and len(list(tmp_path.rglob("*.body"))) == 1


def test_429_defers_the_next_ticks(tmp_path: Path, server: FaultServer, tiny_feed: bytes) -> None:
    server.route("/vp", Reply(429, headers={"Retry-After": "90"}), Reply(200, tiny_feed))
    clock = Clock()
    first = tick(tmp_path, server, "/vp", clock)
    assert (first.outcome, first.error_class) == ("rate_limited", "http_429")
    assert first.deferred_until == T0 + timedelta(seconds=90)
    clock.advance(30)
    skipped = tick(tmp_path, server, "/vp", clock)
    assert (skipped.outcome, skipped.attempts) == ("skipped", 0)
    assert skipped.deferred_until == T0 + timedelta(seconds=90)
    clock.advance(60)
    later = tick(tmp_path, server, "/vp", clock)
    assert later.ok and len(server.hits("/vp")) == 2
    check_invariants(tmp_path, [first, skipped, later])


@pytest.mark.parametrize(
    ("body", "error_class"),
    [(b"<!DOCTYPE html><html>maintenance</html>", "decode_html"), (b"", "decode_empty")],
)
def test_non_feed_200_bodies_are_archived_and_logged(
    tmp_path: Path, server: FaultServer, body: bytes, error_class: str
) -> None:
    server.route("/vp", Reply(200, body))
    result = tick(tmp_path, server, "/vp", Clock())
    assert (result.ok, result.outcome, result.error_class) == (False, "decode_error", error_class)
    check_invariants(tmp_path, [result])
    (raw,) = tmp_path.rglob("*.pb")
    assert raw.read_bytes() == body and only_meta(tmp_path)["error_class"] == error_class
    assert not (tmp_path / "positions").exists()


def test_truncated_protobuf(tmp_path: Path, server: FaultServer, tiny_feed: bytes) -> None:
    cut = tiny_feed[: len(tiny_feed) - 7]
    server.route("/vp", Reply(200, cut))
    result = tick(tmp_path, server, "/vp", Clock())
    assert result.error_class in {"decode_truncated", "decode_not_initialized"}
    check_invariants(tmp_path, [result])
    assert next(tmp_path.rglob("*.pb")).read_bytes() == cut


def test_truncated_transfer(tmp_path: Path, server: FaultServer, tiny_feed: bytes) -> None:
    server.route("/vp", Reply(200, tiny_feed, truncate_to=20))
    result = tick(tmp_path, server, "/vp", Clock())
    assert (result.attempts, result.error_class) == (3, "incomplete_read")
    check_invariants(tmp_path, [result])
    bodies = sorted(tmp_path.rglob("*.body"))
    assert len(bodies) == 3 and all(b.read_bytes() == tiny_feed[:20] for b in bodies)
    assert not list(tmp_path.rglob("*.pb"))


def test_redirect_records_final_url(tmp_path: Path, server: FaultServer, tiny_feed: bytes) -> None:
    server.route("/old", Reply(301, headers={"Location": "/new"}))
    server.route("/new", Reply(200, tiny_feed))
    result = tick(tmp_path, server, "/old", Clock())
    assert result.ok
    check_invariants(tmp_path, [result])
    assert only_meta(tmp_path)["final_url"] == server.url("/new")
    assert read_fetch_log(tmp_path)["final_url"][0] == server.url("/new")


def test_304_after_etag(tmp_path: Path, server: FaultServer, tiny_feed: bytes) -> None:
    server.route("/vp", Reply(200, tiny_feed, etag='"abc"'))
    clock = Clock()
    first = tick(tmp_path, server, "/vp", clock)
    clock.advance(30)
    second = tick(tmp_path, server, "/vp", clock)
    assert first.ok and (second.ok, second.outcome, second.rows_written) == (
        True,
        "not_modified",
        0,
    )
    assert server.hits("/vp")[1].headers["If-None-Match"] == '"abc"'
    log = check_invariants(tmp_path, [first, second])
    assert list(log["http_status"]) == [200, 304] and len(list(tmp_path.rglob("*.pb"))) == 1


def test_oversized_body(tmp_path: Path, server: FaultServer) -> None:
    server.route("/vp", Reply(200, b"\x0a" * 50_000))
    result = tick(tmp_path, server, "/vp", Clock(), max_bytes=10_000)
    assert (result.attempts, result.error_class) == (1, "too_large")
    check_invariants(tmp_path, [result])
    assert only_meta(tmp_path)["status"] == 200 and not list(tmp_path.rglob("*.pb"))


def test_byte_identical_snapshot_is_deduplicated(
    tmp_path: Path, server: FaultServer, tiny_feed: bytes
) -> None:
    server.route("/vp", Reply(200, tiny_feed))
    clock, results = Clock(), []
    for _ in range(3):
        results.append(tick(tmp_path, server, "/vp", clock))
        clock.advance(30)
    assert [r.outcome for r in results] == ["ok", "duplicate", "duplicate"]
    assert all(r.ok for r in results)
    check_invariants(tmp_path, results)
    (raw,) = tmp_path.rglob("*.pb")
    metas = [read_meta(m) for m in sorted(tmp_path.rglob("*.meta.json"))]
    assert [m["duplicate_of"] for m in metas[1:]] == [raw.relative_to(tmp_path).as_posix()] * 2
    assert len(read_positions(tmp_path, dedup=False)) == 2


def test_duplicate_of_a_broken_snapshot_stays_a_failure(
    tmp_path: Path, server: FaultServer
) -> None:
    server.route("/vp", Reply(200, b"<html>down</html>"))
    clock = Clock()
    first = tick(tmp_path, server, "/vp", clock)
    clock.advance(30)
    second = tick(tmp_path, server, "/vp", clock)
    assert (second.ok, second.error_class) == (False, first.error_class)
    assert len(list(tmp_path.rglob("*.pb"))) == 1


def test_breaker_opens_after_three_failed_ticks(tmp_path: Path, server: FaultServer) -> None:
    server.route("/vp", Reply(404))
    clock, results = Clock(), []
    for _ in range(4):
        results.append(tick(tmp_path, server, "/vp", clock))
        clock.advance(5)
    assert [r.attempts for r in results] == [1, 1, 1, 0] and results[3].outcome == "skipped"
    assert load_feed_state(tmp_path, "f").breaker["trips"] == 1
    clock.advance(60)
    results.append(tick(tmp_path, server, "/vp", clock))
    assert results[-1].attempts == 1  # the half-open trial
    assert load_feed_state(tmp_path, "f").breaker["trips"] == 2  # failed: a longer pause
    check_invariants(tmp_path, results)


def test_api_key_never_reaches_the_store_or_logs(
    tmp_path: Path,
    server: FaultServer,
    tiny_feed: bytes,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("TN_TEST_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    server.route("/vp", Reply(500, f"bad request for key={KEY}".encode()), Reply(200, tiny_feed))
    server.route("/gone", Reply(302, headers={"Location": f"/vp?again={KEY}"}))
    clock = Clock()
    results = [
        tick(tmp_path, server, "/vp", clock, params_from_env={"key": "TN_TEST_KEY"},
             headers_from_env={"Authorization": "TN_TEST_KEY"}),
        tick(tmp_path / "b", server, "/gone", clock, params_from_env={"key": "TN_TEST_KEY"}),
    ]  # fmt: skip
    assert all(r.ok for r in results)
    assert server.hits("/vp")[0].query["key"] == [KEY]
    for path in tmp_path.rglob("*"):
        assert KEY not in str(path)
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in caplog.text
    assert "REDACTED" in json.dumps([read_meta(m) for m in tmp_path.rglob("*.meta.json")])


def test_internal_error_still_logs_the_attempt(
    tmp_path: Path, server: FaultServer, tiny_feed: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("validator bug")

    monkeypatch.setattr("transitnet.ingest.FeedValidator.validate", broken)
    server.route("/vp", Reply(200, tiny_feed))
    result = tick(tmp_path, server, "/vp", Clock())
    assert (result.ok, result.outcome, result.error_class) == (
        False, "internal_error", "internal_RuntimeError",
    )  # fmt: skip
    log = check_invariants(tmp_path, [result])
    assert log["outcome"][0] == "internal_error" and len(list(tmp_path.rglob("*.pb"))) == 1


KILL_SCRIPT = """
import sys
from pathlib import Path
from transitnet.ingest import ingest_feed
from transitnet.realtime.fetch import FeedEndpoint

endpoint = FeedEndpoint("k", sys.argv[2])
while True:
    ingest_feed(Path(sys.argv[1]), endpoint)
"""


def test_sigkill_mid_write_never_leaves_a_partial_visible_file(
    tmp_path: Path, server: FaultServer
) -> None:
    import random
    import signal
    import subprocess
    import sys
    import time

    import duckdb

    from transitnet.store.parquet import positions_dataset

    bodies = [build_feed(4000, timestamp=1565683200 + 30 * n) for n in range(4)]
    count = iter(range(10**9))
    server.route_fn("/vp", lambda req: Reply(200, bodies[next(count) % 4]))
    store = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(store), server.url("/vp")])
    try:
        deadline = time.monotonic() + 60
        while len(list(store.glob("positions/*/*/part-*"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(random.uniform(0.0, 0.3))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    for raw in store.rglob("*.pb"):
        assert raw.read_bytes() in bodies
    for meta in store.rglob("*.meta.json"):
        read_meta(meta)
    parts = list((store / "positions").rglob("*.parquet"))
    assert len(parts) >= 3 and all(not p.name.startswith(".") for p in parts)
    n = positions_dataset(store).count_rows()
    assert n % 4000 == 0 and n == len(read_positions(store, dedup=False))
    glob = f"{store}/positions/**/*.parquet"
    con = duckdb.connect()
    assert con.execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchall() == [(n,)]
    read_fetch_log(store)


def test_overlapping_runs_of_one_feed_are_refused(tmp_path: Path, server: FaultServer) -> None:
    from transitnet.store.state import feed_lock

    server.route("/vp", Reply(200, build_feed(2)))
    with feed_lock(tmp_path, "f"):  # e.g. a previous cron run still in flight
        result = tick(tmp_path, server, "/vp", Clock())
    assert (result.ok, result.outcome, result.error_class) == (False, "skipped", "locked")
    assert server.hits("/vp") == [] and not (tmp_path / "fetch_log").exists()
    assert tick(tmp_path, server, "/vp", Clock()).ok


def test_unusable_store_is_reported_not_raised(tmp_path: Path, server: FaultServer) -> None:
    server.route("/vp", Reply(200, build_feed(2)))
    store = tmp_path / "store"
    store.write_text("a file where the store folder should be")
    result = tick(store, server, "/vp", Clock())
    assert (result.ok, result.error_class) == (False, "store_unavailable")
