import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.datasets.test_windows import _matched
from tests.gtfs.static_helpers import tiny_feed
from transitnet.baselines import (
    HistoricalMean,
    ScheduleDelay,
    build_timetable,
    compute_baselines,
    predict_constant_speed,
    predict_persistence,
)
from transitnet.datasets.windows import CONTEXT_FEATURES, WindowConfig, Windows, build_windows
from transitnet.gtfs.artefacts import build_artefacts
from transitnet.gtfs.feeds import read_static_feed
from transitnet.gtfs.match import match_positions
from transitnet.metrics import compute_mae


def _windows(speed: float, line: str = "L1", n: int = 30) -> Windows:
    df = _matched(n, speed=speed)
    df["line_key"] = line
    return build_windows(df, WindowConfig(past_fixes=4, horizons_s=(60, 120)))


def test_persistence_and_constant_speed() -> None:
    w = _windows(8.0)
    assert np.all(predict_persistence(w) == 0)
    pred = predict_constant_speed(w)
    np.testing.assert_allclose(pred[5], [480.0, 960.0], rtol=1e-5)
    # first fix of a trajectory: anchor speed (8 m/s) stands in for the window's speed
    np.testing.assert_allclose(pred[0], [480.0, 960.0], rtol=1e-5)


def test_historical_mean_learns_per_line_and_backs_off() -> None:
    w1, w2 = _windows(5.0, "A"), _windows(10.0, "B")
    train_meta = pd.concat([w1.meta, w2.meta], ignore_index=True)
    train = Windows(
        np.concatenate([w1.past, w2.past]),
        np.concatenate([w1.lengths, w2.lengths]),
        np.concatenate([w1.context, w2.context]),
        np.concatenate([w1.targets, w2.targets]),
        np.concatenate([w1.target_mask, w2.target_mask]),
        train_meta,
        w1.horizons_s,
    )
    model = HistoricalMean(segment_m=1e9, min_count=3).fit(train)
    np.testing.assert_allclose(model(_windows(5.0, "A"))[0], [300.0, 600.0], rtol=1e-5)
    np.testing.assert_allclose(model(_windows(10.0, "B"))[0], [600.0, 1200.0], rtol=1e-5)
    unseen = model(_windows(7.0, "C"))[0]  # no group: the all-lines mean
    np.testing.assert_allclose(unseen, [450.0, 900.0], rtol=1e-5)
    preds = compute_baselines(train, _windows(5.0, "A"))
    assert set(preds) == {"persistence", "constant_speed", "historical_mean"}


# --- schedule_delay ------------------------------------------------------------------

# One trip: stops at 0, 1000, 2000 and 4000 m; 100 s per km, a 60 s dwell at the second.
_STOPS = {"dist_m": [0.0, 1000.0, 2000.0, 4000.0],
          "arrival_s": [28800.0, 28900.0, 29060.0, 29260.0],
          "departure_s": [28800.0, 28960.0, 29060.0, 29260.0]}  # fmt: skip


def _stop_times(trip: str = "T", **changes: list[float]) -> pd.DataFrame:
    cols = {**_STOPS, **changes}
    n = len(cols["dist_m"])
    return pd.DataFrame({"trip_id": trip, "stop_sequence": np.arange(1, n + 1),
                         "stop_index": np.arange(n), "stop_id": [f"s{i}" for i in range(n)],
                         **cols})  # fmt: skip


def _anchors(
    dist: list[float],
    trips: list[str | None],
    shapes: list[str],
    horizons: tuple[int, ...] = (60, 120, 300, 600),
) -> Windows:
    """Windows with only the anchors' meta filled (what the schedule baseline reads)."""
    n, h = len(dist), len(horizons)
    t0 = pd.Timestamp("2024-05-06 13:00", tz="UTC")
    times = [t0 + pd.Timedelta(minutes=7 * i) for i in range(n)]
    meta = pd.DataFrame({"trip_id": trips, "shape_id": shapes, "dist_along_m": dist,
                         "line_key": "L", "local_hour": 8, "anchor_time": times,
                         "speed_along_mps": 0.0})  # fmt: skip
    return Windows(np.zeros((n, 1, 1), np.float32), np.ones(n, np.int64),
                   np.zeros((n, len(CONTEXT_FEATURES)), np.float32), np.zeros((n, h), np.float32),
                   np.ones((n, h), bool), meta, tuple(horizons))  # fmt: skip


def _schedule(*tables: pd.DataFrame, shapes: dict[str, str] | None = None) -> ScheduleDelay:
    st = pd.concat(tables, ignore_index=True)
    trip_shapes = pd.Series(shapes or dict.fromkeys(st["trip_id"].unique(), "S"), dtype=object)
    return ScheduleDelay(build_timetable(st), trip_shapes)


