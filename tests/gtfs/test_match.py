from __future__ import annotations

import itertools
from dataclasses import replace

import gtfs_kit as gk
import numpy as np
import pandas as pd
import pytest
from pyproj import Transformer

from transitnet.gtfs.artefacts import StaticArtefacts, build_artefacts
from transitnet.gtfs.match import MATCH_COLUMNS, MATCH_STATUSES, MatchConfig, match_positions

ZONE = "America/Chicago"
CRS = "EPSG:32614"
_TO_LONLAT = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
_FROM_LONLAT = Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
X0, Y0 = _FROM_LONLAT.transform(-97.74, 30.27)

#: Out-and-back: 3 km east, 20 m across, 3 km back west (metres from the origin).
OUT_AND_BACK = [(0.0, 0.0), (3000.0, 0.0), (3000.0, 20.0), (0.0, 20.0)]
#: A 1 km square loop from and back to (0, -500).
LOOP = [(0.0, -500.0), (1000.0, -500.0), (1000.0, -1500.0), (0.0, -1500.0), (0.0, -500.0)]
#: Stops on the out-and-back: (id, x, y, distance along the shape).
STOPS = [("s0", 0.0, 0.0, 0.0), ("s1", 1500.0, 0.0, 1500.0), ("s2", 3000.0, 0.0, 3000.0),
         ("s3", 1500.0, 20.0, 4520.0), ("s4", 0.0, 20.0, 6020.0)]  # fmt: skip
SPEED = 5.0  # m/s, both the schedule and the vehicle


