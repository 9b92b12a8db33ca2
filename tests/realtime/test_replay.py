from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest
import requests

from transitnet.cli import replay as replay_cli
from transitnet.realtime.decode import decode_vehicle_positions
from transitnet.realtime.replay import (
    ReplayServer,
    Snapshot,
    compute_offsets,
    load_snapshots,
    read_header_timestamp,
    snapshots_from_table,
)
from transitnet.store.importers_flat import read_flat_table

N_SNAPS = 8


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="transitnet")
    sub = parser.add_subparsers(required=True)
    replay_cli.register(sub)
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


@pytest.fixture(scope="module")
def akl_folder(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first N_SNAPS Auckland snapshots as files (30 s apart)."""
    folder = tmp_path_factory.mktemp("akl")
    tar_path = shared_data / "auckland-2019-08-13/vehicle_positions.tar.xz"
    with tarfile.open(tar_path, mode="r|*") as tar:
        for i, member in enumerate(tar):
            if i >= N_SNAPS:
                break
            handle = tar.extractfile(member)
            assert handle is not None
            (folder / member.name).write_bytes(handle.read())
    (folder / "notes.meta.json").write_text("{}")  # not a snapshot: skipped
    return folder


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _get(url: str, **headers: str) -> requests.Response:
    return requests.get(url, headers=headers, timeout=5)


@pytest.mark.real_data
def test_folder_is_served_in_order_one_per_request(akl_folder: Path) -> None:
    files = sorted(akl_folder.glob("*.pb"))
    with ReplayServer(load_snapshots(akl_folder), speed=0) as server:
        bodies = [_get(server.url).content for _ in files]
        status = _get(server.status_url).json()
        again = _get(server.url)  # after the end: the last one again
    assert bodies == [f.read_bytes() for f in files]
    stamps = [read_header_timestamp(b) for b in bodies]
    assert stamps == sorted(stamps) and len(set(stamps)) == N_SNAPS
    assert status["done"] and status["position"] == N_SNAPS - 1 and status["total"] == N_SNAPS
    assert again.content == bodies[-1]


@pytest.mark.real_data
def test_tar_is_served_in_member_name_order(akl_folder: Path, tmp_path: Path) -> None:
    files = sorted(akl_folder.glob("*.pb"))
    archive = tmp_path / "snaps.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for f in reversed(files):  # written out of order on purpose
            tar.add(f, arcname=f"vp/{f.name}")
    snaps = load_snapshots(archive)
    assert [s.name for s in snaps] == [f"vp/{f.name}" for f in files]
    with ReplayServer(snaps, speed=0) as server:
        assert [_get(server.url).content for _ in files] == [f.read_bytes() for f in files]


@pytest.mark.real_data
def test_speed_up_follows_the_recorded_timestamps(akl_folder: Path) -> None:
    snaps = load_snapshots(akl_folder)
    offsets = compute_offsets(snaps)
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    assert all(10 <= g <= 60 for g in gaps)  # polled every ~30 s
    clock = FakeClock()
    with ReplayServer(snaps, speed=30, clock=clock) as server:
        seen = []
        for step in range(N_SNAPS + 2):
            clock.t = 1000.0 + step * offsets[-1] / 30 / (N_SNAPS - 1)
            seen.append(read_header_timestamp(_get(server.url).content))
        assert _get(server.status_url).json()["done"]
    assert seen == sorted(seen)  # never goes back
    assert seen[0] == snaps[0].header_timestamp_raw
    assert seen[-1] == snaps[-1].header_timestamp_raw
    assert len(set(seen)) >= N_SNAPS - 1  # the header advanced with the replay clock


@pytest.mark.real_data
def test_conditional_gets_get_304_until_the_snapshot_changes(akl_folder: Path) -> None:
    clock = FakeClock()
    with ReplayServer(load_snapshots(akl_folder), speed=10, clock=clock) as server:
        first = _get(server.url)
        etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
        assert first.status_code == 200
        assert _get(server.url, **{"If-None-Match": etag}).status_code == 304
        assert _get(server.url, **{"If-Modified-Since": modified}).status_code == 304
        clock.t += 3.5  # 35 recorded seconds: the next snapshot is on air
        fresh = _get(server.url, **{"If-None-Match": etag})
        assert fresh.status_code == 200 and fresh.headers["ETag"] != etag
        assert requests.head(server.url, timeout=5).headers["ETag"] == fresh.headers["ETag"]
        assert _get(server.url.replace("/feed", "/nothing")).status_code == 404


@pytest.mark.real_data
def test_loop_starts_again(akl_folder: Path) -> None:
    snaps = load_snapshots(akl_folder)
    with ReplayServer(snaps, speed=0, loop=True) as server:
        bodies = [_get(server.url).content for _ in range(N_SNAPS + 2)]
        status = _get(server.status_url).json()
    assert bodies[N_SNAPS:] == bodies[:2]
    assert status["loops"] == 1 and not status["done"]


def test_snapshots_without_header_time_still_get_their_turn() -> None:
    snaps = [Snapshot("a", 100, b"a"), Snapshot("b", None, b"b"), Snapshot("c", 100, b"c"),
             Snapshot("d", 160, b"d"), Snapshot("e", 90, b"e")]  # fmt: skip
    assert compute_offsets(snaps) == [0.0, 60.0, 120.0, 180.0, 240.0]


def test_shutdown_closes_the_port() -> None:
    with ReplayServer([Snapshot("a", 1, b"x")], speed=0) as server:
        url = server.url
        assert _get(url).content == b"x"
    with pytest.raises(requests.ConnectionError):
        _get(url)


def test_bad_sources_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_snapshots(tmp_path / "missing")
    with pytest.raises(ValueError, match="no snapshot files"):
        load_snapshots(tmp_path)
    with pytest.raises(ValueError, match="empty"):
        ReplayServer([], speed=0)
    with pytest.raises(ValueError, match="speed"):
        ReplayServer([Snapshot("a", 1, b"x")], speed=-1)
    assert run_cli(["replay", str(tmp_path / "missing")]) == 2


@pytest.mark.real_data
def test_flattened_table_is_reencoded_per_timestamp(shared_data: Path) -> None:
    flat = read_flat_table(
        shared_data / "feeds/mbta-rail-2023-05-08/vehicle_positions_flat.parquet"
    )
    snaps = snapshots_from_table(flat.table)
    assert len(snaps) == 1  # one feed poll in this file
    with ReplayServer(snaps, speed=0) as server:
        decoded = decode_vehicle_positions(_get(server.url).content, feed_id="mbta")
    served = decoded.positions
    assert served.num_rows == flat.table.num_rows == 426
    for column in ("entity_id", "vehicle_id", "trip_id", "current_status", "stop_id",
                   "vehicle_timestamp_raw", "start_date"):  # fmt: skip
        assert served.column(column).to_pylist() == flat.table.column(column).to_pylist()
    lat_error = pc.max(
        pc.abs(pc.subtract(served.column("latitude"), flat.table.column("latitude")))
    )
    assert lat_error.as_py() < 1e-5  # float32 on the wire
    assert decoded.header.timestamp_raw == 1640995202


@pytest.mark.real_data
def test_cli_serves_until_done(akl_folder: Path, tmp_path: Path) -> None:
    url_file = tmp_path / "url.txt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "transitnet", "replay", str(akl_folder), "--speed", "0",
         "--exit-when-done", "--url-file", str(url_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not url_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        url = url_file.read_text().strip()
        bodies = [_get(url).content for _ in range(N_SNAPS)]
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.strip() == url and url.startswith("http://127.0.0.1:")
    assert bodies == [f.read_bytes() for f in sorted(akl_folder.glob("*.pb"))]
    assert "last snapshot served" in err


@pytest.mark.real_data
def test_capmetrics_csv_replays_as_polls(shared_data: Path) -> None:
    path = shared_data / "austin-capmetro/vehicle_positions/2016-12-18.csv"
    flat = read_flat_table(path)
    snaps = snapshots_from_table(flat.table, bin_s=120)
    stamps = [s.header_timestamp_raw for s in snaps]
    assert stamps == sorted(stamps) and all(t is not None and t % 120 == 0 for t in stamps)
    rows = [decode_vehicle_positions(s.read(), feed_id="a").positions for s in snaps]
    assert sum(t.num_rows for t in rows) == flat.table.num_rows == 11
