from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from data_pipelines.config import parse_config
from data_pipelines.ingest import compute_offset_s, next_tick, run_forever, run_once
from tests.faultserver import FaultServer, Reply, build_feed
from transitnet.store.log import read_fetch_log
from transitnet.store.parquet import read_positions


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv


def config(server: FaultServer, feeds: dict[str, str], **kw: Any) -> Any:
    opts: dict[str, Any] = {"connect_timeout_s": 0.5, "read_timeout_s": 0.5, "interval_s": 5}
    opts.update(kw)
    return parse_config(
        {"feeds": [{"id": fid, "url": server.url(path), **opts} for fid, path in feeds.items()]}
    )


def test_run_once_isolates_failing_feeds(tmp_path: Path, server: FaultServer) -> None:
    server.route("/good", Reply(200, build_feed(3)))
    server.route("/gone", Reply(404, b"no"))
    server.route("/html", Reply(200, b"<html>login</html>"))
    cfg = config(server, {"good": "/good", "gone": "/gone", "html": "/html"})
    assert run_once(cfg, tmp_path) is False
    log = read_fetch_log(tmp_path)
    assert dict(zip(log["feed_id"], log["error_class"].fillna("-"), strict=True)) == {
        "good": "-", "gone": "http_404", "html": "decode_html",
    }  # fmt: skip
    assert set(read_positions(tmp_path)["feed_id"]) == {"good"}


def test_run_once_true_when_all_succeed(tmp_path: Path, server: FaultServer) -> None:
    server.route("/a", Reply(200, build_feed(2)))
    server.route("/b", Reply(200, build_feed(2, start=5)))
    assert run_once(config(server, {"a": "/a", "b": "/b"}), tmp_path) is True


