from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import transitnet.gtfs.artefacts as artefacts_module
from tests.faultserver import FaultServer, Reply
from tests.gtfs.static_helpers import tiny_feed
from transitnet.gtfs.artefacts import (
    META_FILE,
    ROUTE_COLUMNS,
    TRIP_COLUMNS,
    StaticArtefacts,
    build_artefacts,
    cache_dir_for,
    load_or_build_artefacts,
)
from transitnet.gtfs.feeds import StaticFeedError


def assert_same(a: StaticArtefacts, b: StaticArtefacts) -> None:
    assert a.version == b.version and a.line_key_mode == b.line_key_mode
    assert a.timezone == b.timezone
    for name in ("trips", "stop_dist", "stops", "routes"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    if a.stop_times is None:
        assert b.stop_times is None
    else:
        assert b.stop_times is not None
        pd.testing.assert_frame_equal(a.stop_times, b.stop_times)
    assert a.shapes.crs == b.shapes.crs
    for field in ("shape_ids", "offsets", "from_stops"):
        assert np.array_equal(getattr(a.shapes, field), getattr(b.shapes, field))
    for field in ("x", "y", "cum_m", "dist_traveled"):
        assert np.array_equal(getattr(a.shapes, field), getattr(b.shapes, field), equal_nan=True)


def forbid_building(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(artefacts_module, "build_artefacts", fail)
    monkeypatch.setattr(artefacts_module, "read_static_feed", fail)


def test_tiny_feed_artefacts() -> None:
    art = build_artefacts(tiny_feed())
    assert tuple(art.trips.columns) == TRIP_COLUMNS
    assert tuple(art.routes.columns) == ROUTE_COLUMNS
    assert art.trips["pattern_id"].notna().all()
    assert art.trips["line_key"].tolist() == ["R1", "R1", "R1", "R2"]
    st = art.stop_times
    assert st is not None
    last = st[st["trip_id"] == "t4"]
    assert last["arrival_s"].tolist() == [86280.0, 86610.0]  # 24:03:30 kept past midnight
    # the stops sit on the shape vertices 400 m apart
    east = art.stop_dist[art.stop_dist["shape_id"] == "E"]
    assert east["dist_m"].iloc[0] == 0.0
    assert east["dist_m"].iloc[1] == pytest.approx(art.shapes.length_m()[0], rel=1e-9)
    assert (art.stop_dist["dist_source"] == "projection").all()
    assert art.stops["location_type"].tolist() == [0, 0, 0]


def test_repeated_trip_ids_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    feed = tiny_feed()
    feed.trips = pd.concat([feed.trips, feed.trips.iloc[[3]]], ignore_index=True)
    art = build_artefacts(feed)
    assert len(art.trips) == 4 and art.trips["trip_id"].is_unique
    assert "1 rows with a null or repeated trip_id" in caplog.text
    assert art.stop_times is not None and len(art.stop_times) == 8


@pytest.mark.real_data
def test_austin_artefacts_and_cache_hit(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = shared_data / "austin-capmetro" / "gtfs_2017-01"
    cold = load_or_build_artefacts(folder, tmp_path)
    assert cold.version == "Jan_20170306123854"
    assert len(cold.shapes) == 310 and len(cold.trips) == 15901
    assert cold.stop_times is None and cold.stop_dist.empty
    assert cold.trips["line_key"].eq(cold.trips["route_id"]).all()
    assert cold.trips["shape_id"].isin(cold.shapes.shape_ids).all()
    directory = tmp_path / "static" / "Jan_20170306123854"
    meta = json.loads((directory / META_FILE).read_text())
    assert meta["version"] == cold.version and meta["crs"] == "EPSG:32614"
    assert cold.timezone == "America/Chicago"
    forbid_building(monkeypatch)
    warm = load_or_build_artefacts(folder, tmp_path)
    assert_same(cold, warm)
    # another line key mode is derived from the cache, not rebuilt
    short = load_or_build_artefacts(folder, tmp_path, line_key_mode="route_direction")
    assert short.trips["line_key"].str.fullmatch(r".+:(0|1|na)").all()


@pytest.mark.real_data
def test_auckland_artefacts_round_trip(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "auckland-2019-08-13" / "static_subset_2019-06"
    cold = load_or_build_artefacts(folder, tmp_path, line_key_mode="short_name")
    assert cold.version.startswith("sha256-")
    assert cold.timezone == "Pacific/Auckland"
    used = cold.routes[cold.routes["route_id"].isin(cold.trips["route_id"])]
    assert set(used["line_key"]) == {"70", "75", "25B", "25L", "27H", "27W"}
    assert cold.stop_times is not None and len(cold.stop_times) == 569
    assert "Unnamed: 0" not in cold.stops.columns
    warm = load_or_build_artefacts(folder, tmp_path, line_key_mode="short_name")
    assert_same(cold, warm)


@pytest.mark.real_data
def test_changed_content_under_same_version_rebuilds(
    shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "gtfs"
    shutil.copytree(shared_data / "austin-capmetro" / "gtfs_2017-01", folder)
    first = load_or_build_artefacts(folder, tmp_path / "cache")
    stops = (folder / "stops.txt").read_text().replace("CRAIGWOOD/FM 969", "RENAMED STOP")
    (folder / "stops.txt").write_text(stops)
    second = load_or_build_artefacts(folder, tmp_path / "cache")
    assert first.version == second.version
    assert "content changed under the same version" in caplog.text
    assert "4925 RENAMED STOP" in set(second.stops["stop_name"])
    third = load_or_build_artefacts(folder, tmp_path / "cache")
    assert "4925 RENAMED STOP" in set(third.stops["stop_name"])


@pytest.mark.real_data
def test_interrupted_write_leaves_no_usable_cache(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = shared_data / "feeds" / "bullrunner" / "bullrunner-gtfs.zip"
    calls = {"n": 0}
    real_write = artefacts_module._write_parquet

    def flaky(path: Path, df: pd.DataFrame) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        real_write(path, df)

    monkeypatch.setattr(artefacts_module, "_write_parquet", flaky)
    with pytest.raises(OSError, match="disk full"):
        load_or_build_artefacts(src, tmp_path)
    directory = next((tmp_path / "static").iterdir())
    assert not (directory / META_FILE).exists()
    assert not list(directory.glob(".tmp-*"))
    monkeypatch.setattr(artefacts_module, "_write_parquet", real_write)
    art = load_or_build_artefacts(src, tmp_path)  # rebuilt, then cached
    assert (directory / META_FILE).exists() and len(art.trips) == 15


@pytest.mark.real_data
def test_cache_from_url_and_bad_feed(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "feeds" / "bullrunner"
    with FaultServer() as server:
        server.route("/gtfs.zip", Reply(200, body=(folder / "bullrunner-gtfs.zip").read_bytes()))
        art = load_or_build_artefacts(server.url("/gtfs.zip"), tmp_path)
        again = load_or_build_artefacts(server.url("/gtfs.zip"), tmp_path)
    assert_same(art, again)
    assert len(list((tmp_path / "static").iterdir())) == 1
    with pytest.raises(StaticFeedError, match="no GTFS tables found"):
        load_or_build_artefacts(folder / "badgtfs.zip", tmp_path)


def test_cache_dir_names_are_safe(tmp_path: Path) -> None:
    assert cache_dir_for(tmp_path, "Jan_20170306123854").name == "Jan_20170306123854"
    assert cache_dir_for(tmp_path, "../v 1/2").name == "_v_1_2"
    assert cache_dir_for(tmp_path, "..").name == "_"
    assert cache_dir_for(tmp_path, "x").parent == tmp_path / "static"
