"""Feed-only reference-validator rules on tiny in-code FeedMessages (plus two real feeds)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from google.transit import gtfs_realtime_pb2 as rt

from transitnet.realtime.decode import DecodedFeed, decode_vehicle_positions
from transitnet.realtime.validate import (
    STATIC_DEPENDENT_RULES,
    FeedValidator,
    ValidatedSnapshot,
)
from transitnet.realtime.validate_header import is_v2_or_higher, parse_java_float
from transitnet.schema import POSITIONS_SCHEMA, VP_RULES, flag_column

NOW_S = 1_700_000_000
NOW = datetime.fromtimestamp(NOW_S, UTC)


def vp(
    entity_id: str = "e1",
    vehicle_id: str | None = "v1",
    *,
    trip: dict[str, Any] | None = None,
    lat: float | None = 28.06,
    lon: float = -82.41,
    bearing: float | None = None,
    speed: float | None = None,
    timestamp: int | None = NOW_S - 10,
    stop_id: str | None = None,
    is_deleted: bool | None = None,
) -> rt.FeedEntity:
    """One VehiclePosition entity; None leaves a field unset."""
    entity = rt.FeedEntity(id=entity_id)
    if is_deleted is not None:
        entity.is_deleted = is_deleted
    v = entity.vehicle
    if vehicle_id is not None:
        v.vehicle.id = vehicle_id
    if trip is not None:
        v.trip.SetInParent()
        for key, value in trip.items():
            setattr(v.trip, key, value)
    if lat is not None:
        v.position.latitude, v.position.longitude = lat, lon
        if bearing is not None:
            v.position.bearing = bearing
        if speed is not None:
            v.position.speed = speed
    if timestamp is not None:
        v.timestamp = timestamp
    if stop_id is not None:
        v.stop_id = stop_id
    return entity


def feed(
    *entities: rt.FeedEntity,
    timestamp: int | None = NOW_S - 5,
    version: str = "1.0",
    incrementality: int | None = rt.FeedHeader.FULL_DATASET,
) -> bytes:
    msg = rt.FeedMessage()
    msg.header.gtfs_realtime_version = version
    if incrementality is not None:
        msg.header.incrementality = incrementality
    if timestamp is not None:
        msg.header.timestamp = timestamp
    msg.entity.extend(entities)
    return msg.SerializeToString()


def run(
    body: bytes, validator: FeedValidator | None = None, now: datetime = NOW
) -> ValidatedSnapshot:
    validator = validator or FeedValidator("test")
    decoded = decode_vehicle_positions(body, feed_id="test")
    return validator.validate(decoded, now=now, sha256=hashlib.sha256(body).hexdigest())


def flags(snapshot: ValidatedSnapshot, rule: str) -> list[bool | None]:
    values: list[bool | None] = snapshot.positions.column(flag_column(rule)).to_pylist()
    return values


def raised(snapshot: ValidatedSnapshot) -> set[str]:
    return {r for r in VP_RULES if any(flags(snapshot, r))}


TRIP = {"trip_id": "1", "schedule_relationship": 2, "start_time": "07:00:00"}


# ------------------------------------------------------------------ output shape


def test_schema_rows_and_unevaluated_static_rules() -> None:
    snap = run(feed(vp("a", trip=TRIP), vp("b", "v2", trip=TRIP), vp("c", "v3", trip=TRIP)))
    assert snap.positions.schema == POSITIONS_SCHEMA
    assert snap.positions.num_rows == 3
    for rule in VP_RULES:
        column = snap.positions.column(flag_column(rule))
        expected_nulls = 3 if rule in STATIC_DEPENDENT_RULES else 0
        assert column.null_count == expected_nulls, rule
    assert raised(snap) == set() and snap.snapshot_rules == [] and snap.rule_counts == {}


def test_nothing_dropped_when_every_row_is_flagged() -> None:
    bad = [vp(str(i), "same", lat=95.0, bearing=500.0, speed=-3.0, timestamp=0) for i in range(5)]
    snap = run(feed(*bad, timestamp=None))
    assert snap.positions.num_rows == 5
    assert snap.positions.column("entity_id").to_pylist() == ["0", "1", "2", "3", "4"]
    assert {"E026", "E027", "W004", "W001", "E052"} <= raised(snap)


def test_feed_level_rules_recorded_without_rows() -> None:
    snap = run(feed(timestamp=None, version="2.0", incrementality=None))
    assert snap.positions.num_rows == 0
    assert snap.snapshot_rules == ["E048", "E049"]
    assert snap.rule_counts == {"E048": 1, "E049": 1}


def test_feed_level_rules_broadcast_to_rows() -> None:
    snap = run(feed(vp("a"), vp("b", "v2"), version="3.0"))
    assert snap.snapshot_rules == ["E038"]
    assert flags(snap, "E038") == [True, True]
    assert snap.rule_counts["E038"] == 1


# ------------------------------------------------------------------ vehicle rules


def test_w002_and_e052_vehicle_ids() -> None:
    body = feed(vp("a", "x"), vp("b", None), vp("c", ""), vp("d", "x"), vp("e", "x"), vp("f", ""))
    snap = run(body)
    assert flags(snap, "W002") == [False, True, True, False, False, True]
    assert flags(snap, "E052") == [False, False, False, True, True, False]
    assert snap.rule_counts["E052"] == 2


@pytest.mark.parametrize(
    ("lat", "lon", "expected"),
    [(90.0, 180.0, False), (-90.0, -180.0, False), (90.001, 0.0, True), (-90.001, 0.0, True),
     (0.0, 180.001, True), (0.0, -180.001, True), (float("nan"), 0.0, True), (None, 0.0, False)],
)  # fmt: skip
def test_e026_position_range(lat: float | None, lon: float, expected: bool) -> None:
    assert flags(run(feed(vp(lat=lat, lon=lon))), "E026") == [expected]


@pytest.mark.parametrize(
    ("bearing", "expected"),
    [(0.0, False), (360.0, False), (360.5, True), (-0.5, True), (None, False)],
)
def test_e027_bearing_range(bearing: float | None, expected: bool) -> None:
    assert flags(run(feed(vp(bearing=bearing))), "E027") == [expected]


@pytest.mark.parametrize(
    ("speed", "expected"), [(0.0, False), (26.0, False), (26.01, True), (-0.1, True), (None, False)]
)
def test_w004_speed_threshold(speed: float | None, expected: bool) -> None:
    assert flags(run(feed(vp(speed=speed))), "W004") == [expected]


# ------------------------------------------------------------------ timestamps


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (None, {"W001"}),
        (0, {"W001"}),
        (NOW_S - 5, set()),  # equal to the header: fine
        (NOW_S - 4, {"E012"}),  # one second after the header
        (NOW_S * 1000, {"E001", "E012"}),  # milliseconds
        (1_104_537_600, set()),  # 2005-01-01, first POSIX second accepted
        (1_104_537_599, {"E001"}),
        (2**64 - 1, {"E001"}),  # wraps to -1 as a Java long
    ],
)
def test_vehicle_timestamp_rules(timestamp: int | None, expected: set[str]) -> None:
    snap = run(feed(vp(timestamp=timestamp), timestamp=NOW_S - 5))
    assert raised(snap) == expected


def test_posix_upper_edge_and_future_edge() -> None:
    header = 1_991_620_134  # last POSIX second accepted; far ahead of NOW, so E050 too
    last = run(feed(vp(timestamp=header), timestamp=header))
    over = run(feed(vp(timestamp=header + 1), timestamp=header))
    assert last.snapshot_rules == over.snapshot_rules == ["E050"]
    assert last.rule_counts == {"E050": 2}  # the header and the vehicle
    assert over.rule_counts == {"E050": 1, "E001": 1, "E012": 1}


@pytest.mark.parametrize(
    ("ahead_ms", "expected"), [(60_000, False), (60_999, False), (61_000, True)]
)
def test_e050_vehicle_sixty_seconds_ahead(ahead_ms: int, expected: bool) -> None:
    now = NOW - timedelta(milliseconds=ahead_ms)
    snap = run(feed(vp(timestamp=NOW_S), timestamp=NOW_S), now=now)
    assert flags(snap, "E050") == [expected]
    assert ("E050" in snap.snapshot_rules) == expected  # the header is equally ahead


# ------------------------------------------------------------------ header rules


@pytest.mark.parametrize(
    ("age_ms", "expected"), [(65_000, False), (65_001, True), (0, False), (-60_000, False)]
)
def test_w008_header_older_than_65_seconds(age_ms: int, expected: bool) -> None:
    snap = run(feed(timestamp=NOW_S), now=NOW + timedelta(milliseconds=age_ms))
    assert ("W008" in snap.snapshot_rules) is expected


@pytest.mark.parametrize(
    ("version", "timestamp", "incrementality", "expected"),
    [
        ("1.0", None, 0, ["W001"]),
        ("2.0", None, 0, ["E048"]),
        ("2.0", NOW_S, None, ["E049"]),
        ("1.0", NOW_S, None, []),
        ("3.0", NOW_S, 0, ["E038"]),
        ("2.0", NOW_S, 0, []),
        ("1.0", NOW_S * 1000, 0, ["E001"]),
        ("banana", None, 0, ["E038", "E048"]),  # unparseable version: Java logs E048
    ],
)
def test_header_rules(
    version: str, timestamp: int | None, incrementality: int | None, expected: list[str]
) -> None:
    body = feed(timestamp=timestamp, version=version, incrementality=incrementality)
    assert run(body).snapshot_rules == expected


def test_e039_is_deleted_only_in_full_dataset() -> None:
    entities = (vp("a", is_deleted=False), vp("b", "v2"))
    assert flags(run(feed(*entities)), "E039") == [True, False]
    assert flags(run(feed(*entities, incrementality=None)), "E039") == [True, False]
    differential = feed(*entities, version="2.0", incrementality=rt.FeedHeader.DIFFERENTIAL)
    assert flags(run(differential), "E039") == [False, False]


def test_java_float_parsing() -> None:
    assert parse_java_float(" 2 ") == 2.0 and parse_java_float("2.0f") == 2.0
    assert parse_java_float("1_0") is None and parse_java_float("") is None
    assert is_v2_or_higher("1.99999999") is True  # rounds to 2.0f, as in Java
    assert is_v2_or_higher("1.0") is False and is_v2_or_higher("x") is None


# ------------------------------------------------------------------ across snapshots


def test_sequence_rules_and_duplicates() -> None:
    validator = FeedValidator("seq")
    first = feed(vp("a"), timestamp=NOW_S)
    assert run(first, validator).snapshot_rules == []
    assert run(first, validator).duplicate  # same bytes: no E017, state kept
    changed = feed(vp("b"), timestamp=NOW_S)
    assert run(changed, validator).snapshot_rules == ["E017"]
    assert run(feed(vp("c"), timestamp=NOW_S + 35), validator).snapshot_rules == []
    later = run(feed(vp("d"), timestamp=NOW_S + 71), validator, now=NOW + timedelta(seconds=71))
    assert later.snapshot_rules == ["W007"]
    back = run(feed(vp("e"), timestamp=NOW_S + 70), validator, now=NOW + timedelta(seconds=71))
    assert back.snapshot_rules == ["E018"] and flags(back, "E018") == [True]


def test_no_sequence_rules_after_a_header_without_timestamp() -> None:
    validator = FeedValidator("seq")
    run(feed(vp("a"), timestamp=None), validator)
    assert run(feed(vp("b"), timestamp=NOW_S - 100), validator).snapshot_rules == ["W008"]


def test_state_round_trip(tmp_path: Path) -> None:
    validator = FeedValidator("f")
    run(feed(vp("a"), timestamp=NOW_S), validator)
    path = tmp_path / "state.json"
    path.write_text(json.dumps(validator.state_dict()))
    restored = FeedValidator("f")
    restored.load_state_dict(json.loads(path.read_text()))
    assert run(feed(vp("z"), timestamp=NOW_S), restored).snapshot_rules == ["E017"]


@pytest.mark.parametrize(
    "state",
    [
        {"version": 99},
        {"version": 1, "feed_id": "other"},
        {"version": 1, "feed_id": "f", "previous_header_timestamp": "12"},
        {"version": 1, "feed_id": "f", "previous_header_timestamp": 1, "previous_sha256": 3},
    ],
)
def test_bad_state_is_rejected(state: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"state|previous"):
        FeedValidator("f").load_state_dict(state)


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        run(feed(vp()), now=datetime(2023, 1, 1))  # noqa: DTZ001


# ------------------------------------------------------------------ trip descriptor rules


def test_w006_w009_need_a_trip_descriptor() -> None:
    entities = (
        vp("none", "1"),
        vp("empty", "2", trip={}),
        vp("route-only", "3", trip={"route_id": "A"}),
        vp("full", "4", trip=TRIP),
    )
    snap = run(feed(*entities))
    assert flags(snap, "W006") == [False, True, True, False]
    assert flags(snap, "W009") == [False, True, True, False]


def test_trip_presence_in_a_combined_feed() -> None:
    tu = rt.FeedEntity(id="tu")
    tu.trip_update.trip.trip_id = "9"  # no vehicle id, no schedule_relationship: not ours
    snap = run(feed(tu, vp("none", "1"), vp("empty", "2", trip={})))
    assert flags(snap, "W006") == [False, True]
    assert flags(snap, "W002") == [False, False]


@pytest.mark.parametrize(
    ("start_time", "expected"),
    [("07:00:00", False), ("7:00:00", False), ("29:59:59", False), ("30:00:00", True),
     ("7:0:0", True), ("07:60:00", True), ("07:00", True), ("", True)],
)  # fmt: skip
def test_e020_start_time_format(start_time: str, expected: bool) -> None:
    snap = run(feed(vp(trip={**TRIP, "start_time": start_time})))
    assert flags(snap, "E020") == [expected]


@pytest.mark.parametrize(
    ("start_date", "expected"),
    [("20160101", False), ("20160231", False), ("2016-01-01", True), ("20161301", True),
     ("20160132", True), ("00000101", True), ("2016010", True), ("2016O101", True)],
)  # fmt: skip
def test_e021_start_date_format(start_date: str, expected: bool) -> None:
    snap = run(feed(vp(trip={**TRIP, "start_date": start_date})))
    assert flags(snap, "E021") == [expected]


# ------------------------------------------------------------------ static checker protocol


class _BrokenChecker:
    rules = frozenset({"E003"})

    def check(self, positions: pa.Table) -> dict[str, np.ndarray]:
        return {"E003": np.zeros(positions.num_rows + 1, dtype=bool)}


def test_malformed_static_checker_output_is_an_error() -> None:
    with pytest.raises(ValueError, match="static checker returned 'E003'"):
        run(feed(vp()), FeedValidator("f", _BrokenChecker()))


# ------------------------------------------------------------------ real feeds


@pytest.mark.real_data
def test_bullrunner_raises_w001_w006_w009(shared_data: Path) -> None:
    body = (shared_data / "feeds" / "bullrunner" / "vehicle_positions.pb").read_bytes()
    decoded = decode_vehicle_positions(body, feed_id="bullrunner")
    header_now = datetime.fromtimestamp(decoded.header.timestamp_raw or 0, UTC)
    snap = _validate(decoded, body, header_now)
    assert snap.positions.num_rows == decoded.positions.num_rows == 10
    assert raised(snap) == {"W001", "W006", "W009"}
    assert all(flags(snap, "W001")) and all(flags(snap, "W006")) and all(flags(snap, "W009"))


@pytest.mark.real_data
def test_tfnsw_snapshots_keep_every_row(shared_data: Path) -> None:
    validator = FeedValidator("tfnsw")
    paths = sorted((shared_data / "feeds" / "tfnsw-2020-09-01").glob("GTFS_VP*.pb.gz"))[:2]
    snaps = []
    for path in paths:
        body = path.read_bytes()
        decoded = decode_vehicle_positions(body, feed_id="tfnsw")
        now = datetime.fromtimestamp(decoded.header.timestamp_raw or 0, UTC)
        snaps.append(_validate(decoded, body, now, validator))
        assert snaps[-1].positions.num_rows == decoded.positions.num_rows > 4000
    assert snaps[1].snapshot_rules == ["W007"]  # polled a minute apart
    assert snaps[0].rule_counts.get("E052", 0) >= 1  # TfNSW repeats some vehicle ids


def _validate(
    decoded: DecodedFeed, body: bytes, now: datetime, validator: FeedValidator | None = None
) -> ValidatedSnapshot:
    validator = validator or FeedValidator("real")
    return validator.validate(decoded, now=now, sha256=hashlib.sha256(body).hexdigest())
