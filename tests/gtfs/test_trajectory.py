from __future__ import annotations

import numpy as np
import pandas as pd
import shapely

from transitnet.gtfs.project import ShapeGeometry, build_shape_geometry, find_candidates
from transitnet.gtfs.shapes import make_shape_table
from transitnet.gtfs.trajectory import (
    DwellConfig,
    Selection,
    TrajectoryPoints,
    WindowConfig,
    build_schedule_index,
    build_stop_index,
    choose_service_dates,
    compute_along_speed,
    compute_day_origins,
    compute_headings,
    compute_scheduled_s,
    detect_dwells,
    select_candidates,
)

#: 3 km east along y=0, then back west along y=20 (a street's two carriageways).
OUT_AND_BACK = [(0.0, 0.0), (1500.0, 0.0), (3000.0, 0.0), (3000.0, 20.0), (0.0, 20.0)]
#: A 1 km square loop starting and ending at the origin, anticlockwise.
LOOP = [(0.0, 0.0), (1000.0, 0.0), (1000.0, 1000.0), (0.0, 1000.0), (0.0, 0.0)]


def _geometry(shape: list[tuple[float, float]]) -> ShapeGeometry:
    table = make_shape_table(["s"], [np.array([p[0] for p in shape])],
                             [np.array([p[1] for p in shape])], "EPSG:32614")  # fmt: skip
    return build_shape_geometry(table.offsets, table.x, table.y, table.cum_m)


def _match(
    shape: list[tuple[float, float]],
    xy: list[tuple[float, float]],
    t: list[float] | None = None,
    *,
    bearing: list[float] | None = None,
    starts: list[int] | None = None,
) -> Selection:
    """Match fixes ``xy`` (one trajectory unless ``starts`` says otherwise) onto ``shape``."""
    px, py = np.array([p[0] for p in xy]), np.array([p[1] for p in xy])
    n = len(xy)
    cands = find_candidates(_geometry(shape), px, py, np.zeros(n, dtype=np.int64))
    first = np.array(starts if starts is not None else [0])
    lengths = np.diff(np.append(first, n))
    times = np.array(t if t is not None else [30.0 * i for i in range(n)])
    bearings = np.array(bearing if bearing is not None else [np.nan] * n)
    hx, hy = compute_headings(bearings)
    return select_candidates(cands, TrajectoryPoints(times, hx, hy, first, lengths))


def _plain(shape: list[tuple[float, float]], xy: list[tuple[float, float]]) -> np.ndarray:
    return np.asarray(shapely.line_locate_point(shapely.LineString(shape), shapely.points(xy)))


def test_inbound_vehicle_stays_on_the_inbound_leg() -> None:
    rng = np.random.default_rng(0)
    out = [(x, rng.normal(3, 4)) for x in np.arange(0.0, 3000.0, 300.0)]
    back = [(x, rng.normal(12, 4)) for x in np.arange(2900.0, 0.0, -300.0)]
    sel = _match(OUT_AND_BACK, out + back)
    inbound = sel.dist_m[len(out) :]
    expected = 3020.0 + 3000.0 - np.array([p[0] for p in back])
    # The first fix back from the turnaround is nearer the outbound carriageway: it goes
    # to the earlier leg, and the next fix, only reachable inbound, corrects that.
    assert back[0][1] < 10.0
    np.testing.assert_allclose(inbound[0], 2900.0, atol=1e-6)
    np.testing.assert_allclose(inbound[1:], expected[1:], atol=1.0)
    assert not sel.reacquired.any()
    # A plain nearest-point projection puts part of the inbound run on the outbound leg.
    assert (_plain(OUT_AND_BACK, back) < 3000.0).any()


def test_first_fix_on_the_inbound_leg_is_placed_there() -> None:
    # First seen mid-way back (closer to the outbound carriageway), then moving west.
    back = [(2000.0, 9.0), (1800.0, 15.0), (1600.0, 18.0)]
    sel = _match(OUT_AND_BACK, back)
    np.testing.assert_allclose(sel.dist_m, [4020.0, 4220.0, 4420.0], atol=0.5)
    assert _plain(OUT_AND_BACK, back[:1])[0] < 3000.0


