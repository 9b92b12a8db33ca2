from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import shapely

from transitnet.gtfs.feeds import read_static_feed
from transitnet.gtfs.project import (
    SegmentArrays,
    ShapeGeometry,
    build_segment_arrays,
    build_segment_grid,
    build_shape_geometry,
    find_candidates,
    project_to_segments,
    project_whole_shapes,
    simplify_polylines,
)
from transitnet.gtfs.shapes import ShapeTable, build_shape_table, make_shape_table


def _table(*shapes: list[tuple[float, float]]) -> ShapeTable:
    xs = [np.array([p[0] for p in s], dtype=float) for s in shapes]
    ys = [np.array([p[1] for p in s], dtype=float) for s in shapes]
    return make_shape_table([f"s{i}" for i in range(len(shapes))], xs, ys, "EPSG:32614")


def _segments(table: ShapeTable) -> SegmentArrays:
    return build_segment_arrays(table.offsets, table.x, table.y, table.cum_m)


def _geometry(table: ShapeTable, tol_m: float = 1.0) -> ShapeGeometry:
    return build_shape_geometry(table.offsets, table.x, table.y, table.cum_m, tol_m=tol_m)


def _lines(table: ShapeTable) -> np.ndarray:
    return np.array(
        [
            shapely.LineString(np.c_[table.x[a:b], table.y[a:b]])
            for a, b in zip(table.offsets[:-1], table.offsets[1:], strict=True)
        ],
        dtype=object,
    )


#: An out-and-back: 1 km east, then back west 20 m further north (two legs of one shape).
OUT_AND_BACK = [(0.0, 0.0), (500.0, 0.0), (1000.0, 0.0), (1000.0, 20.0), (0.0, 20.0)]


