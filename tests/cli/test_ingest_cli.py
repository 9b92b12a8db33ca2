from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.faultserver import FaultServer, Reply, build_feed
from transitnet.cli import build_parser
from transitnet.store.archive import read_meta
from transitnet.store.log import read_fetch_log
from transitnet.store.parquet import read_positions

REPO = Path(__file__).resolve().parents[2]


def cli(*argv: str | Path) -> int:
    """The real ``transitnet`` parser and handlers (``main`` minus its logging setup)."""
    args = build_parser().parse_args([str(a) for a in argv])
    status: int = args.func(args)
    return status


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv


def write_config(path: Path, server: FaultServer, routes: dict[str, str], **kw: object) -> Path:
    feeds = [{"id": fid, "url": server.url(route), "connect_timeout_s": 0.5,
              "read_timeout_s": 0.5, **kw} for fid, route in routes.items()]  # fmt: skip
    path.write_text(yaml.safe_dump({"feeds": feeds}))
    return path


def test_ingest_once_exit_status(tmp_path: Path, server: FaultServer) -> None:
    server.route("/ok", Reply(200, build_feed(3)))
    server.route("/bad", Reply(401, b"key?"))
    good = write_config(tmp_path / "good.yaml", server, {"a": "/ok"})
    mixed = write_config(tmp_path / "mixed.yaml", server, {"a": "/ok", "b": "/bad"})
    assert cli("ingest", "once", "--config", good, "--store", tmp_path / "s1") == 0
    assert len(read_positions(tmp_path / "s1")) == 3
    assert cli("ingest", "once", "--config", mixed, "--store", tmp_path / "s2") == 1
    assert set(read_fetch_log(tmp_path / "s2")["feed_id"]) == {"a", "b"}


def test_ingest_once_bad_config_is_exit_2(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert cli("ingest", "once", "--config", tmp_path / "nope.yaml", "--store", tmp_path) == 2
    (tmp_path / "bad.yaml").write_text("feeds:\n  - id: x\n")
    assert cli("ingest", "once", "--config", tmp_path / "bad.yaml", "--store", tmp_path) == 2
    assert "'url' is required" in caplog.text


def test_ingest_run_with_max_ticks(tmp_path: Path, server: FaultServer) -> None:
    server.route("/vp", *[Reply(200, build_feed(2, timestamp=1704067200 + n)) for n in range(5)])
    config = write_config(tmp_path / "f.yaml", server, {"a": "/vp"}, interval_s=1.0,
                          connect_timeout_s=0.9, read_timeout_s=0.9)  # fmt: skip
    assert cli("ingest", "run", "--config", config, "--store", tmp_path / "s",
               "--max-ticks", "3") == 0  # fmt: skip
    assert len(read_fetch_log(tmp_path / "s")) == 3
    assert cli("ingest", "run", "--config", config, "--store", tmp_path / "s",
               "--duration-s", "-1") == 2  # fmt: skip


def test_compact_cli(tmp_path: Path, server: FaultServer) -> None:
    server.route("/vp", Reply(200, build_feed(2)))
    config = write_config(tmp_path / "f.yaml", server, {"a": "/vp"})
    cli("ingest", "once", "--config", config, "--store", tmp_path / "s")
    assert cli("compact", "--store", tmp_path / "s") == 0  # today is still open: no-op
    assert cli("compact", "--store", tmp_path / "s", "--before", "2999-01-01") == 0
    parts = list((tmp_path / "s/positions").rglob("*.parquet"))
    assert [p.name for p in parts] == ["part-compacted.parquet"]
    assert cli("compact", "--store", tmp_path / "missing") == 2
    with pytest.raises(SystemExit):
        cli("compact", "--store", tmp_path / "s", "--before", "yesterday")


def test_ingest_import_wires_to_the_importers(tmp_path: Path) -> None:
    snapshots = tmp_path / "snaps"
    snapshots.mkdir()
    for n in range(2):
        (snapshots / f"vp-{n}.pb").write_bytes(build_feed(3, timestamp=1704067200 + 30 * n))
    store = tmp_path / "store"
    assert cli("ingest", "import", "--store", store, "--feed-id", "bk", snapshots) == 0
    assert len(read_positions(store)) == 6
    assert cli("ingest", "import", "--store", store, "--feed-id", "bk", "--columns", "{x",
               snapshots) == 2  # fmt: skip
    assert cli("ingest", "import", "--store", store, "--feed-id", "bk",
               tmp_path / "absent") == 2  # fmt: skip


def test_sigterm_stops_ingest_run_cleanly(tmp_path: Path, server: FaultServer) -> None:
    bodies = [build_feed(3000, timestamp=1704067200 + 30 * n) for n in range(50)]
    server.route("/vp", *[Reply(200, b) for b in bodies])
    server.route("/slow", Reply(200, b"", delay_s=0.3))
    config = write_config(tmp_path / "f.yaml", server, {"a": "/vp", "b": "/slow"},
                          interval_s=0.5, connect_timeout_s=0.4, read_timeout_s=0.4)  # fmt: skip
    store = tmp_path / "s"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "transitnet", "ingest", "run", "--config", str(config),
         "--store", str(store)], env=env, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while len(list(store.glob("positions/*/*/part-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "received SIGTERM" in stderr and "ingest run stopped" in stderr
    assert not [p for p in store.rglob("*") if p.name.startswith(".tmp-")]
    log = read_fetch_log(store)
    assert len(log) >= 2 and len(list(store.rglob("*.meta.json"))) == len(log)
    for raw in store.rglob("*.pb"):
        assert raw.read_bytes() in bodies or raw.read_bytes() == b""
    metas = [read_meta(m) for m in store.rglob("*.meta.json")]
    assert {m["feed_id"] for m in metas} == {"a", "b"}
