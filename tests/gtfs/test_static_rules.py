"""Static-dependent reference-validator rules: tiny in-code feeds plus the real static feeds."""

from __future__ import annotations

import hashlib
import math
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gtfs_kit as gk
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from google.transit import gtfs_realtime_pb2 as rt

from transitnet.gtfs.feeds import read_static_feed
from transitnet.gtfs.static_rules import StaticRuleChecker
from transitnet.gtfs.static_rules_geometry import (
    KM_TO_DEG,
    REGION_BUFFER_DEGREES,
    TRIP_BUFFER_DEGREES,
    CoverageBox,
    format_java_clock,
)
from transitnet.realtime.decode import decode_vehicle_positions
from transitnet.realtime.validate import FeedValidator, ValidatedSnapshot
from transitnet.schema import flag_column

NOW_S = 1_700_000_000
LINE_LON = -82.4  # the shape runs north-south along this meridian, 28.0 .. 28.1 N
M_PER_DEG_LAT = 1000.0 / KM_TO_DEG


def tiny_feed(**overrides: pd.DataFrame | None) -> Any:
    """Four trips: T1 (shape, stop_times out of file order), T2, F0 (exact 0), F1 (exact 1)."""
    tables: dict[str, pd.DataFrame | None] = {
        "routes": pd.DataFrame({"route_id": ["R1", "R2"], "route_type": [3, 3]}),
        "trips": pd.DataFrame(
            {
                "route_id": ["R1", "R2", "R1", "R1"],
                "service_id": ["S"] * 4,
                "trip_id": ["T1", "T2", "F0", "F1"],
                "shape_id": ["S1", None, "S1", "S1"],
                "direction_id": pd.array([0, None, 0, 0], dtype="Int32"),
            }
        ),
        "stops": pd.DataFrame(
            {
                "stop_id": ["P1", "ST", "P2"],
                "stop_lat": [28.0, 28.05, 28.1],
                "stop_lon": [LINE_LON] * 3,
                "location_type": pd.array([0, 1, None], dtype="Int32"),
            }
        ),
        "stop_times": pd.DataFrame(
            {
                "trip_id": ["T1", "T1", "F0", "F1"],
                "arrival_time": ["07:30:00", "07:00:00", "06:00:00", "06:00:00"],
                "departure_time": ["07:30:00", "07:00:00", "06:00:00", "06:00:00"],
                "stop_id": ["P2", "P1", "P1", "P1"],
                "stop_sequence": [2, 1, 1, 1],
            }
        ),
        "frequencies": pd.DataFrame(
            {
                "trip_id": ["F0", "F1"],
                "start_time": ["06:00:00", "07:00:00"],
                "end_time": ["22:00:00", "08:00:00"],
                "headway_secs": [600, 600],
                "exact_times": [0, 1],
            }
        ),
        "shapes": pd.DataFrame(
            {
                "shape_id": ["S1"] * 4,
                "shape_pt_lat": [28.0, 28.03, 28.07, 28.1],
                "shape_pt_lon": [LINE_LON] * 4,
                "shape_pt_sequence": [1, 2, 3, 4],
            }
        ),
    }
    tables.update(overrides)
    return gk.Feed(dist_units="km", **{k: v for k, v in tables.items() if v is not None})


def vp(
    vehicle_id: str | None = "v",
    *,
    trip: dict[str, Any] | None = None,
    lat: float = 28.05,
    lon: float = LINE_LON,
    stop_id: str | None = None,
) -> rt.FeedEntity:
    entity = rt.FeedEntity(id=f"e-{vehicle_id}-{lat}-{lon}-{trip}")
    if vehicle_id is not None:
        entity.vehicle.vehicle.id = vehicle_id
    if trip is not None:
        entity.vehicle.trip.SetInParent()
        for key, value in trip.items():
            setattr(entity.vehicle.trip, key, value)
    entity.vehicle.position.latitude, entity.vehicle.position.longitude = lat, lon
    entity.vehicle.timestamp = NOW_S
    if stop_id is not None:
        entity.vehicle.stop_id = stop_id
    return entity