def test_schedule_delay_keeps_the_delay_and_follows_the_timetable() -> None:
    w = _anchors([500.0, 500.0, 1000.0, 5000.0], ["T"] * 4, ["S"] * 4)
    pred = _schedule(_stop_times())(w)
    # at 500 m the timetable says 28850 s; the current delay cancels, so the vehicle is
    # where the timetable puts it at 28850 + h: dwelling at 1000 m (h=60), 10 s past the
    # dwell (h=120), 90 s into the 200 s run to 4000 m (h=300), at the terminus (h=600)
    np.testing.assert_allclose(pred[0], [500.0, 600.0, 2400.0, 3500.0], rtol=1e-5)
    # anchors 7 min apart (different delays), same place: the same forecast
    np.testing.assert_allclose(pred[1], pred[0])
    # at a stop the schedule counts from its departure
    np.testing.assert_allclose(pred[2], [600.0, 1200.0, 3000.0, 3000.0], rtol=1e-5)
    # past the last stop: nowhere further to go on the timetable, never backwards
    np.testing.assert_allclose(pred[3], 0.0)


def test_schedule_delay_is_nan_where_no_schedule_applies() -> None:
    one_stop = _stop_times("ONE").iloc[:1]
    untimed = _stop_times("UNTIMED", arrival_s=[np.nan] * 4, departure_s=[np.nan] * 4)
    schedule = _schedule(_stop_times(), one_stop, untimed,
                         shapes={"T": "S", "ONE": "S", "UNTIMED": "S"})  # fmt: skip
    trips: list[str | None] = ["T", "UNKNOWN", "T", "ONE", "UNTIMED", None]
    w = _anchors([100.0] * 6, trips, ["S", "S", "OTHER", "S", "S", "S"])
    pred = schedule(w)
    assert np.isfinite(pred[0]).all()
    # unknown trip, matched on another shape, one stop, no times, no trip id
    assert np.isnan(pred[1:]).all()


def test_schedule_delay_prefers_the_static_trip_id_and_interpolates_timepoints() -> None:
    # a stop without a time (between timepoints) is interpolated by distance
    st = _stop_times("T-v2", arrival_s=[28800.0, np.nan, 29060.0, 29260.0],
                     departure_s=[28800.0, np.nan, 29060.0, 29260.0])  # fmt: skip
    w = _anchors([0.0], ["T-v1"], ["S"], horizons=(130,))
    schedule = _schedule(st, shapes={"T-v2": "S"})
    assert np.isnan(schedule(w)).all()  # the realtime id is not in the timetable
    w.meta["static_trip_id"] = ["T-v2"]
    np.testing.assert_allclose(schedule(w)[0], [1000.0], rtol=1e-5)  # 2000 m in 260 s


def test_compute_baselines_adds_schedule_delay_only_with_stop_times() -> None:
    art = build_artefacts(tiny_feed())
    assert art.stop_times is not None
    trip = "t1-20190101000000_v1.0"  # a -> b, 07:00 -> 07:05, along shape E
    length = float(art.stop_times.loc[art.stop_times["trip_id"] == trip, "dist_m"].max())
    test = _anchors([0.0], [trip], ["E"], horizons=(150, 600))
    train = _windows(5.0)
    preds = compute_baselines(train, test, artefacts=art)
    np.testing.assert_allclose(preds["schedule_delay"][0], [length / 2, length], rtol=1e-4)
    assert "schedule_delay" not in compute_baselines(train, test)  # old calls unchanged
    elsewhere = _anchors([0.0], ["not-in-the-feed"], ["E"], horizons=(150, 600))
    assert "schedule_delay" not in compute_baselines(train, elsewhere, artefacts=art)
    no_times = replace(art, stop_times=None)
    assert "schedule_delay" not in compute_baselines(train, test, artefacts=no_times)
    assert ScheduleDelay.from_artefacts(no_times) is None