def test_loop_terminal_is_the_start_before_and_the_end_after() -> None:
    layover = [(3.0, -4.0), (2.0, -5.0), (4.0, -3.0)]
    lap = [(500.0, 2.0), (1002.0, 500.0), (500.0, 1003.0), (-2.0, 500.0)]
    sel = _match(LOOP, [*layover, *lap, (1.0, 3.0), (2.0, 2.0)])
    np.testing.assert_allclose(sel.dist_m[:3], [3.0, 2.0, 4.0], atol=0.5)
    np.testing.assert_allclose(sel.dist_m[3:7], [500.0, 1500.0, 2500.0, 3500.0], atol=5.0)
    assert (sel.dist_m[7:] > 3990.0).all()
    assert np.all(np.diff(sel.dist_m[2:]) > -30.0)


def test_bearing_breaks_a_tie_between_legs_for_a_first_fix() -> None:
    fix = [(1500.0, 10.0)]  # halfway between the carriageways, no next fix
    west = _match(OUT_AND_BACK, fix, bearing=[270.0])
    east = _match(OUT_AND_BACK, fix, bearing=[90.0])
    np.testing.assert_allclose(west.dist_m, [4520.0], atol=0.5)
    np.testing.assert_allclose(east.dist_m, [1500.0], atol=0.5)


def test_jitter_layover_gap_restart_and_off_shape_fixes() -> None:
    xy = [(100.0, 2.0), (400.0, 1.0), (380.0, 3.0), (380.0, 3.0), (900.0, 900.0), (700.0, 2.0),
          (2900.0, 3.0), (50.0, 19.0), (300.0, 1.0), (600.0, 2.0)]  # fmt: skip
    t = [0.0, 30.0, 60.0, 90.0, 120.0, 150.0, 900.0, 1800.0, 2700.0, 2760.0]
    sel = _match(OUT_AND_BACK, xy, t)
    np.testing.assert_allclose(sel.dist_m[:4], [100.0, 400.0, 380.0, 380.0], atol=0.5)
    assert np.isnan(sel.dist_m[4]) and np.isnan(sel.offset_m[4])  # 900 m away: off shape
    # On to the inbound end after a gap, then a restart of the shape from its start.
    np.testing.assert_allclose(sel.dist_m[5:], [700.0, 2900.0, 5970.0, 300.0, 600.0], atol=0.5)
    assert sel.reacquired.tolist() == [False] * 8 + [True, False]  # the restart only


def test_unknown_times_and_separate_trajectories() -> None:
    xy = [(100.0, 2.0), (2000.0, 18.0), (100.0, 18.0), (200.0, 1.0)]
    sel = _match(OUT_AND_BACK, xy, [np.nan] * 4, starts=[0, 2])
    assert np.isfinite(sel.dist_m).all()
    np.testing.assert_allclose(sel.dist_m[:2], [100.0, 2000.0], atol=0.5)
    # A new trajectory starts from scratch: its fixes choose the start of the shape.
    np.testing.assert_allclose(sel.dist_m[2:], [100.0, 200.0], atol=0.5)


def test_headings_from_bearing() -> None:
    hx, hy = compute_headings(np.array([90.0, 0.0, 225.0, np.nan, 400.0, -5.0]))
    np.testing.assert_allclose(hx[:3], [1.0, 0.0, -np.sqrt(0.5)], atol=1e-12)
    np.testing.assert_allclose(hy[:3], [0.0, 1.0, -np.sqrt(0.5)], atol=1e-12)
    assert np.isnan(hx[3:]).all() and np.isnan(hy[3:]).all()


def test_along_speed_skips_unusable_fixes_restarts_and_short_gaps() -> None:
    dist = np.array([0.0, 100.0, 100.0, 400.0, 390.0, 50.0, 80.0, 10.0, 60.0, 110.0])
    t = np.array([0.0, 10.0, 10.0, 40.0, 42.0, 0.0, 15.0, 60.0, 70.0, 80.0])
    base = np.array([True, True, False, True, True, True, True, True, True, True])
    restart = np.array([False] * 7 + [True, False, False])
    traj = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    speed = compute_along_speed(dist, t, base, restart, traj, min_dt_s=10.0)
    # Row 4 is 2 s after row 3: compared with row 1 instead (32 s earlier). Row 8 is only
    # 10 s after the restart (row 7); row 9 is compared with it, not with row 6.
    expected = [np.nan, 10.0, np.nan, 10.0, 290.0 / 32.0, np.nan, 2.0, np.nan, 5.0, 5.0]
    np.testing.assert_allclose(speed, expected)
    none = compute_along_speed(dist, t, np.zeros(10, bool), restart, traj)
    assert np.isnan(none).all()