def test_a_crashing_feed_does_not_stop_the_others(
    tmp_path: Path, server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import data_pipelines.ingest as mod

    real = mod.ingest_feed

    def flaky(store: Path, endpoint: Any, **kw: Any) -> Any:
        if endpoint.feed_id == "boom":
            raise MemoryError("simulated crash")
        return real(store, endpoint, **kw)

    monkeypatch.setattr(mod, "ingest_feed", flaky)
    server.route("/ok", Reply(200, build_feed(2)))
    assert run_once(config(server, {"boom": "/ok", "fine": "/ok"}), tmp_path) is False
    assert set(read_positions(tmp_path)["feed_id"]) == {"fine"}


def test_stagger_offsets_are_stable_and_within_the_interval() -> None:
    offsets = {f: compute_offset_s(f, 30) for f in ("akl", "tfnsw", "mbta", "x")}
    assert all(0 <= o < 30 for o in offsets.values()) and len(set(offsets.values())) == 4
    assert offsets["akl"] == (zlib.crc32(b"akl") % 30000) / 1000  # no per-process hash seed
    feed = parse_config({"feeds": [{"id": "akl", "url": "http://x.org/v"}]}).feeds[0]
    now = datetime(2024, 1, 1, 12, 0, 0, 500, tzinfo=UTC)
    tick = next_tick(feed, now)
    assert now <= tick and (tick - now).total_seconds() < 30
    assert (tick.timestamp() - offsets["akl"]) % 30 == pytest.approx(0, abs=1e-3)


def test_run_forever_polls_on_interval_and_drops_ticks_while_in_flight(
    tmp_path: Path, server: FaultServer
) -> None:
    server.route("/fast", Reply(200, build_feed(2)))
    server.route("/down", Reply(503))  # 3 attempts with 1 s + 2 s backoff: longer than a tick
    cfg = config(server, {"fast": "/fast", "down": "/down"}, interval_s=0.4,
                 connect_timeout_s=0.2, read_timeout_s=0.2)  # fmt: skip
    stop = threading.Event()
    timer = threading.Timer(1.8, stop.set)
    timer.start()
    t0 = time.monotonic()
    stats = run_forever(cfg, tmp_path, stop_event=stop)
    assert time.monotonic() - t0 < 3.5  # the in-flight retry wait was cut short by the stop
    assert stats.started["fast"] >= 3 and stats.ok["fast"] == stats.started["fast"]
    assert stats.started["down"] == 1 and stats.dropped["down"] >= 2
    assert len(server.hits("/down")) == 2  # attempt 1, the retry after 1 s, then no new one
    log = read_fetch_log(tmp_path)
    assert (log["feed_id"] == "down").sum() == 2
    assert log.loc[log["feed_id"] == "fast", "slippage_s"].abs().max() < 0.4
    assert not [p for p in tmp_path.rglob(".tmp-*")]


def test_run_forever_stops_after_max_ticks(tmp_path: Path, server: FaultServer) -> None:
    server.route("/vp", Reply(200, build_feed(2)))
    # Timeouts far above a loopback answer: a retry would add fetch-log rows.
    cfg = config(server, {"a": "/vp", "b": "/vp"}, interval_s=1.0, connect_timeout_s=0.9,
                 read_timeout_s=0.9)  # fmt: skip
    stats = run_forever(cfg, tmp_path, stop_event=threading.Event(), max_ticks=3)
    assert {f: stats.started[f] + stats.dropped[f] for f in ("a", "b")} == {"a": 3, "b": 3}
    assert len(read_fetch_log(tmp_path)) == stats.started["a"] + stats.started["b"]


def test_every_fault_at_once_in_one_tick(tmp_path: Path, server: FaultServer) -> None:
    import gzip

    good = build_feed(4)
    faults = {
        "timeout": (Reply(200, good, delay_s=0.5), "read_timeout", 3),
        "flaky": ([Reply(502), Reply(200, good)], None, 2),
        "unauth": (Reply(401, b"who?"), "http_401", 1),
        "missing": (Reply(404, b"gone"), "http_404", 1),
        "limited": (Reply(429, headers={"Retry-After": "600"}), "http_429", 1),
        "html": (Reply(200, b"<html>oops</html>"), "decode_html", 1),
        "empty": (Reply(200, b""), "decode_empty", 1),
        "cut": (Reply(200, good, truncate_to=10), "incomplete_read", 3),
        "bare-gzip": (Reply(200, gzip.compress(good)), None, 1),
        "moved": (Reply(302, headers={"Location": "/feed-good"}), None, 1),
        "huge": (Reply(200, b"\n" * 3_000_000), "too_large", 1),
        "good": (Reply(200, good), None, 1),
    }
    for fid, (reply, _, _) in faults.items():
        server.route(f"/feed-{fid}", *(reply if isinstance(reply, list) else [reply]))
    # Only the "timeout" feed gets a read timeout shorter than its reply's delay; the others
    # get generous ones so a loaded machine can't turn a slow answer into an extra attempt.
    cfg = parse_config({"feeds": [
        {"id": fid, "url": server.url(f"/feed-{fid}"), "connect_timeout_s": 5.0,
         "read_timeout_s": 0.3 if fid == "timeout" else 10.0, "max_bytes": 1_000_000}
        for fid in faults
    ]})  # fmt: skip
    assert run_once(cfg, tmp_path, max_workers=len(faults)) is False
    log = read_fetch_log(tmp_path)
    for fid, (_, error_class, attempts) in faults.items():
        rows = log[log["feed_id"] == fid]
        assert len(rows) == attempts, fid
        last = rows["error_class"].iloc[-1]
        assert (None if pd.isna(last) else last) == error_class, fid
    stored = read_positions(tmp_path)
    assert set(stored["feed_id"]) == {"flaky", "bare-gzip", "moved", "good"}
    assert (stored.groupby("feed_id").size() == 4).all()
    assert len(list(tmp_path.rglob("*.meta.json"))) == len(log)


@pytest.mark.real_data
def test_static_feed_enables_static_rules_and_a_broken_one_does_not_stop_ingest(
    tmp_path: Path, server: FaultServer, shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    feeds = shared_data / "feeds/bullrunner"
    server.route("/vp", Reply(200, (feeds / "vehicle_positions.pb").read_bytes()))
    good = str(feeds / "bullrunner-gtfs.zip")
    cfg = parse_config({"feeds": [
        {"id": "with-static", "url": server.url("/vp"), "static": good},
        {"id": "bad-static", "url": server.url("/vp"), "static": str(feeds / "badgtfs.zip")},
        {"id": "no-static", "url": server.url("/vp")},
    ]})  # fmt: skip
    assert run_once(cfg, tmp_path) is True
    stored = read_positions(tmp_path).set_index("feed_id")
    assert stored.loc["with-static", "flag_e003"].notna().all()
    assert stored.loc["bad-static", "flag_e003"].isna().all()
    assert stored.loc["no-static", "flag_e003"].isna().all()
    assert stored.loc["no-static", "flag_w001"].notna().all()  # feed-only rules always run
    assert "cannot load static GTFS" in caplog.text