def _write_austin_2016_feed(data: Path, folder: Path, positions: pd.DataFrame) -> None:
    """A static feed for Austin 2016-11: the 2017 feed's shapes, routes and agency, the
    2016 trips (their realtime ids) on the 2017 shape of their route and headsign, and
    their scheduled times from CapMetrics' schedule extract (all recorded data)."""
    static = data / "gtfs_2017-01"
    old = pd.read_csv(static / "trips.txt", dtype=str)
    modal = old.groupby(["route_id", "trip_headsign"])["shape_id"].agg(lambda s: s.mode()[0])
    trips = positions[["trip_id", "route_id", "trip_headsign"]].drop_duplicates("trip_id")
    trips = trips.join(modal, on=["route_id", "trip_headsign"]).dropna(subset=["shape_id"])
    extract = data / "schedule_extracts" / "schedule_20160821_20170121.csv.gz"
    st = pd.read_csv(extract, dtype=str, usecols=["trip_id", "arrival_time", "stop_id"])
    st = st[st["trip_id"].isin(trips["trip_id"])]
    st = st.assign(departure_time=st["arrival_time"],
                   stop_sequence=st.groupby("trip_id").cumcount() + 1)  # fmt: skip
    shapes = pd.read_csv(static / "shapes.txt", dtype={"shape_id": str})
    stops = data / "stops_extracts" / "stops_20160821_20170121.csv.gz"
    tables = {
        "trips": trips[trips["trip_id"].isin(st["trip_id"])].assign(service_id="X"),
        "stop_times": st,
        "shapes": shapes[shapes["shape_id"].isin(trips["shape_id"])],
        "stops": pd.read_csv(stops, dtype=str),
        "calendar": pd.DataFrame({"service_id": ["X"], "start_date": ["20160821"],
                                  "end_date": ["20170121"],
                                  **{d: [1] for d in ("monday", "tuesday", "wednesday",
                                     "thursday", "friday", "saturday", "sunday")}}),
    }  # fmt: skip
    folder.mkdir()
    for name, table in tables.items():
        table.to_csv(folder / f"{name}.txt", index=False)
    for name in ("agency.txt", "routes.txt"):
        shutil.copy(static / name, folder / name)


@pytest.mark.real_data
@pytest.mark.slow
def test_real_austin_schedule_delay_is_available_and_sane(
    shared_data: Path, tmp_path: Path
) -> None:
    data = shared_data / "austin-capmetro"
    ids = {c: str for c in ("vehicle_id", "route_id", "trip_id", "trip_headsign")}
    raw = pd.read_csv(data / "vehicle_positions" / "2016-11-25.csv", dtype=ids)  # type: ignore[arg-type]
    _write_austin_2016_feed(data, tmp_path / "gtfs", raw)
    art = build_artefacts(read_static_feed(tmp_path / "gtfs"))
    rows = raw.drop(columns=["timestamp", "speed"]).assign(
        vehicle_timestamp=pd.to_datetime(raw["timestamp"], utc=True), feed_id="austin"
    )
    w = build_windows(match_positions(rows, art), WindowConfig(timezone="America/Chicago"))
    w = w.subset(w.target_mask.any(axis=1))
    hour = w.meta["anchor_time"].dt.tz_convert("America/Chicago").dt.hour.to_numpy()
    train, test = w.subset(hour < 13), w.subset(hour >= 13)  # train on the morning
    preds = compute_baselines(train, test, artefacts=art)
    sched = preds["schedule_delay"]
    available = np.isfinite(sched).all(axis=1)
    assert len(test) > 10_000 and available.mean() > 0.95  # measured: 100 % of 17,131
    assert (sched[available] >= 0).all()
    assert (np.diff(sched[available], axis=1) >= -1e-3).all()  # further at longer horizons
    mask = test.target_mask & available[:, None]
    mae = {k: compute_mae(p, test.targets, mask) for k, p in preds.items()}
    at_5min = test.horizons_s.index(300)
    # measured MAE at 5 min: schedule_delay 430 m, constant speed 855 m, historical mean 687 m
    assert 0.25 < mae["schedule_delay"][at_5min] / mae["constant_speed"][at_5min] < 1.5
    assert (mae["schedule_delay"] < mae["persistence"]).all()


def test_summarise_scores_a_partial_baseline_where_it_exists() -> None:
    from transitnet.evaluate import Evaluation, summarise

    w = _anchors([0.0] * 4, ["T"] * 4, ["S"] * 4, horizons=(60, 120))
    w.targets[:] = [[100, 200], [100, 200], [100, 200], [100, 200]]
    w.target_mask[3, 1] = False
    model = np.repeat(np.array([[90.0, 180.0], [110, 220], [100, 200], [50, 50]])[..., None], 3, 2)
    sched = np.array([[100.0, 100.0], [np.nan, np.nan], [np.nan, np.nan], [0.0, 0.0]])
    out = summarise(Evaluation(w, model, {"schedule_delay": sched}, (0.1, 0.5, 0.9)))
    block = out["schedule_delay"]
    assert block["n"] == {"60": 2, "120": 1}  # only the windows with a schedule count
    assert block["mae_m"] == {"60": 50.0, "120": 100.0}
    assert block["available_share"] == 0.5
    assert block["model_mae_m_same_windows"] == {"60": 30.0, "120": 20.0}
    assert out["model"]["available_share"] == 1.0 and out["model"]["n"] == {"60": 4, "120": 3}
    assert "model_mae_m_same_windows" not in out["model"]