def lonlat(xy: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([p[0] for p in xy]) + X0
    y = np.array([p[1] for p in xy]) + Y0
    lon, lat = _TO_LONLAT.transform(x, y)
    return np.asarray(lon), np.asarray(lat)


def on_shape(
    shape: list[tuple[float, float]], dist: float, side: float = 0.0
) -> tuple[float, float]:
    """The point ``dist`` metres along ``shape``, moved ``side`` metres to its left."""
    for (ax, ay), (bx, by) in itertools.pairwise(shape):
        length = float(np.hypot(bx - ax, by - ay))
        if dist <= length:
            ux, uy = (bx - ax) / length, (by - ay) / length
            return ax + ux * dist - uy * side, ay + uy * dist + ux * side
        dist -= length
    return shape[-1]


def _hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def synthetic_feed() -> gk.Feed:
    """Routes OB (out-and-back, trips ob1 at 08:00 and late at 24:10) and LP (loop)."""
    shape_rows = []
    for sid, pts in (("OB", OUT_AND_BACK), ("LP", LOOP)):
        lon, lat = lonlat(pts)
        shape_rows += [
            (sid, la, lo, i + 1) for i, (lo, la) in enumerate(zip(lon, lat, strict=True))
        ]
    lon, lat = lonlat([(x, y) for _, x, y, _ in STOPS] + [LOOP[0], LOOP[2]])
    stop_ids = [s[0] for s in STOPS] + ["l0", "l2"]
    times = []
    for trip, start in (("ob1", 8 * 3600.0), ("late", 24 * 3600.0 + 600.0)):
        times += [
            (trip, i + 1, sid, _hms(start + d / SPEED)) for i, (sid, *_, d) in enumerate(STOPS)
        ]
    times += [
        ("lp1", 1, "l0", "09:00:00"),
        ("lp1", 2, "l2", "09:10:00"),
        ("lp1", 3, "l0", "09:20:00"),
    ]
    stop_times = pd.DataFrame(
        times, columns=["trip_id", "stop_sequence", "stop_id", "arrival_time"]
    )
    return gk.Feed(
        dist_units="m",
        agency=pd.DataFrame({"agency_name": ["A"], "agency_url": ["u"], "agency_timezone": [ZONE]}),
        routes=pd.DataFrame({"route_id": ["OB", "LP"], "route_short_name": ["1", "2"],
                             "route_type": [3, 3]}),
        trips=pd.DataFrame({"route_id": ["OB", "OB", "LP"], "service_id": ["S"] * 3,
                            "trip_id": ["ob1", "late", "lp1"], "shape_id": ["OB", "OB", "LP"]}),
        stops=pd.DataFrame({"stop_id": stop_ids, "stop_name": stop_ids, "stop_lat": lat,
                            "stop_lon": lon}),
        stop_times=stop_times.assign(departure_time=stop_times["arrival_time"]),
        shapes=pd.DataFrame(shape_rows, columns=["shape_id", "shape_pt_lat", "shape_pt_lon",
                                                 "shape_pt_sequence"]),
    )  # fmt: skip


@pytest.fixture(scope="module")
def art() -> StaticArtefacts:
    return build_artefacts(synthetic_feed())


CONFIG = MatchConfig(timezone=ZONE)


def run_ob1(late_s: float = 60.0, dwell_s: float = 90.0) -> tuple[pd.DataFrame, np.ndarray]:
    """Fixes every 30 s of a vehicle on ob1: ``late_s`` late, dwelling ``dwell_s`` at s1.

    Returns the positions and each fix's true distance along the shape.
    """
    start = pd.Timestamp("2017-03-16 08:00", tz=ZONE) + pd.Timedelta(seconds=late_s)
    t = np.arange(0.0, 6020.0 / SPEED + dwell_s, 30.0)
    moving = np.clip(t - np.clip(t - 1500.0 / SPEED, 0.0, dwell_s), 0.0, None)
    dist = np.minimum(moving * SPEED, 6020.0)
    side = np.where(np.arange(len(t)) % 2, 3.0, -3.0)  # GPS noise across the street
    xy = [on_shape(OUT_AND_BACK, d, s) for d, s in zip(dist, side, strict=True)]
    lon, lat = lonlat(xy)
    stamps = (start + pd.to_timedelta(t, unit="s")).tz_convert("UTC")
    frame = pd.DataFrame({"vehicle_id": "v1", "trip_id": "ob1", "route_id": "OB", "latitude": lat,
                          "longitude": lon, "vehicle_timestamp": stamps})  # fmt: skip
    return frame, dist


def test_distance_offset_speed_dwell_and_delay(art: StaticArtefacts) -> None:
    rows, true_dist = run_ob1(late_s=60.0, dwell_s=90.0)
    out = match_positions(rows, art, config=CONFIG)
    assert set(MATCH_COLUMNS) <= set(out.columns)
    assert (out["match_status"] == "ok").all()
    corner = np.abs(true_dist - 3010.0) <= 10.0  # sideways noise at a corner moves along
    assert corner.sum() == 1
    np.testing.assert_allclose(out["dist_along_m"][~corner], true_dist[~corner], atol=0.01)
    np.testing.assert_allclose(out["offset_m"][~corner], 3.0, atol=0.01)
    np.testing.assert_allclose(out["progress"], out["dist_along_m"] / 6020.0, atol=1e-5)
    local = rows["vehicle_timestamp"].dt.tz_convert(ZONE)
    observed = (local - pd.Timestamp("2017-03-16", tz=ZONE)).dt.total_seconds().to_numpy()
    np.testing.assert_allclose(out["scheduled_s"], 8 * 3600 + true_dist / SPEED, atol=1.0)
    assert art.timezone == ZONE  # from agency.txt
    np.testing.assert_allclose(out["delay_s"], observed - 8 * 3600 - true_dist / SPEED, atol=1.0)
    assert out["delay_s"].iloc[0] == pytest.approx(60.0, abs=1.0)
    assert out["delay_s"].iloc[-1] == pytest.approx(150.0, abs=1.0)
    still = np.r_[False, np.diff(true_dist) == 0]
    assert out["is_dwell"].to_numpy(dtype=bool)[still].all()
    assert out["is_dwell"].sum() == still.sum() + 1  # the arrival fix starts the dwell
    speed = out["speed_along_mps"].to_numpy()
    assert np.isnan(speed[0])
    moving = np.r_[False, ~still[1:] & (np.diff(true_dist) > 149)]
    np.testing.assert_allclose(speed[moving], SPEED, atol=0.11)  # 0.1: the corner fix
    np.testing.assert_allclose(speed[still], 0.0, atol=1e-9)
    assert (out["service_date"] == "2017-03-16").all()
    assert (out["trajectory_id"] == "v1/ob1/2017-03-16").all()
    assert not out["is_stale"].any() and not out["is_reacquired"].any()


def test_trip_past_midnight_belongs_to_the_previous_service_day(art: StaticArtefacts) -> None:
    rows, _ = run_ob1(late_s=0.0, dwell_s=0.0)
    rows = rows.assign(trip_id="late")
    shift = pd.Timedelta(hours=16, minutes=10)  # 08:00 → 24:10 on the same service day
    rows["vehicle_timestamp"] = rows["vehicle_timestamp"] + shift
    out = match_positions(rows, art, config=CONFIG)
    assert (out["service_date"] == "2017-03-16").all()
    np.testing.assert_allclose(out["delay_s"], 0.0, atol=1.0)
    assert (out["scheduled_s"] >= 24 * 3600).all()
    # Without a time zone, schedules still give scheduled_s but no delay is guessed.
    bare = match_positions(rows, replace(art, timezone=None), config=MatchConfig())
    assert bare["delay_s"].isna().all() and bare["scheduled_s"].notna().all()
    assert (bare["service_date"] == "2017-03-17").all()  # the UTC date of the first fix


def test_bad_rows_are_flagged_not_dropped(art: StaticArtefacts) -> None:
    rows, _ = run_ob1()
    rows = rows.iloc[:12].copy()
    rows.loc[3, ["latitude", "longitude"]] = [0.0, 0.0]
    rows.loc[4, ["latitude", "longitude"]] = [np.nan, np.nan]
    rows.loc[5, ["latitude", "longitude"]] = [95.0, -97.7]
    rows.loc[6, ["latitude", "longitude"]] = [30.27, 200.0]
    far_lon, far_lat = lonlat([(1000.0, 600.0)])
    rows.loc[7, ["latitude", "longitude"]] = [far_lat[0], far_lon[0]]
    extra = rows.iloc[[8, 8, 9, 10]].copy()
    extra["trip_id"] = ["ob1", "nope", None, None]
    extra["route_id"] = ["OB", "XX", "LP", None]
    loop_lon, loop_lat = lonlat([(500.0, -497.0)])
    extra.iloc[2, extra.columns.get_indexer(["latitude", "longitude"])] = [loop_lat[0], loop_lon[0]]
    both = pd.concat([rows, extra], ignore_index=True)
    with np.errstate(all="raise"):
        out = match_positions(both, art, config=CONFIG)
    assert len(out) == len(both)
    status = out["match_status"].tolist()
    assert status[3:7] == ["invalid_position"] * 4
    assert status[7] == "off_shape"
    assert out["offset_m"].iloc[7] > 200.0 and np.isfinite(out["dist_along_m"].iloc[7])
    assert status[12:] == ["ok", "trip_not_in_static", "fallback_route", "trip_not_in_static"]
    assert out["is_stale"].tolist().count(True) == 1 and out["is_stale"].iloc[12]
    assert out["dist_along_m"].iloc[3:7].isna().all()
    assert set(status) <= set(MATCH_STATUSES)
    ok = out["match_status"] == "ok"
    assert out.loc[ok, "dist_along_m"].notna().all()
    assert out["speed_along_mps"].iloc[8] > 0  # the window survived the bad rows


def test_loop_and_out_and_back_legs_through_match_positions(art: StaticArtefacts) -> None:
    loop = [(2.0, -503.0), (1.0, -498.0), (500.0, -497.0), (1003.0, -1000.0),
            (500.0, -1502.0), (-3.0, -1000.0), (2.0, -502.0), (1.0, -503.0)]  # fmt: skip
    back = [on_shape(OUT_AND_BACK, d, 9.0) for d in (3500.0, 4500.0, 5500.0)]  # near outbound
    lon, lat = lonlat(loop + back)
    t = pd.Timestamp("2017-03-16 15:00", tz="UTC") + pd.to_timedelta(np.arange(11) * 120, "s")
    rows = pd.DataFrame({"vehicle_id": ["a"] * 8 + ["b"] * 3, "trip_id": ["lp1"] * 8 + ["ob1"] * 3,
                         "route_id": ["LP"] * 8 + ["OB"] * 3, "latitude": lat, "longitude": lon,
                         "vehicle_timestamp": t})  # fmt: skip
    out = match_positions(rows, art, config=CONFIG)
    d = out["dist_along_m"].to_numpy()
    assert d[0] < 5 and d[1] < 5 and d[6] > 3990 and d[7] > 3990
    np.testing.assert_allclose(d[2:6], [500.0, 1500.0, 2500.0, 3500.0], atol=5.0)
    np.testing.assert_allclose(d[8:], [3500.0, 4500.0, 5500.0], atol=1.0)


def test_input_order_and_index_are_kept(art: StaticArtefacts) -> None:
    rows, _ = run_ob1()
    shuffled = rows.sample(frac=1.0, random_state=3)
    shuffled.index = shuffled.index * 10 + 7
    out = match_positions(shuffled, art, config=CONFIG)
    assert out.index.equals(shuffled.index)
    ref = match_positions(rows, art, config=CONFIG)
    expected = ref["dist_along_m"].to_numpy()[(shuffled.index - 7) // 10]
    np.testing.assert_allclose(out["dist_along_m"].to_numpy(), expected)


def test_bad_input_gives_clear_errors_and_empty_input_works(art: StaticArtefacts) -> None:
    rows, _ = run_ob1()
    with pytest.raises(ValueError, match="latitude"):
        match_positions(rows.drop(columns="latitude"), art)
    with pytest.raises(ValueError, match="trip_id or route_id"):
        match_positions(rows.drop(columns=["trip_id", "route_id"]), art)
    naive = rows.assign(vehicle_timestamp=rows["vehicle_timestamp"].dt.tz_localize(None))
    with pytest.raises(ValueError, match="tz-aware"):
        match_positions(naive, art)
    empty = match_positions(rows.iloc[:0], art, config=CONFIG)
    assert empty.empty and set(MATCH_COLUMNS) <= set(empty.columns)
