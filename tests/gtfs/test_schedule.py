from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely

from transitnet.gtfs.artefacts import build_artefacts
from transitnet.gtfs.feeds import read_static_feed
from transitnet.gtfs.schedule import locate_in_order, parse_gtfs_times


def test_parse_gtfs_times(caplog: pytest.LogCaptureFixture) -> None:
    times = pd.Series(["07:00:00", "25:10:00", " 7:05:00", None, "", "7:5", "08:61:00"])
    with caplog.at_level(logging.WARNING):
        seconds = parse_gtfs_times(times)
    assert seconds[:3].tolist() == [25200.0, 90600.0, 25500.0]
    assert np.isnan(seconds[3:]).all()
    assert "2 malformed times" in caplog.text


def _out_and_back() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # east 1000 m along y=0, then back west along y=8 (the other side of the street)
    x = np.array([0.0, 500.0, 1000.0, 1000.0, 500.0, 0.0])
    y = np.array([0.0, 0.0, 0.0, 8.0, 8.0, 8.0])
    cum = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    return x, y, cum


def test_inbound_stops_land_on_the_inbound_leg() -> None:
    sx, sy, cum = _out_and_back()
    # stops out at 200, 800 m, then back at 800, 200 m, GPS-like 5 m noise toward the other leg
    px = np.array([200.0, 800.0, 800.0, 200.0])
    py = np.array([5.0, 5.0, 3.0, 3.0])
    dist, off = locate_in_order(px, py, sx, sy, cum)
    np.testing.assert_allclose(dist, [200.0, 800.0, 1208.0, 1808.0])
    np.testing.assert_allclose(off, [5.0, 5.0, 5.0, 5.0])
    # a naive nearest projection puts both inbound stops on the outbound leg
    line = shapely.LineString(np.c_[sx, sy])
    naive = shapely.line_locate_point(line, shapely.points(px, py))
    assert (naive[2:] < 1000).all()


def test_loop_end_stop_lands_at_the_end() -> None:
    x = np.array([0.0, 300.0, 300.0, 0.0, 0.0])
    y = np.array([0.0, 0.0, 300.0, 300.0, 0.0])
    cum = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    px = np.array([0.0, 300.0, np.nan, 0.0, 0.0])
    py = np.array([0.0, 150.0, np.nan, 300.0, 0.0])
    dist, off = locate_in_order(px, py, x, y, cum)
    assert dist[0] == 0.0 and dist[-1] == 1200.0
    assert dist[1] == 450.0 and dist[3] == 900.0
    assert np.isnan(dist[2]) and np.isnan(off[2])


@pytest.fixture(scope="module")
def caltrain_feed(shared_data: Path) -> object:
    return read_static_feed(shared_data / "feeds" / "caltrain" / "ct.zip")


@pytest.mark.real_data
def test_caltrain_stop_distances_from_shape_dist_traveled(caltrain_feed: object) -> None:
    art = build_artefacts(caltrain_feed)
    sd = art.stop_dist
    assert set(sd["dist_source"]) == {"shape_dist_traveled"}
    assert sd["offset_m"].median() < 10 and sd["offset_m"].max() < 50
    assert (sd.groupby(["shape_id", "pattern_id"])["dist_m"].diff().dropna() >= 0).all()
    # an independent check: the in-order projection agrees with shape_dist_traveled
    feed = caltrain_feed.copy()  # type: ignore[attr-defined]
    feed.stop_times = feed.stop_times.drop(columns="shape_dist_traveled")
    projected = build_artefacts(feed).stop_dist
    assert set(projected["dist_source"]) == {"projection"}
    gap = (projected["dist_m"] - sd["dist_m"]).abs()
    assert gap.median() < 10 and gap.max() < 100


@pytest.mark.real_data
def test_stop_shape_dist_units_detected(caltrain_feed: object) -> None:
    reference = build_artefacts(caltrain_feed).stop_dist
    feed = caltrain_feed.copy()  # type: ignore[attr-defined]
    feed.shapes = feed.shapes.drop(columns="shape_dist_traveled")
    feed.stop_times = feed.stop_times.assign(
        shape_dist_traveled=feed.stop_times["shape_dist_traveled"] / 1609.344  # miles
    )
    sd = build_artefacts(feed).stop_dist
    assert set(sd["dist_source"]) == {"shape_dist_traveled"}
    np.testing.assert_allclose(sd["dist_m"], reference["dist_m"], atol=60)


@pytest.mark.real_data
def test_inconsistent_shape_dist_traveled_is_rejected(caltrain_feed: object) -> None:
    feed = caltrain_feed.copy()  # type: ignore[attr-defined]
    st = feed.stop_times
    feed.stop_times = st.assign(shape_dist_traveled=st["shape_dist_traveled"] * 0.5)
    sd = build_artefacts(feed).stop_dist
    assert set(sd["dist_source"]) == {"projection"}
    assert sd["offset_m"].median() < 10


@pytest.mark.real_data
def test_auckland_stop_times_in_seconds_with_distances(shared_data: Path) -> None:
    feed = read_static_feed(shared_data / "auckland-2019-08-13" / "static_subset_2019-06")
    art = build_artefacts(feed)
    st = art.stop_times
    assert st is not None and len(st) == 569
    assert st["arrival_s"].notna().all() and (st["departure_s"] >= st["arrival_s"]).all()
    first = st[st["stop_index"] == 0]
    assert (first["dist_m"] < 50).all()
    for _, trip in st.groupby("trip_id"):
        assert (np.diff(trip["arrival_s"]) >= 0).all()
        assert (np.diff(trip["dist_m"]) >= 0).all()
    last = st.loc[st.groupby("trip_id")["stop_index"].idxmax()]
    shape_rows = art.shapes.index_of(
        art.trips.set_index("trip_id").loc[last["trip_id"], "shape_id"].to_numpy()
    )
    # the last stop sits near the end of its shape
    assert (art.shapes.length_m()[shape_rows] - last["dist_m"].to_numpy() < 300).all()
