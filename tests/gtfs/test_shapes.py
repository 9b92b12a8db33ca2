from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyproj
import pytest
import shapely

from tests.gtfs.static_helpers import read_member, rewrite_zip, tiny_feed
from transitnet.gtfs.feeds import read_static_feed
from transitnet.gtfs.shapes import (
    ShapeTable,
    build_shape_table,
    compute_utm_crs,
    interpolate_lonlat,
    interpolate_xy,
    make_shape_table,
    project_lonlat,
    unproject_xy,
)
from transitnet.realtime.decode import decode_vehicle_positions


@pytest.fixture(scope="module")
def austin(shared_data: Path) -> tuple[object, ShapeTable]:
    feed = read_static_feed(shared_data / "austin-capmetro" / "gtfs_2017-01")
    return feed, build_shape_table(feed)


def test_utm_zones_for_known_cities() -> None:
    assert compute_utm_crs(-97.74, 30.27) == "EPSG:32614"  # Austin
    assert compute_utm_crs(174.76, -36.85) == "EPSG:32760"  # Auckland
    assert compute_utm_crs(151.21, -33.87) == "EPSG:32756"  # Sydney
    assert compute_utm_crs(5.32, 60.39) == "EPSG:32632"  # Bergen (Norway exception)
    assert compute_utm_crs(180.0, 10.0) == "EPSG:32660"
    with pytest.raises(ValueError, match="no UTM zone"):
        compute_utm_crs(float("nan"), 0.0)


@pytest.mark.real_data
def test_utm_zone_of_real_feeds_and_positions(shared_data: Path, austin: tuple) -> None:
    assert austin[1].crs == "EPSG:32614"
    auckland = read_static_feed(shared_data / "auckland-2019-08-13" / "static_subset_2019-06")
    assert build_shape_table(auckland).crs == "EPSG:32760"
    snapshot = sorted((shared_data / "feeds" / "tfnsw-2020-09-01").glob("GTFS_VP*.pb.gz"))[0]
    body = gzip.decompress(snapshot.read_bytes())
    sydney = decode_vehicle_positions(body, feed_id="tfnsw").positions.to_pandas()
    lon, lat = sydney["longitude"].median(), sydney["latitude"].median()
    assert compute_utm_crs(lon, lat) == "EPSG:32756"


def test_projection_turns_bad_points_into_nan() -> None:
    lon = np.array([0.0, np.nan, np.inf, 200.0, -97.74, -97.74])
    lat = np.array([0.0, 30.0, 30.0, 30.0, 95.0, 30.27])
    x, y = project_lonlat("EPSG:32614", lon, lat)
    assert np.isnan(x[:5]).all() and np.isnan(y[:5]).all()
    assert np.isfinite(x[5]) and np.isfinite(y[5])
    assert not np.isinf(x).any()
    back_lon, back_lat = unproject_xy("EPSG:32614", x, y)
    assert np.isnan(back_lon[:5]).all()
    assert back_lon[5] == pytest.approx(-97.74, abs=1e-9)
    assert back_lat[5] == pytest.approx(30.27, abs=1e-9)


@pytest.mark.real_data
def test_austin_shape_table_matches_shapely_and_geodesic_lengths(austin: tuple) -> None:
    feed, table = austin
    assert len(table) == 310 and not table.from_stops.any()
    assert (np.diff(table.offsets) >= 2).all()
    starts = table.offsets[:-1]
    assert (table.cum_m[starts] == 0).all()
    lines = [
        shapely.LineString(np.c_[table.x[a:b], table.y[a:b]])
        for a, b in zip(table.offsets[:-1], table.offsets[1:], strict=True)
    ]
    np.testing.assert_allclose(table.length_m(), shapely.length(lines), rtol=1e-9)
    geod = pyproj.Geod(ellps="WGS84")
    shapes = feed.shapes.sort_values(["shape_id", "shape_pt_sequence"])
    for shape_id in table.shape_ids[:40]:
        pts = shapes[shapes["shape_id"] == shape_id]
        true = geod.line_length(pts["shape_pt_lon"].to_numpy(), pts["shape_pt_lat"].to_numpy())
        got = table.length_m()[table.index_of([shape_id])[0]]
        assert got == pytest.approx(true, rel=1e-3)  # UTM scale error near Austin < 0.1 %
    # shape_dist_traveled (km in this feed) agrees with the metric length
    last = shapes.groupby("shape_id")["shape_dist_traveled"].max()
    ratio = table.length_m() / last.reindex(table.shape_ids).to_numpy() / 1000
    assert np.median(ratio) == pytest.approx(1.0, abs=0.01)


