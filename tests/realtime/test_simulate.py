from __future__ import annotations

import argparse
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gtfs_kit
import numpy as np
import pandas as pd
import pyarrow as pa
import pyproj
import pytest
import shapely
from google.transit import gtfs_realtime_pb2

from transitnet.cli import simulate as simulate_cli
from transitnet.realtime.decode import decode_vehicle_positions
from transitnet.realtime.replay import ReplayServer
from transitnet.realtime.sim_network import build_default_network
from transitnet.realtime.sim_plan import StaticFeedError, plan_trips
from transitnet.realtime.simulate import (
    SimConfig,
    read_static,
    simulate_snapshots,
    simulate_trip,
    trip_rng,
)

START = datetime(2025, 1, 15, 7, 0, tzinfo=UTC)  # a Wednesday, 08:00 in Zurich


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_default_network(tmp_path_factory.mktemp("net") / "net.zip")


@pytest.fixture(scope="module")
def feed(network: Path) -> Any:
    return read_static(network)


@pytest.fixture(scope="module")
def rows(feed: Any) -> pd.DataFrame:
    snaps = simulate_snapshots(feed, SimConfig(start=START, duration_s=3600, seed=7))
    tables = [decode_vehicle_positions(s.read(), feed_id="sim").positions for s in snaps]
    return pa.concat_tables(tables).to_pandas()


def test_default_network_is_a_complete_gtfs_feed(network: Path) -> None:
    feed = gtfs_kit.read_feed(network, dist_units="m")
    assert len(feed.routes) == 4
    assert set(feed.trips.groupby("route_id")["direction_id"].nunique()) == {2}
    assert feed.shapes["shape_dist_traveled"].notna().all()
    assert feed.stop_times["shape_dist_traveled"].notna().all()
    assert set(feed.calendar["service_id"]) == {"WD", "WE"}
    assert (feed.stop_times["departure_time"].str[:2].astype(int) >= 24).any()  # past midnight
    first_last = feed.shapes.sort_values("shape_pt_sequence").groupby("shape_id").agg(
        lat0=("shape_pt_lat", "first"), lat1=("shape_pt_lat", "last"),
        lon0=("shape_pt_lon", "first"), lon1=("shape_pt_lon", "last"),
    )  # fmt: skip
    closed = (first_last["lat0"] == first_last["lat1"]) & (first_last["lon0"] == first_last["lon1"])
    assert set(first_last.index[closed]) == {
        "SH3-0",
        "SH3-1",
        "SH4-0",
        "SH4-1",
    }  # out-and-back, loop
    assert feed.trips["block_id"].nunique() < len(feed.trips) / 5  # vehicles chain trips


def test_same_seed_same_bytes_other_seed_differs(feed: Any) -> None:
    config = SimConfig(start=START, duration_s=600, seed=3)
    first = [s.read() for s in simulate_snapshots(feed, config)]
    again = [s.read() for s in simulate_snapshots(feed, config)]
    other = [s.read() for s in simulate_snapshots(feed, SimConfig(start=START, duration_s=600))]
    assert first == again and len(first) == 20
    assert first != other