def positions(*entities: rt.FeedEntity) -> pa.Table:
    msg = rt.FeedMessage()
    msg.header.gtfs_realtime_version = "1.0"
    msg.header.timestamp = NOW_S
    msg.entity.extend(entities)
    return decode_vehicle_positions(msg.SerializeToString(), feed_id="t").positions


@pytest.fixture(scope="module")
def checker() -> StaticRuleChecker:
    return StaticRuleChecker(tiny_feed())


def check(checker: StaticRuleChecker, *entities: rt.FeedEntity) -> dict[str, list[bool]]:
    return {rule: values.tolist() for rule, values in checker.check(positions(*entities)).items()}


def east_of_line(metres: float, lat: float = 28.05) -> float:
    """The longitude ``metres`` east of the shape at ``lat`` (spherical, as spatial4j)."""
    return LINE_LON + metres / (M_PER_DEG_LAT * math.cos(math.radians(lat)))


# ------------------------------------------------------------------ indexes and rule sets


def test_rules_depend_on_geometry() -> None:
    assert {"E028", "E029", "E006", "E013", "W005"} <= StaticRuleChecker(tiny_feed()).rules
    ignoring = StaticRuleChecker(tiny_feed(), ignore_shapes=True)
    assert "E029" not in ignoring.rules and "E028" in ignoring.rules
    assert "E029" not in StaticRuleChecker(tiny_feed(shapes=None)).rules


def test_optional_tables_may_be_absent() -> None:
    bare = StaticRuleChecker(tiny_feed(frequencies=None, stop_times=None, shapes=None))
    flags = check(
        bare, vp(trip={"trip_id": "F1", "start_time": "07:05:00"}), vp(lat=40.0, lon=-73.0)
    )
    assert flags["E019"] == [False, False] and flags["E006"] == [False, False]
    assert flags["E023"] == [False, False] and flags["E028"] == [False, True]  # stops' box


def test_missing_required_table_or_column_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"no trips\.txt"):
        StaticRuleChecker(tiny_feed(trips=None))
    with pytest.raises(ValueError, match=r"stops\.txt lacks column"):
        StaticRuleChecker(tiny_feed(stops=pd.DataFrame({"stop_name": ["x"]})))


def test_every_flag_false_for_a_bare_row(checker: StaticRuleChecker) -> None:
    flags = check(checker, vp(None))
    assert set(flags) == checker.rules
    assert not any(any(v) for v in flags.values())


def test_empty_table(checker: StaticRuleChecker) -> None:
    flags = checker.check(positions())
    assert all(len(v) == 0 and v.dtype == np.bool_ for v in flags.values())


# ------------------------------------------------------------------ trip descriptor rules


def test_e003_e016_trip_ids(checker: StaticRuleChecker) -> None:
    flags = check(
        checker,
        vp(trip={"trip_id": "nope"}),
        vp(trip={"trip_id": "nope", "schedule_relationship": 1}),  # ADDED: allowed unknown
        vp(trip={"trip_id": "T1", "schedule_relationship": 1}),  # ADDED over a scheduled trip
        vp(trip={"trip_id": ""}),
        vp(trip={"trip_id": "T1"}),
    )
    assert flags["E003"] == [True, False, False, False, False]
    assert flags["E016"] == [False, False, True, False, False]


def test_e004_e035_routes(checker: StaticRuleChecker) -> None:
    flags = check(
        checker,
        vp(trip={"trip_id": "T1", "route_id": "ZZ"}),
        vp(trip={"trip_id": "T1", "route_id": "R2"}),
        vp(trip={"trip_id": "T1", "route_id": "R1"}),
        vp(trip={"trip_id": "nope", "route_id": "R2"}),
        vp(trip={"route_id": ""}),
    )
    assert flags["E004"] == [True, False, False, False, False]
    assert flags["E035"] == [False, True, False, False, False]