@pytest.mark.real_data
def test_index_of_and_interpolation_round_trip(austin: tuple) -> None:
    feed, table = austin
    idx = table.index_of(np.array([table.shape_ids[3], "no-such-shape", None], dtype=object))
    assert idx.tolist() == [3, -1, -1]
    a, b = table.offsets[3], table.offsets[4]
    lon, lat = interpolate_lonlat(table, np.full(b - a, 3), table.cum_m[a:b])
    shapes = feed.shapes[feed.shapes["shape_id"] == table.shape_ids[3]]
    shapes = shapes.sort_values("shape_pt_sequence")
    np.testing.assert_allclose(lon, shapes["shape_pt_lon"].to_numpy(), atol=1e-7)
    np.testing.assert_allclose(lat, shapes["shape_pt_lat"].to_numpy(), atol=1e-7)


def test_interpolation_clamps_and_flags() -> None:
    table = make_shape_table(
        ["a", "b"],
        [np.array([0.0, 100.0, 100.0, 100.0]), np.array([0.0, 0.0])],
        [np.array([0.0, 0.0, 0.0, 50.0]), np.array([0.0, 10.0])],
        "EPSG:32614",
    )
    assert table.length_m().tolist() == [150.0, 10.0]
    x, y = interpolate_xy(
        table, np.array([0, 0, 0, 0, 1, -1, 0]), np.array([50, 100, 125, 999, 5, 5, np.nan])
    )
    assert x[:5].tolist() == [50.0, 100.0, 100.0, 100.0, 0.0]
    assert y[:5].tolist() == [0.0, 0.0, 25.0, 50.0, 5.0]
    assert np.isnan(x[5:]).all() and np.isnan(y[5:]).all()


def test_make_shape_table_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least two"):
        make_shape_table(["a"], [np.array([0.0])], [np.array([0.0])], "EPSG:32614")
    with pytest.raises(ValueError, match="unique"):
        make_shape_table(["a", "a"], [np.zeros(2)] * 2, [np.zeros(2)] * 2, "EPSG:32614")
    with pytest.raises(ValueError, match="finite"):
        make_shape_table(["a"], [np.array([0.0, np.nan])], [np.zeros(2)], "EPSG:32614")


@pytest.mark.real_data
def test_stop_polylines_when_shapes_are_missing(shared_data: Path) -> None:
    src = shared_data / "feeds" / "bullrunner" / "bullrunner-gtfs-no-shapes.zip"
    table = build_shape_table(read_static_feed(src))
    assert len(table) == 6 and table.from_stops.all()
    assert all(s.startswith("stops:") for s in table.shape_ids)
    with_shapes = build_shape_table(
        read_static_feed(shared_data / "feeds" / "bullrunner" / "bullrunner-gtfs.zip")
    )
    # stop polylines cut corners: shorter than the real shapes, but the same order of size
    ratio = np.sort(table.length_m()) / np.sort(with_shapes.length_m())
    assert ((ratio > 0.6) & (ratio <= 1.01)).all()


@pytest.mark.real_data
def test_broken_shape_points_are_dropped_and_replaced(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "feeds" / "bullrunner" / "bullrunner-gtfs.zip"
    text = read_member(src, "shapes.txt").splitlines()
    header, rows = text[0], text[1:]
    kept = [r for r in rows if not r.startswith("5,")]
    broken = [r for r in rows if r.startswith("5,")][:1]
    zero = kept[1].split(",")
    zero[1], zero[2] = "0", "0"  # a (0, 0) point inside shape 0
    body = "\n".join([header, kept[0], ",".join(zero), *kept[2:], *broken])
    feed_path = rewrite_zip(src, tmp_path / "b.zip", replace={"shapes.txt": body.encode()})
    table = build_shape_table(read_static_feed(feed_path))
    idx0 = table.index_of(["0"])[0]
    n0 = sum(r.startswith("0,") for r in rows)
    assert table.offsets[idx0 + 1] - table.offsets[idx0] == n0 - 1
    assert table.index_of(["5"])[0] == -1  # one valid point: not a shape
    assert table.from_stops.sum() == 1  # route F's trips get a stop polyline instead
    assert np.isfinite(table.x).all() and np.isfinite(table.cum_m).all()


def test_tiny_feed_without_shapes_builds_polylines() -> None:
    table = build_shape_table(tiny_feed(with_shapes=False))
    assert table.from_stops.all()
    assert len(table) == 3  # patterns a-b, b-a, a-c
    assert table.crs == "EPSG:32614"
    geod = pyproj.Geod(ellps="WGS84")
    east = geod.line_length([-97.74, -97.736], [30.27, 30.27])
    north = geod.line_length([-97.74, -97.74], [30.27, 30.274])
    np.testing.assert_allclose(np.sort(table.length_m()), [east, east, north], rtol=1e-3)
