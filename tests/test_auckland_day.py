"""The Auckland day (2019-08-13, 2,280 VehiclePositions snapshots) end to end.

1. All snapshots through archive → decode → validate → dedup → store (the importer).
2. One contiguous hour (07:00-07:59 NZST, 120 snapshots) replayed over loopback HTTP
   and polled by ``ingest run`` (``run_forever``) stores exactly the rows the importer
   stores for the same snapshots. The full day over HTTP takes ~5 min on 2 cores (every
   tick writes raw, meta, log, state and a Parquet part, fsynced), too long for CI.
"""

from __future__ import annotations

import json
import tarfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from data_pipelines.config import parse_config
from data_pipelines.ingest import run_forever
from transitnet.realtime.replay import ReplayServer, load_snapshots
from transitnet.store.importers import import_paths
from transitnet.store.parquet import read_positions

TAR = "auckland-2019-08-13/vehicle_positions.tar.xz"
#: Measured by decoding every snapshot (the data README rounds them to 1.58 M / 1.09 M).
DAY_SNAPSHOTS, DAY_ROWS = 2_280, 1_578_502
DAY_STORED = 1_088_406  # distinct (feed, vehicle, vehicle timestamp, trip_id, start_time)
DAY_VEHICLE_FIXES = 1_088_388  # distinct (vehicle, vehicle timestamp)
HOUR = ("vehicle_locations_20190813070000", "vehicle_locations_20190813080000")
HOUR_SNAPSHOTS, HOUR_ROWS, HOUR_STORED = 120, 107_300, 80_578
#: Flags that depend on "now" (the fetch clock) and so differ between replay and import.
NOW_DEPENDENT = ["flag_w008", "flag_e050"]
INTERVAL_S = 0.2


@pytest.mark.real_data
@pytest.mark.slow
def test_whole_day_through_archive_to_store(shared_data: Path, tmp_path: Path) -> None:
    result = import_paths(tmp_path, "akl", [shared_data / TAR], progress=False)
    assert result.ok and result.failed == []
    assert (result.snapshots, result.duplicate_snapshots, result.decode_failures) == (
        DAY_SNAPSHOTS, 0, 0)  # fmt: skip
    assert (result.rows_read, result.rows_written) == (DAY_ROWS, DAY_STORED)
    assert result.duplicate_rows == DAY_ROWS - DAY_STORED
    assert len(list(tmp_path.glob("raw/feed=akl/date=*/hour=*/akl-*.pb"))) == DAY_SNAPSHOTS
    metas = sorted(tmp_path.glob("raw/feed=akl/date=*/hour=*/akl-*.meta.json"))
    assert len(metas) == DAY_SNAPSHOTS
    first = json.loads(metas[0].read_text())
    assert first["fetched_at"] == "2019-08-12T17:00:09+00:00"  # header clock, UTC
    assert first["outcome"] == "ok" and first["rows"] == 21
    keys = read_positions(tmp_path, dedup=False, columns=["vehicle_id", "vehicle_timestamp_raw",
                                                          "source_file", "date"])  # fmt: skip
    assert len(keys) == DAY_STORED
    assert len(keys.drop_duplicates(["vehicle_id", "vehicle_timestamp_raw"])) == DAY_VEHICLE_FIXES
    assert sorted(keys["date"].astype(str).unique()) == ["2019-08-12", "2019-08-13"]
    assert keys["source_file"].str.startswith("raw/feed=akl/").all()
    # the store's read-time dedup agrees with the import's: nothing more to drop
    assert len(read_positions(tmp_path, columns=["vehicle_id"])) == DAY_STORED
    assert not list(tmp_path.rglob(".tmp-*"))


@pytest.fixture(scope="module")
def hour_folder(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("akl-hour")
    with tarfile.open(shared_data / TAR, mode="r|*") as tar:
        for member in tar:
            if member.name >= HOUR[1]:
                break
            if member.name >= HOUR[0]:
                handle = tar.extractfile(member)
                assert handle is not None
                (folder / member.name).write_bytes(handle.read())
    return folder


def _ingest_over_http(folder: Path, store: Path) -> dict[str, object]:
    """Serve ``folder`` at speed 0 and poll it with ``run_forever`` until all were served."""
    with ReplayServer(load_snapshots(folder), speed=0) as server:
        config = parse_config({"feeds": [{
            "id": "akl", "url": server.url, "interval_s": INTERVAL_S,
            "connect_timeout_s": INTERVAL_S / 2, "read_timeout_s": INTERVAL_S * 0.95,
        }]})  # fmt: skip
        stop = threading.Event()
        loop = threading.Thread(target=run_forever, args=(config, store),
                                kwargs={"stop_event": stop})  # fmt: skip
        loop.start()
        try:
            assert server.wait_done(timeout=600)
            time.sleep(3 * INTERVAL_S)  # let the last tick finish its writes
        finally:
            stop.set()
            loop.join(timeout=120)
        return server.status()


@pytest.mark.real_data
@pytest.mark.slow
def test_hour_replayed_over_http_stores_the_same_rows(hour_folder: Path, tmp_path: Path) -> None:
    imported = import_paths(tmp_path / "import", "akl", [hour_folder], progress=False)
    assert (imported.snapshots, imported.rows_read, imported.rows_written) == (
        HOUR_SNAPSHOTS, HOUR_ROWS, HOUR_STORED)  # fmt: skip
    status = _ingest_over_http(hour_folder, tmp_path / "http")
    assert status["done"] and status["total"] == HOUR_SNAPSHOTS
    log = pd.read_parquet(tmp_path / "http" / "fetch_log")
    assert (log["outcome"] == "ok").sum() >= HOUR_SNAPSHOTS  # every snapshot fetched
    assert len(list((tmp_path / "http").glob("raw/**/*.pb"))) == HOUR_SNAPSHOTS
    key = ["vehicle_id", "vehicle_timestamp_raw", "trip_id", "start_time"]
    ignore = ["fetched_at", "source_file", *NOW_DEPENDENT]
    via_http = read_positions(tmp_path / "http").drop(columns=ignore)
    via_import = read_positions(tmp_path / "import").drop(columns=ignore)
    assert len(via_http) == len(via_import) == HOUR_STORED
    pd.testing.assert_frame_equal(
        via_http.sort_values(key).reset_index(drop=True),
        via_import.sort_values(key).reset_index(drop=True),
    )