def test_e023_first_arrival_by_stop_sequence(checker: StaticRuleChecker) -> None:
    flags = check(
        checker,
        vp(trip={"trip_id": "T1", "start_time": "07:00:00"}),
        vp(trip={"trip_id": "T1", "start_time": "07:30:00"}),
        vp(trip={"trip_id": "T1", "start_time": "7:00:00"}),
        vp(trip={"trip_id": "F0", "start_time": "09:00:00"}),  # frequency trip: not evaluated
        vp(trip={"trip_id": "T2", "start_time": "09:00:00"}),  # no stop_times
        vp(trip={"trip_id": "T1"}),
    )
    assert flags["E023"] == [False, True, True, False, False, False]


def test_e024_direction(checker: StaticRuleChecker) -> None:
    flags = check(
        checker,
        vp(trip={"trip_id": "T1", "direction_id": 0}),
        vp(trip={"trip_id": "T1", "direction_id": 1}),
        vp(trip={"trip_id": "T2", "direction_id": 0}),  # trips.txt has no direction
        vp(trip={"trip_id": "T1"}),
        vp(trip={"trip_id": "nope", "direction_id": 1}),
    )
    assert flags["E024"] == [False, True, True, False, False]


def test_e011_e015_stops(checker: StaticRuleChecker) -> None:
    flags = check(checker, vp(stop_id="P1"), vp(stop_id="nope"), vp(stop_id="ST"), vp(stop_id="P2"))
    assert flags["E011"] == [False, True, False, False]
    assert flags["E015"] == [False, False, True, False]


# ------------------------------------------------------------------ frequency rules


def test_exact_times_zero_rules(checker: StaticRuleChecker) -> None:
    full = {"trip_id": "F0", "start_time": "06:10:00", "start_date": "20230101"}
    flags = check(
        checker,
        vp(trip=full),
        vp(trip={"trip_id": "F0", "start_time": "06:10:00"}),
        vp(trip={**full, "schedule_relationship": 0}),
        vp(trip={**full, "schedule_relationship": 2}),
        vp(None, trip=full),
        vp("", trip=full),
        vp(None, trip={**full, "trip_id": "T1", "schedule_relationship": 0}),
    )
    assert flags["E006"] == [False, True, False, False, False, False, False]
    assert flags["E013"] == [False, False, True, False, False, False, False]
    assert flags["W005"] == [False, False, False, False, True, False, False]


@pytest.mark.parametrize(
    ("start_time", "java", "fixed"),
    [("07:00:00", False, False), ("07:10:00", True, False), ("07:05:00", True, True),
     ("08:00:00", True, True), (None, True, True)],
)  # fmt: skip
def test_e019_headway_grid(start_time: str | None, java: bool, fixed: bool) -> None:
    trip = {"trip_id": "F1"} | ({"start_time": start_time} if start_time else {})
    table = positions(vp(trip=trip))
    assert StaticRuleChecker(tiny_feed()).check(table)["E019"].tolist() == [java]
    plain = StaticRuleChecker(tiny_feed(), java_compatible=False)
    assert plain.check(table)["E019"].tolist() == [fixed]


def test_java_clock_format() -> None:
    assert format_java_clock(25_800) == "07:10:00"
    assert format_java_clock(25_800, vehicle_quirk=True) == "07:240:00"
    assert format_java_clock(-999) == "00:-16:-39"  # a missing arrival_time never matches


# ------------------------------------------------------------------ geometry rules