def test_segment_arrays_reject_inconsistent_tables() -> None:
    with pytest.raises(ValueError, match="inconsistent"):
        build_segment_arrays(np.array([0, 3]), np.zeros(2), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        build_segment_arrays(np.array([0, 2]), np.array([0.0, np.inf]), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="positive"):
        build_segment_grid(_segments(_table(OUT_AND_BACK)), radius_m=0)
    with pytest.raises(ValueError, match="negative"):
        _geometry(_table(OUT_AND_BACK), tol_m=-1.0)


def test_pairwise_projection_matches_shapely() -> None:
    rng = np.random.default_rng(0)
    table = _table([(float(x), float(y)) for x, y in rng.uniform(0, 1000, (40, 2))])
    seg = _segments(table)
    line = _lines(table)[0]
    px, py = rng.uniform(-200, 1200, 500), rng.uniform(-200, 1200, 500)
    best_d = np.full(500, np.nan)
    best_o = np.full(500, np.inf)
    for s in range(39):  # every segment, keep the nearest: a brute-force reference
        d, o = project_to_segments(seg, px - seg.origin[0], py - seg.origin[1], np.full(500, s))
        closer = o < best_o
        best_d[closer], best_o[closer] = d[closer], o[closer]
    points = shapely.points(px, py)
    np.testing.assert_allclose(best_o, shapely.distance(line, points), atol=1e-6)
    np.testing.assert_allclose(best_d, shapely.line_locate_point(line, points), atol=1e-6)
    for tol in (0.0, 5.0):
        geom = _geometry(table, tol)
        whole_d, whole_o = project_whole_shapes(geom, px, py, np.zeros(500, dtype=np.int64))
        np.testing.assert_allclose(whole_o, best_o, atol=1e-9)
        np.testing.assert_allclose(whole_d, best_d, atol=1e-9)


def test_one_candidate_per_leg_of_an_out_and_back() -> None:
    table = _table(OUT_AND_BACK, [(0.0, 5000.0), (10.0, 5000.0)])
    px = np.array([300.0, 700.0, 1000.0, 300.0, 300.0])
    py = np.array([8.0, 12.0, 10.0, 500.0, 8.0])
    shape = np.array([0, 0, 0, 0, 1])
    cands = find_candidates(_geometry(table), px, py, shape)
    assert cands.count.tolist() == [2, 2, 1, 0, 0]
    np.testing.assert_allclose(np.sort(cands.dist_m[0, :2]), [300.0, 1020.0 + 700.0])
    np.testing.assert_allclose(np.sort(cands.offset_m[0, :2]), [8.0, 12.0])
    np.testing.assert_allclose(np.sort(cands.dist_m[1, :2]), [700.0, 1020.0 + 300.0])
    # Outbound candidates point east, inbound ones west.
    east = cands.ux[0, :2][np.argsort(cands.dist_m[0, :2])]
    assert east.tolist() == [1.0, -1.0]
    assert np.isinf(cands.dist_m[3]).all() and np.isinf(cands.offset_m[4]).all()


def test_a_vertex_shared_by_two_segments_counts_once() -> None:
    # Outside corner: the nearest point is the shared vertex of two segments.
    table = _table([(0.0, 0.0), (100.0, 0.0), (100.0, 100.0)])
    cands = find_candidates(_geometry(table), np.array([110.0]), np.array([-10.0]), np.array([0]))
    assert cands.count.tolist() == [1]
    np.testing.assert_allclose(cands.dist_m[0, 0], 100.0)
    np.testing.assert_allclose(cands.offset_m[0, 0], np.hypot(10, 10))


def test_crowded_points_keep_their_closest_candidates() -> None:
    # A serpentine: ten east/west passes 10 m apart, the point in the middle.
    rows = [[(0.0, 10.0 * i), (1000.0, 10.0 * i)][:: 1 if i % 2 == 0 else -1] for i in range(10)]
    geom = _geometry(_table([p for row in rows for p in row]))
    cands = find_candidates(geom, np.array([500.0]), np.array([45.0]), np.array([0]),
                            max_candidates=3)  # fmt: skip
    assert cands.count.tolist() == [3]
    everything = find_candidates(geom, np.array([500.0]), np.array([45.0]), np.array([0]),
                                 max_candidates=64)  # fmt: skip
    assert everything.count[0] == 10
    closest = np.sort(everything.offset_m[0, : everything.count[0]])[:3]
    np.testing.assert_allclose(np.sort(cands.offset_m[0]), closest)
    np.testing.assert_allclose(closest, [5.0, 5.0, 15.0])


@pytest.mark.real_data
def test_nearest_candidate_is_shapely_on_austin_shapes(shared_data: Path) -> None:
    table = build_shape_table(read_static_feed(shared_data / "austin-capmetro" / "gtfs_2017-01"))
    geom = _geometry(table, 1.0)
    assert len(geom.coarse.x0) < 0.7 * len(table.x)  # 1 m simplification: fewer segments
    rng = np.random.default_rng(1)
    shape = rng.integers(0, len(table), 3000)
    vertex = table.offsets[shape] + rng.integers(0, np.diff(table.offsets)[shape])
    px = table.x[vertex] + rng.normal(0, 60, 3000)
    py = table.y[vertex] + rng.normal(0, 60, 3000)
    lines, points = _lines(table)[shape], shapely.points(px, py)
    ref_o = shapely.distance(lines, points)
    cands = find_candidates(geom, px, py, shape, max_candidates=64, prune_m=np.inf)
    nearest = np.min(cands.offset_m, axis=1)
    within = ref_o <= 200.0
    assert within.mean() > 0.95
    np.testing.assert_allclose(nearest[within], ref_o[within], atol=1e-6)
    assert (cands.count[~within] == 0).all()
    whole_d, whole_o = project_whole_shapes(geom, px, py, shape)
    np.testing.assert_allclose(whole_o, ref_o, atol=1e-6)
    # Equal up to ties (a loop's shared terminal, a point equidistant from two legs).
    ref_d = shapely.line_locate_point(lines, points)
    assert np.mean(np.abs(whole_d - ref_d) < 1e-3) > 0.99


def test_simplification_keeps_every_dropped_vertex_within_tolerance() -> None:
    rng = np.random.default_rng(2)
    walk = np.cumsum(rng.normal(0, 5, (400, 2)), axis=0)
    walk[:, 0] += np.arange(400) * 8.0
    table = _table([tuple(p) for p in walk], [(0.0, 0.0), (1.0, 0.0)], OUT_AND_BACK)
    for tol in (0.5, 2.0, 10.0):
        keep = simplify_polylines(table.x, table.y, table.offsets, tol)
        assert keep[table.offsets[:-1]].all() and keep[table.offsets[1:] - 1].all()
        for a, b in itertools.pairwise(table.offsets):
            kept = shapely.LineString(np.c_[table.x[a:b][keep[a:b]], table.y[a:b][keep[a:b]]])
            dropped = shapely.points(table.x[a:b][~keep[a:b]], table.y[a:b][~keep[a:b]])
            assert (shapely.distance(kept, dropped) <= tol + 1e-9).all()
        # The same vertices as shapely's Douglas-Peucker.
        line = shapely.LineString(walk)
        ref = shapely.get_coordinates(shapely.simplify(line, tol, preserve_topology=False))
        assert keep[: len(walk)].sum() == len(ref)
    exact = simplify_polylines(table.x, table.y, table.offsets, 0.0)
    assert exact[table.offsets[1] :].tolist() == [True, True, True, False, True, True, True]