def test_dwell_needs_a_still_run_near_a_stop() -> None:
    stops = build_stop_index(np.array([0, 0, -1]), np.array([500.0, 1500.0, 9.0]), 2)
    dist = np.array([0.0, 495.0, 500.0, 503.0, 900.0, 900.0, 905.0, 1490.0, 1600.0])
    t = np.array([0.0, 60.0, 80.0, 100.0, 200.0, 260.0, 320.0, 400.0, 410.0])
    usable = np.ones(9, dtype=bool)
    traj = np.zeros(9, dtype=np.int64)
    shape = np.array([0] * 8 + [1])
    dwell, known = detect_dwells(dist, t, usable, traj, shape, stops, DwellConfig())
    assert dwell.tolist() == [False, True, True, True, False, False, False, False, False]
    assert known.tolist() == [True] * 8 + [False]  # shape 1 has no stop positions
    np.testing.assert_allclose(stops.distance_to_stop(np.array([0, 0]), np.array([0.0, 1200])),
                               [500.0, 300.0])  # fmt: skip


def test_scheduled_time_by_distance() -> None:
    index = build_schedule_index(
        np.array(["a", "a", "a", "a", "b", "b"], dtype=object),
        np.array([0.0, 1000.0, 1500.0, 2000.0, 0.0, np.nan]),
        np.array([0.0, 100.0, np.nan, 300.0, 50.0, 60.0]),
        np.array([0.0, 120.0, np.nan, 300.0, 50.0, 60.0]),
    )
    trip = np.array([0, 0, 0, 0, 0, 1, -1, 0])
    dist = np.array([-10.0, 500.0, 1000.0, 1500.0, 2500.0, 10.0, 10.0, np.nan])
    got = compute_scheduled_s(index, trip, dist)
    np.testing.assert_allclose(got, [0.0, 50.0, 120.0, 210.0, 300.0, 50.0, np.nan, np.nan])


def test_day_origins_follow_daylight_saving() -> None:
    origins = compute_day_origins(
        np.array(["2017-03-11", "2017-03-12", "2017-03-16", None], dtype=object), "America/Chicago"
    )
    expected = [pd.Timestamp(f"{s}", tz="UTC").timestamp() for s in
                ("2017-03-11 06:00", "2017-03-12 05:00", "2017-03-16 05:00")]  # fmt: skip
    np.testing.assert_allclose(origins[:3], expected)
    assert np.isnan(origins[3])


def test_service_date_of_a_trip_past_midnight() -> None:
    zone = "America/Chicago"
    first = pd.Timestamp("2017-03-16 00:35", tz=zone).timestamp()  # scheduled 24:30 on 03-15
    dates = choose_service_dates(
        np.array([first, first, first, np.nan]),
        np.array([None, "2017-03-16", None, None], dtype=object),
        np.array([first, first, np.nan, np.nan]),
        np.array([24.5 * 3600, 24.5 * 3600, np.nan, np.nan]),
        zone,
    )
    assert dates.tolist() == ["2017-03-15", "2017-03-16", "2017-03-16", None]
    utc = choose_service_dates(np.array([first]), np.array([None], dtype=object),
                               np.array([np.nan]), np.array([np.nan]), None)  # fmt: skip
    assert utc.tolist() == ["2017-03-16"]  # 05:35 UTC


def test_window_config_is_used() -> None:
    # 25 m backwards is jitter inside back_m=30, but outside the window when back_m=10.
    cands = find_candidates(_geometry(OUT_AND_BACK), np.array([1000.0, 975.0]),
                            np.array([2.0, 2.0]), np.zeros(2, dtype=np.int64))  # fmt: skip
    pts = TrajectoryPoints(np.array([0.0, 30.0]), np.full(2, np.nan), np.full(2, np.nan),
                           np.array([0]), np.array([2]))  # fmt: skip
    loose = select_candidates(cands, pts, WindowConfig())
    strict = select_candidates(cands, pts, WindowConfig(back_m=10.0))
    assert loose.reacquired.tolist() == [False, False]
    assert strict.reacquired.tolist() == [False, True]
    np.testing.assert_allclose(loose.dist_m, strict.dist_m)
    np.testing.assert_allclose(loose.dist_m, [1000.0, 975.0], atol=1e-9)