def test_e028_box_edges(checker: StaticRuleChecker) -> None:
    top = 28.1 + REGION_BUFFER_DEGREES
    lon_d = math.degrees(
        math.asin(math.sin(math.radians(REGION_BUFFER_DEGREES)) / math.cos(math.radians(28.1)))
    )
    flags = check(
        checker,
        vp(lat=top - 1e-4),
        vp(lat=top + 1e-4),
        vp(lon=LINE_LON + lon_d - 1e-4),
        vp(lon=LINE_LON - lon_d - 1e-4),
        vp(lat=40.0, lon=-73.0),
        vp(lat=95.0),  # invalid (E026): not evaluated
    )
    assert flags["E028"] == [False, True, False, True, True, False]


def test_e028_falls_back_to_stops_when_shapes_are_ignored() -> None:
    box = StaticRuleChecker(tiny_feed(), ignore_shapes=True)._box
    assert box is not None and box.source == "stops.txt"
    wrapped = CoverageBox.buffered(179.99, 179.995, 10.0, 10.1, "stops.txt")
    assert wrapped.min_lon > wrapped.max_lon  # crosses the antimeridian
    inside = wrapped.contains(np.array([-179.999, 0.0]), np.array([10.05, 10.05]))
    assert inside.tolist() == [True, False]


@pytest.mark.parametrize(
    ("metres_east", "java", "metric"),
    [(150.0, False, False), (190.0, True, False), (250.0, True, True)],
)
def test_e029_distance_semantics(metres_east: float, java: bool, metric: bool) -> None:
    entity = vp(trip={"trip_id": "T1"}, lon=east_of_line(metres_east))
    table = positions(entity, vp(trip={"trip_id": "T2"}, lon=east_of_line(metres_east)))
    assert StaticRuleChecker(tiny_feed()).check(table)["E029"].tolist() == [java, False]
    plain = StaticRuleChecker(tiny_feed(), java_compatible=False)
    assert plain.check(table)["E029"].tolist() == [metric, False]


def test_e029_north_south_is_200_m_in_both_modes() -> None:
    past_end = 28.1 + TRIP_BUFFER_DEGREES
    table = positions(
        vp(trip={"trip_id": "T1"}, lat=past_end - 5e-5),
        vp(trip={"trip_id": "T1"}, lat=past_end + 5e-5),
    )
    for compatible in (True, False):
        flags = StaticRuleChecker(tiny_feed(), java_compatible=compatible).check(table)
        assert flags["E029"].tolist() == [False, True]


def _validate(checker: StaticRuleChecker, *entities: rt.FeedEntity) -> ValidatedSnapshot:
    msg = rt.FeedMessage()
    msg.header.gtfs_realtime_version = "1.0"
    msg.header.timestamp = NOW_S
    msg.entity.extend(entities)
    body = msg.SerializeToString()
    decoded = decode_vehicle_positions(body, feed_id="t")
    now = datetime.fromtimestamp(NOW_S, UTC)
    return FeedValidator("t", checker).validate(
        decoded, now=now, sha256=hashlib.sha256(body).hexdigest()
    )


def _detour(trip_id: str = "", route_id: str = "") -> rt.FeedEntity:
    entity = rt.FeedEntity(id=f"alert-{trip_id}-{route_id}")
    entity.alert.effect = rt.Alert.DETOUR
    selector = entity.alert.informed_entity.add()
    if trip_id:
        selector.trip.trip_id = trip_id
    if route_id:
        selector.trip.route_id = route_id
    return entity


def test_e029_detour_alert_exempts_its_trip_or_route(checker: StaticRuleChecker) -> None:
    off = east_of_line(500.0)
    rows = (
        vp("a", trip={"trip_id": "T1"}, lon=off),
        vp("b", trip={"trip_id": "T1", "route_id": "R9"}, lon=off),
        vp("c", trip={"trip_id": "F0"}, lon=off),
    )
    snap = _validate(checker, *rows, _detour(trip_id="T1"), _detour(route_id="R9"))
    assert snap.positions.column(flag_column("E029")).to_pylist() == [False, False, True]
    assert snap.positions.num_rows == 3  # the alerts are not rows


