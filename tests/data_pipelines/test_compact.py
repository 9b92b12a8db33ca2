from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from data_pipelines.compact import run_compaction
from tests.faultserver import FaultServer, Reply, build_feed
from transitnet.ingest import ingest_feed
from transitnet.realtime.fetch import FeedEndpoint
from transitnet.store.parquet import read_positions


def test_compaction_after_a_day_of_ticks(tmp_path: Path) -> None:
    bodies = [build_feed(3, timestamp=1704067200 + 30 * (n // 2)) for n in range(6)]
    with FaultServer() as server:
        server.route("/vp", *[Reply(200, b) for b in bodies])
        endpoint = FeedEndpoint("f", server.url("/vp"))
        for n in range(6):
            now = datetime(2024, 1, 1, 8, tzinfo=UTC) + timedelta(seconds=30 * n)
            ingest_feed(tmp_path, endpoint, clock=lambda now=now: now)
    stale = tmp_path / "positions/feed=f/.tmp-old.parquet.staged"
    stale.write_bytes(b"half")
    fresh_tmp = tmp_path / "positions/feed=f/.tmp-new.parquet.staged"
    fresh_tmp.write_bytes(b"in progress")
    old = datetime(2023, 1, 1, tzinfo=UTC).timestamp()
    import os

    os.utime(stale, (old, old))
    before = read_positions(tmp_path)
    results = run_compaction(tmp_path, before=date(2024, 1, 2))
    assert {(r.kind, r.parts_merged) for r in results} == {("positions", 3), ("fetch_log", 6)}
    after = read_positions(tmp_path)
    assert len(after) == len(before) == 9
    assert not stale.exists() and fresh_tmp.exists()  # a running writer's temp file stays
    assert run_compaction(tmp_path, before=date(2024, 1, 2))[0].parts_merged == 0
