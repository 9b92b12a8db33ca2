"""The day's timetable recovered from TripUpdates: times, distances, service day, bad rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from transitnet.gtfs.artefacts import StaticArtefacts, load_or_build_artefacts
from transitnet.gtfs.realtime_timetable import (
    STOP_TIME_COLUMNS,
    build_stop_times_from_trip_updates,
    select_trip_shapes,
    strip_suffix,
)
from transitnet.gtfs.shapes import make_shape_table
from transitnet.realtime.trip_updates import STOP_EVENT_COLUMNS, read_trip_updates

V80 = "-20190613111133_v80.31"
V82 = "-20190719095551_v82.14"
TZ = "Pacific/Auckland"  # NZST = UTC+12 in August: service-day origin = local midnight
T0 = pd.Timestamp("2019-08-13 05:00", tz="UTC")  # 17:00 NZST: 61,200 s into the service day
SH = "SH" + V80


def tiny_artefacts() -> StaticArtefacts:
    """A 6 km shape: pattern P1 visits A..D every km from 1 km; P2 visits A, D only;
    pattern P3 on a loop shape visits L, M, L."""
    shapes = make_shape_table(
        [SH, "LOOP"], [np.array([0.0, 6000.0])] * 2, [np.array([0.0, 0.0])] * 2, "EPSG:32760"
    )
    rows = [(SH, "P1", i, i + 1, s, 1000.0 * (i + 1)) for i, s in enumerate("ABCD")]
    rows += [(SH, "P2", 0, 1, "A", 1000.0), (SH, "P2", 1, 2, "D", 4000.0)]
    rows += [
        ("LOOP", "P3", i, i + 1, s, d)
        for i, (s, d) in enumerate(zip("LML", (0, 2e3, 4e3), strict=True))
    ]
    stop_dist = pd.DataFrame(
        rows, columns=["shape_id", "pattern_id", "stop_index", "stop_sequence", "stop_id", "dist_m"]
    )
    stop_dist["stop_id"] = stop_dist["stop_id"] + V80
    trips = pd.DataFrame({"trip_id": ["ST" + V80], "shape_id": [SH], "pattern_id": ["P1"]})
    empty = pd.DataFrame()
    return StaticArtefacts("v80", shapes, trips, stop_dist, None, empty, empty)


def events(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Stop events; ``arr``/``dep`` are (seconds after T0, delay) pairs, ids get the v82 suffix."""
    out = []
    for r in rows:
        arr, dep = r.get("arr", (None, None)), r.get("dep", (None, None))
        out.append(
            {
                "trip_id": r["trip"] + V82,
                "stop_id": r["stop"] + V82,
                "stop_sequence": r["seq"],
                "start_date": r.get("start_date"),
                "start_time": r.get("start_time", "17:00:00"),
                "arrival_time": T0 + pd.Timedelta(seconds=arr[0]) if arr[0] is not None else None,
                "arrival_delay_s": arr[1],
                "departure_time": T0 + pd.Timedelta(seconds=dep[0]) if dep[0] is not None else None,
                "departure_delay_s": dep[1],
            }
        )
    frame = pd.DataFrame(out).reindex(columns=list(STOP_EVENT_COLUMNS))
    for col in ("arrival_time", "departure_time"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    for col in ("stop_sequence", "arrival_delay_s", "departure_delay_s"):
        frame[col] = frame[col].astype("Int64")
    return frame


def shapes_of(*trips: str, shape: str = SH) -> pd.DataFrame:
    return pd.DataFrame({"trip_id": [t + V82 for t in trips], "shape_id": shape})


def build(rows: list[dict[str, Any]], trip_shapes: pd.DataFrame) -> pd.DataFrame:
    return build_stop_times_from_trip_updates(events(rows), tiny_artefacts(), trip_shapes, TZ)


def test_scheduled_times_are_time_minus_delay_on_the_shape() -> None:
    rows = [
        {"trip": "T1", "stop": "A", "seq": 1, "arr": (120, 120)},  # arrival only
        {"trip": "T1", "stop": "A", "seq": 1, "arr": (120, 120)},  # repeated in a later snapshot
        {"trip": "T1", "stop": "B", "seq": 2, "dep": (200, -100)},  # departure only
        {"trip": "T1", "stop": "C", "seq": 3, "arr": (600, 60), "dep": (660, 30)},
    ]
    st = build(rows, shapes_of("T1", "T1"))
    assert tuple(st.columns) == STOP_TIME_COLUMNS
    assert st["trip_id"].tolist() == ["T1" + V82] * 3
    assert st["stop_id"].tolist() == [s + V82 for s in "ABC"]
    assert st["stop_index"].tolist() == [0, 1, 2] and st["stop_sequence"].tolist() == [1, 2, 3]
    np.testing.assert_allclose(st["arrival_s"], 61200.0 + np.array([0.0, 300.0, 540.0]))
    np.testing.assert_allclose(st["departure_s"], 61200.0 + np.array([0.0, 300.0, 630.0]))
    np.testing.assert_allclose(st["dist_m"], [1000.0, 2000.0, 3000.0])  # pattern P1, not P2
    assert st.attrs["dropped"] == dict.fromkeys(st.attrs["dropped"], 0)
    assert str(st["stop_sequence"].dtype) == "Int64" and st["arrival_s"].dtype == np.float64


def test_service_day_from_start_time_and_start_date() -> None:
    after_midnight = 7 * 3600 + 600  # 00:10 NZST on the 14th
    rows = [
        {
            "trip": "LATE",
            "stop": "A",
            "seq": 1,
            "arr": (after_midnight, 0),
            "start_time": "23:50:00",
        },
        {"trip": "LATE", "stop": "B", "seq": 2, "arr": (after_midnight + 60, 0)},
        {
            "trip": "NEXT",
            "stop": "A",
            "seq": 1,
            "arr": (after_midnight, 0),
            "start_time": "00:05:00",
        },
        {"trip": "NEXT", "stop": "B", "seq": 2, "arr": (after_midnight + 60, 0)},
        {"trip": "DATED", "stop": "A", "seq": 1, "arr": (0, 0), "start_date": "20190812"},
        {"trip": "DATED", "stop": "B", "seq": 2, "arr": (60, 0), "start_date": "20190812"},
    ]
    st = build(rows, shapes_of("LATE", "NEXT", "DATED")).set_index(["trip_id", "stop_sequence"])
    assert st.loc[("LATE" + V82, 1), "arrival_s"] == 86400.0 + 600.0  # yesterday's service day
    assert st.loc[("NEXT" + V82, 1), "arrival_s"] == 600.0
    assert st.loc[("DATED" + V82, 2), "arrival_s"] == 86400.0 + 61200.0 + 60.0


def test_bad_rows_are_dropped_and_counted() -> None:
    rows = [
        {"trip": "T1", "stop": "A", "seq": 1, "arr": (0, 0)},
        {"trip": "T1", "stop": "B", "seq": 2, "arr": (100, None)},  # no delay
        {"trip": "T1", "stop": "C", "seq": 3, "arr": (200, 0)},
        {"trip": "T1", "stop": "C", "seq": 3, "arr": (200, -300)},  # disagrees by 300 s
        {"trip": "T1", "stop": "X", "seq": 4, "arr": (300, 0)},  # not on the shape
        {"trip": "T1", "stop": "D", "seq": 5, "arr": (400, 0), "dep": (380, 0)},  # leaves early
        {"trip": "T2", "stop": "A", "seq": 1, "arr": (0, 0)},
        {"trip": "T2", "stop": "B", "seq": 2, "arr": (500, 0)},
        {"trip": "T2", "stop": "C", "seq": 3, "arr": (400, 0)},  # earlier than B: time goes back
        {"trip": "T2", "stop": "D", "seq": 4, "arr": (600, 0)},
        {"trip": "T3", "stop": "A", "seq": 1, "arr": (0, 0)},
        {"trip": "T3", "stop": "C", "seq": 2, "arr": (100, 0)},
        {"trip": "T3", "stop": "B", "seq": 3, "arr": (200, 0)},  # back along the shape
        {"trip": "T4", "stop": "A", "seq": 1, "arr": (0, 0)},  # trip without a shape
    ]
    st = build(rows, shapes_of("T1", "T2", "T3"))
    assert st.attrs["dropped"] == {
        "no_delay": 1,
        "inconsistent": 1,
        "departs_before_arrival": 1,
        "no_shape": 1,
        "stop_not_on_shape": 1,
        "non_monotone": 2,
    }
    kept = st.groupby("trip_id")["stop_id"].agg(lambda s: "".join(strip_suffix(s)))
    assert kept.to_dict() == {"T1" + V82: "A", "T2" + V82: "ABD", "T3" + V82: "AC"}


def test_loop_stop_takes_the_nearest_sequence() -> None:
    rows = [
        {"trip": "L1", "stop": s, "seq": q, "arr": (60 * q, 0)}
        for s, q in zip("LML", (1, 2, 3), strict=True)
    ]
    st = build(rows, shapes_of("L1", shape="LOOP"))
    np.testing.assert_allclose(st["dist_m"], [0.0, 2000.0, 4000.0])


def test_trip_shapes_take_the_most_frequent_shape() -> None:
    pairs = pd.DataFrame(
        {"trip_id": ["a", "a", "a", "b", "c"], "shape_id": ["S2", "S1", "S2", None, "S1"]}
    )
    assert select_trip_shapes(pairs).values.tolist() == [["a", "S2"], ["c", "S1"]]


def test_empty_events_and_missing_columns() -> None:
    st = build([], shapes_of("T1"))
    assert st.empty and tuple(st.columns) == STOP_TIME_COLUMNS
    with pytest.raises(ValueError, match="arrival_delay_s"):
        build_stop_times_from_trip_updates(
            events([]).drop(columns="arrival_delay_s"), tiny_artefacts(), shapes_of("T1"), TZ
        )
    with pytest.raises(ValueError, match="shape_id"):
        build_stop_times_from_trip_updates(
            events([]), tiny_artefacts(), pd.DataFrame({"trip_id": []}), TZ
        )


@pytest.mark.real_data
def test_real_auckland_timetable_is_monotone_and_in_the_service_day(
    shared_data: Path, tmp_path: Path
) -> None:
    day = shared_data / "auckland-2019-08-13"
    art = load_or_build_artefacts(str(day / "static_subset_2019-06"), tmp_path)
    ev = read_trip_updates(day / "trip_updates.tar.xz", limit=120).events
    # the June subset has one shape per route: place the day's trips on their route's shape
    route_shape = art.trips.assign(route=strip_suffix(art.trips["route_id"]))
    route_shape = route_shape.drop_duplicates("route")[["route", "shape_id"]]
    trips = ev.drop_duplicates("trip_id").assign(route=lambda d: strip_suffix(d["route_id"]))
    pairs = trips.merge(route_shape, on="route")[["trip_id", "shape_id"]]
    st = build_stop_times_from_trip_updates(ev, art, pairs, "Pacific/Auckland")
    sizes = st.groupby("trip_id").size()
    assert (sizes >= 5).sum() >= 10, sizes.describe()
    assert st.attrs["dropped"]["no_shape"] > 0  # trips of routes the subset lacks: counted
    for _, trip in st.groupby("trip_id"):
        assert trip["stop_sequence"].is_monotonic_increasing
        assert trip["dist_m"].is_monotonic_increasing and trip["arrival_s"].is_monotonic_increasing
        assert (trip["arrival_s"].to_numpy()[1:] >= trip["departure_s"].to_numpy()[:-1]).all()
    assert (st["departure_s"] >= st["arrival_s"]).all()
    assert st["arrival_s"].between(0, 30 * 3600).all()  # GTFS service days run past 24:00
    assert st["dist_m"].notna().all() and (st["dist_m"] >= 0).all()