def test_ignored_shapes_leave_e029_null() -> None:
    checker = StaticRuleChecker(tiny_feed(), ignore_shapes=True)
    snap = _validate(checker, vp(trip={"trip_id": "T1"}, lon=east_of_line(500.0)))
    assert snap.positions.column(flag_column("E029")).to_pylist() == [None]
    assert snap.positions.column(flag_column("E003")).to_pylist() == [False]


# ------------------------------------------------------------------ real static feeds


@pytest.mark.real_data
@pytest.mark.parametrize("gtfs", ["bullrunner-gtfs.zip", "bullrunner-gtfs-no-shapes.zip"])
def test_bullrunner_feed_raises_only_feed_only_warnings(shared_data: Path, gtfs: str) -> None:
    folder = shared_data / "feeds" / "bullrunner"
    checker = StaticRuleChecker(read_static_feed(folder / gtfs))
    body = (folder / "vehicle_positions.pb").read_bytes()
    decoded = decode_vehicle_positions(body, feed_id="bullrunner")
    now = datetime.fromtimestamp(decoded.header.timestamp_raw or 0, UTC)
    snap = FeedValidator("bullrunner", checker).validate(
        decoded, now=now, sha256=hashlib.sha256(body).hexdigest()
    )
    flagged = {r for r, n in snap.rule_counts.items() if n}
    assert flagged == {"W001", "W006", "W009"}
    assert ("E029" in checker.rules) is (gtfs == "bullrunner-gtfs.zip")


def _read_as_text(path: Path) -> Any:
    """testagency2 has direction_id "N": gtfs-kit cannot type it, so read every table as text."""
    tables = {}
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if Path(name).stem in gk.constants.DTYPES:
                tables[Path(name).stem] = pd.read_csv(zf.open(name), dtype="string")
    return gk.Feed(dist_units="km", **tables)


@pytest.mark.real_data
def test_testagency2_text_typed_tables(shared_data: Path) -> None:
    checker = StaticRuleChecker(
        _read_as_text(shared_data / "fault_corpus" / "gtfs" / "testagency2.zip")
    )
    flags = check(
        checker,
        vp(trip={"trip_id": "18.1", "direction_id": 0}),  # trips.txt says "N"
        vp(trip={"trip_id": "1.1", "direction_id": 0, "start_time": "00:00:00"}),
        vp(trip={"trip_id": "1.1", "start_time": "00:30:00"}),
        vp(trip={"trip_id": "15.1", "start_time": "09:00:00"}),  # on the hourly grid
        vp(trip={"trip_id": "15.1", "start_time": "06:30:01"}),
        vp(stop_id="B"),  # location_type 1
    )
    assert flags["E024"] == [True, False, False, False, False, False]
    assert flags["E023"] == [False, False, True, False, False, False]
    assert flags["E019"] == [False, False, False, False, True, False]
    assert flags["E015"] == [False, False, False, False, False, True]


@pytest.mark.real_data
def test_caltrain_real_feed_against_its_static_feed(shared_data: Path) -> None:
    folder = shared_data / "feeds" / "caltrain"
    checker = StaticRuleChecker(read_static_feed(folder / "ct.zip"))
    assert {"E028", "E029"} <= checker.rules
    body = (folder / "ct-vehicle-positions.pb").read_bytes()
    decoded = decode_vehicle_positions(body, feed_id="caltrain")
    now = datetime.fromtimestamp(decoded.header.timestamp_raw or 0, UTC)
    snap = FeedValidator("caltrain", checker).validate(
        decoded, now=now, sha256=hashlib.sha256(body).hexdigest()
    )
    assert snap.positions.num_rows == decoded.positions.num_rows == 14
    assert snap.rule_counts == {"W009": 14}  # on their shapes, known trips, no static error
    assert snap.positions.column(flag_column("E029")).null_count == 0