def test_output_is_marked_simulated(feed: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        snaps = simulate_snapshots(feed, SimConfig(start=START, duration_s=60, seed=1))
    msg = gtfs_realtime_pb2.FeedMessage.FromString(snaps[0].read())
    assert "simulated" in msg.header.feed_version
    assert msg.entity and all(e.id.startswith("sim-") for e in msg.entity)
    assert all(e.vehicle.vehicle.id.startswith("sim-") for e in msg.entity)
    assert snaps[0].name == "sim-20250115T070000Z.pb"
    assert "SIMULATED feed" in caplog.text


def _shape_offsets(rows: pd.DataFrame, feed: Any) -> np.ndarray:
    """Metres from each fix to its trip's shape (UTM)."""
    lat = float(feed.stops["stop_lat"].median())
    lon = float(feed.stops["stop_lon"].median())
    epsg = (32600 if lat >= 0 else 32700) + int((lon + 180) // 6) + 1
    to_m = pyproj.Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    lines = {}
    for shape_id, pts in feed.shapes.sort_values("shape_pt_sequence").groupby("shape_id"):
        x, y = to_m.transform(pts["shape_pt_lon"].to_numpy(), pts["shape_pt_lat"].to_numpy())
        lines[shape_id] = shapely.LineString(np.column_stack([x, y]))
    shape_of = feed.trips.set_index("trip_id")["shape_id"]
    geoms = [lines[shape_of[t]] for t in rows["trip_id"]]
    x, y = to_m.transform(rows["longitude"].to_numpy(), rows["latitude"].to_numpy())
    offsets: np.ndarray = shapely.distance(np.array(geoms), shapely.points(x, y))
    return offsets


def _speeds(rows: pd.DataFrame) -> np.ndarray:
    """Straight-line speed between consecutive distinct fixes of each vehicle (m/s)."""
    fixes = rows.drop_duplicates(["vehicle_id", "vehicle_timestamp_raw"]).sort_values(
        ["vehicle_id", "vehicle_timestamp_raw"]
    )
    lat, lon = np.radians(fixes["latitude"]), np.radians(fixes["longitude"])
    dy = lat.diff() * 6_371_000
    dx = lon.diff() * 6_371_000 * np.cos(lat)
    dt = fixes["vehicle_timestamp_raw"].astype(float).diff()
    same = fixes["vehicle_id"].eq(fixes["vehicle_id"].shift())
    speed: np.ndarray = (np.hypot(dx, dy) / dt)[same].to_numpy()
    return speed


def test_plausible_speeds_and_positions_near_the_shape(rows: pd.DataFrame, feed: Any) -> None:
    assert len(rows) > 2000 and rows["vehicle_id"].nunique() > 20
    speeds = _speeds(rows)
    assert speeds.max() < 26 and np.median(speeds) > 1
    assert rows["speed"].max() < 26 and (rows["speed"] >= 0).all()
    offsets = _shape_offsets(rows, feed)
    assert offsets.max() < 30 and np.median(offsets) < 10


def test_dwells_missing_and_stale_fixes_are_present(rows: pd.DataFrame) -> None:
    status = rows["current_status"].value_counts()
    assert status[1] > 0.1 * len(rows) and status[2] > 0.3 * len(rows)  # STOPPED_AT, IN_TRANSIT_TO
    ordered = rows.sort_values(["vehicle_id", "header_timestamp_raw"])
    same_vehicle = ordered["vehicle_id"].eq(ordered["vehicle_id"].shift())
    stale = same_vehicle & ordered["vehicle_timestamp_raw"].eq(
        ordered["vehicle_timestamp_raw"].shift()
    )
    gap = ordered["header_timestamp_raw"].astype(float).diff()
    missing = same_vehicle & (gap > 30)
    assert 0.02 < stale.mean() < 0.09  # p_stale = 0.05
    assert 0.01 < missing.mean() < 0.06  # p_missing = 0.03
    assert not rows.duplicated(["header_timestamp_raw", "vehicle_id"]).any()  # no E052
    lag = rows["header_timestamp_raw"].astype(float) - rows["vehicle_timestamp_raw"].astype(float)
    assert (lag >= 0).all() and lag.median() > 0


def test_delays_persist_along_a_trip(feed: Any) -> None:
    plans = plan_trips(feed, START, START.replace(hour=9))
    delays = []
    for plan in plans:
        run = simulate_trip(plan, trip_rng(0, plan.trip_id), SimConfig())
        delays.append(run.arrive[1:] - plan.arrival[1:])
    first = np.array([d[0] for d in delays])
    mid = np.array([d[len(d) // 2] for d in delays])
    assert np.corrcoef(first, mid)[0, 1] > 0.5  # a late trip stays late
    assert np.median(first) > 0


@pytest.mark.real_data
def test_limits_and_real_static_feed(shared_data: Path) -> None:
    bullrunner = read_static(shared_data / "feeds/bullrunner/bullrunner-gtfs.zip")  # frequencies
    start = datetime(2017, 9, 13, 13, 0, tzinfo=UTC)  # 09:00 in Tampa, a Wednesday
    config = SimConfig(start=start, duration_s=1200, seed=2, max_vehicles=5)
    snaps = simulate_snapshots(bullrunner, config)
    rows = pa.concat_tables(
        [decode_vehicle_positions(s.read(), feed_id="b").positions for s in snaps]
    ).to_pandas()
    assert rows["vehicle_id"].nunique() == 5
    assert set(rows["route_id"]) <= set(bullrunner.routes["route_id"])
    assert _speeds(rows).max() < 26
    assert _shape_offsets(rows, bullrunner).max() < 30


@pytest.mark.real_data
def test_caltrain_runs(shared_data: Path) -> None:
    caltrain = read_static(shared_data / "feeds/caltrain/ct.zip")
    start = datetime(2024, 1, 17, 16, 0, tzinfo=UTC)
    snaps = simulate_snapshots(caltrain, SimConfig(start=start, duration_s=900, seed=1))
    n = sum(len(decode_vehicle_positions(s.read(), feed_id="c").positions) for s in snaps)
    assert len(snaps) == 30 and n > 100


@pytest.mark.real_data
def test_bad_feeds_and_empty_windows_are_clear_errors(shared_data: Path, feed: Any) -> None:
    with pytest.raises(StaticFeedError):
        read_static(shared_data / "feeds/bullrunner/badgtfs.zip")
    with pytest.raises(StaticFeedError, match="not found"):
        read_static(Path("/nonexistent/gtfs.zip"))
    with pytest.raises(StaticFeedError, match="no trip"):
        simulate_snapshots(feed, SimConfig(start=datetime(2040, 1, 1, tzinfo=UTC)))


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="transitnet")
    simulate_cli.register(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


def test_cli_writes_snapshots_that_replay(tmp_path: Path, network: Path) -> None:
    out = tmp_path / "snaps"
    argv = ["simulate", "--static", str(network), "--start", "2025-01-15T08:00:00+01:00",
            "--duration-s", "300", "--step-s", "30", "--seed", "5", "--out", str(out)]  # fmt: skip
    assert _run_cli(argv) == 0
    files = sorted(out.glob("sim-*.pb"))
    assert [f.name for f in files][:2] == ["sim-20250115T070000Z.pb", "sim-20250115T070030Z.pb"]
    assert len(files) == 10
    from transitnet.realtime.replay import load_snapshots

    with ReplayServer(load_snapshots(out), speed=0) as server:
        import requests

        served = [requests.get(server.url, timeout=5).content for _ in files]
    assert served == [f.read_bytes() for f in files]
    assert _run_cli(["simulate", "--start", "tomorrow", "--out", str(out)]) == 2
    assert _run_cli(["simulate", "--start", "2025-01-15T08:00:00", "--out", str(out)]) == 2
    assert _run_cli(["simulate", "--p-missing", "0.9", "--p-stale", "0.2"]) == 2
