"""Decoding GTFS-realtime VehiclePositions: golden decodes, bad bodies, C == Python oracle."""

from __future__ import annotations

import gzip
import json
import logging
import os
import random
import struct
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from google.protobuf.message import DecodeError
from google.transit import gtfs_realtime_pb2 as pb

from transitnet.realtime import decode_fast
from transitnet.realtime.decode import (
    DecodedFeed,
    FeedDecodeError,
    decode_vehicle_positions,
    decompress_body,
    parse_feed_message,
)
from transitnet.realtime.decode_fast import compute_enum_masks, extract_columns_fast
from transitnet.realtime.decode_python import (
    ENTITY_COLUMNS,
    EntityColumns,
    extract_columns_python,
)
from transitnet.schema import POSITION_FIELDS

FEEDS = Path("feeds")
TFNSW = FEEDS / "tfnsw-2020-09-01"
ENGINES = ("c", "python")


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def vpdecode() -> ModuleType:
    """The C extension; CI (TRANSITNET_REQUIRE_REAL_DATA=1) fails when it is not built."""
    module = decode_fast.load_extension()
    if module is None:
        if os.environ.get("TRANSITNET_REQUIRE_REAL_DATA") == "1":
            pytest.fail("transitnet.realtime._vpdecode is not built (pip install -e .)")
        pytest.skip("transitnet.realtime._vpdecode is not built (pip install -e .)")
    return module


def read_body(path: Path) -> bytes:
    return decompress_body(path.read_bytes())


def decode_both(body: bytes, **kwargs: Any) -> tuple[DecodedFeed, DecodedFeed]:
    c = decode_vehicle_positions(body, feed_id="f", engine="c", **kwargs)
    py = decode_vehicle_positions(body, feed_id="f", engine="python", **kwargs)
    return c, py


def assert_columns_identical(a: EntityColumns, b: EntityColumns, what: str = "") -> None:
    """Same counts, same columns, same nulls, same values bit for bit (NaN and -0.0 too)."""
    assert (a.n_entities, a.n_trip_updates, a.n_alerts, a.n_invalid_utf8) == (
        b.n_entities,
        b.n_trip_updates,
        b.n_alerts,
        b.n_invalid_utf8,
    ), what
    for name in ENTITY_COLUMNS:
        x, y = a.arrays[name], b.arrays[name]
        x.validate(full=True)
        assert x.type == y.type, (what, name)
        assert x.is_null().equals(y.is_null()), (what, name)
        if pa.types.is_floating(x.type):
            xb = np.asarray(x.fill_null(0.0).to_numpy(zero_copy_only=False)).view(np.uint64)
            yb = np.asarray(y.fill_null(0.0).to_numpy(zero_copy_only=False)).view(np.uint64)
            assert np.array_equal(xb, yb), (what, name)
        else:
            assert x.equals(y), (what, name, x.to_pylist()[:5], y.to_pylist()[:5])


def assert_oracle(body: bytes, module: ModuleType, what: str = "") -> EntityColumns:
    """C columns == Python reference columns for decompressed ``body`` (no IsInitialized gate)."""
    msg = pb.FeedMessage()
    msg.ParseFromString(body)
    fast = extract_columns_fast(body, module)
    assert_columns_identical(fast, extract_columns_python(msg), what)
    if fast.verified_initialized:  # the C check may only ever skip a passing IsInitialized
        assert msg.IsInitialized(), what
    return fast


# Minimal protobuf wire encoder for hand-built edge cases.
def varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def fv(field: int, v: int) -> bytes:
    return tag(field, 0) + varint(v)


def fld(field: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return tag(field, 2) + varint(len(data)) + data


def ff32(field: int, x: float) -> bytes:
    return tag(field, 5) + struct.pack("<f", x)


def ff64(field: int, x: float) -> bytes:
    return tag(field, 1) + struct.pack("<d", x)


def group(field: int, payload: bytes) -> bytes:
    return tag(field, 3) + payload + tag(field, 4)


def feed(*entities: bytes, header: bytes = fld(1, "2.0")) -> bytes:
    return fld(1, header) + b"".join(fld(2, e) for e in entities)


def entity(eid: str, *vehicle_parts: bytes, extra: bytes = b"") -> bytes:
    return fld(1, eid) + fld(4, b"".join(vehicle_parts)) + extra


# ---------------------------------------------------------------- golden decodes


def json_leaves(obj: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from json_leaves(value, (*prefix, key))
    elif obj is not None:
        yield prefix, obj


LOUISVILLE = {
    ("Id",): "entity_id",
    ("Vehicle", "Trip", "TripId"): "trip_id",
    ("Vehicle", "Trip", "RouteId"): "route_id",
    ("Vehicle", "Trip", "DirectionId"): "direction_id",
    ("Vehicle", "Trip", "StartTime"): "start_time",
    ("Vehicle", "Trip", "StartDate"): "start_date",
    ("Vehicle", "Trip", "schedule_relationship"): "schedule_relationship",
    ("Vehicle", "Vehicle", "Id"): "vehicle_id",
    ("Vehicle", "Vehicle", "Label"): "vehicle_label",
    ("Vehicle", "Position", "Latitude"): "latitude",
    ("Vehicle", "Position", "Longitude"): "longitude",
    ("Vehicle", "Position", "Bearing"): "bearing",
    ("Vehicle", "Position", "Speed"): "speed",
    ("Vehicle", "Position", "Odometer"): "odometer",
    ("Vehicle", "CurrentStopSequence"): "current_stop_sequence",
    ("Vehicle", "StopId"): "stop_id",
    ("Vehicle", "CurrentStatus"): "current_status",
    ("Vehicle", "Timestamp"): "vehicle_timestamp_raw",
    ("Vehicle", "congestion_level"): "congestion_level",
    ("Vehicle", "occupancy_status"): "occupancy_status",
}

# protobuf's JSON mapping: camelCase names, 64-bit ints as strings, enums by name.
CALTRAIN = {
    ("id",): "entity_id",
    ("isDeleted",): "is_deleted",
    ("vehicle", "trip", "tripId"): "trip_id",
    ("vehicle", "trip", "routeId"): "route_id",
    ("vehicle", "trip", "directionId"): "direction_id",
    ("vehicle", "trip", "startTime"): "start_time",
    ("vehicle", "trip", "startDate"): "start_date",
    ("vehicle", "trip", "scheduleRelationship"): "schedule_relationship",
    ("vehicle", "vehicle", "id"): "vehicle_id",
    ("vehicle", "vehicle", "label"): "vehicle_label",
    ("vehicle", "position", "latitude"): "latitude",
    ("vehicle", "position", "longitude"): "longitude",
    ("vehicle", "position", "bearing"): "bearing",
    ("vehicle", "position", "speed"): "speed",
    ("vehicle", "position", "odometer"): "odometer",
    ("vehicle", "currentStopSequence"): "current_stop_sequence",
    ("vehicle", "stopId"): "stop_id",
    ("vehicle", "currentStatus"): "current_status",
    ("vehicle", "timestamp"): "vehicle_timestamp_raw",
    ("vehicle", "congestionLevel"): "congestion_level",
    ("vehicle", "occupancyStatus"): "occupancy_status",
}
CALTRAIN_NOT_COLUMNS = frozenset({("vehicle", "vehicle", "licensePlate")})

_ENUM_OF = {
    "schedule_relationship": pb.TripDescriptor.ScheduleRelationship,
    "current_status": pb.VehiclePosition.VehicleStopStatus,
    "congestion_level": pb.VehiclePosition.CongestionLevel,
    "occupancy_status": pb.VehiclePosition.OccupancyStatus,
}


def json_value(column: str, value: Any) -> Any:
    """A JSON decode's value in our column's terms (enum names, int64 strings)."""
    if column in _ENUM_OF and isinstance(value, str):
        return _ENUM_OF[column].Value(value)
    if column in ("vehicle_timestamp_raw", "current_stop_sequence"):
        return int(value)
    return value


def assert_matches_json(
    decoded: DecodedFeed,
    entities: list[dict[str, Any]],
    mapping: dict[tuple[str, ...], str],
    ignored: frozenset[tuple[str, ...]] = frozenset(),
) -> None:
    """Every value the JSON decode has equals ours; every field it lacks is null here."""
    rows = decoded.positions.to_pylist()
    assert len(rows) == len(entities) > 0
    floats = {f.name for f in POSITION_FIELDS if pa.types.is_floating(f.type)}
    for row, ent in zip(rows, entities, strict=True):
        leaves = dict(json_leaves(ent))
        assert set(leaves) - set(mapping) - ignored == set(), "JSON field without a column"
        seen = set()
        for path, value in leaves.items():
            if path in ignored:
                continue
            column = mapping[path]
            seen.add(column)
            expected, got = json_value(column, value), row[column]
            if column in floats:
                assert np.float32(expected) == np.float32(got), (column, expected, got)
            else:
                assert got == expected, (column, expected, got)
        for column in set(ENTITY_COLUMNS) - seen:
            assert row[column] is None, (column, row[column])


@pytest.mark.real_data
@pytest.mark.parametrize("engine", ENGINES)
def test_louisville_golden_pair(shared_data: Path, engine: str) -> None:
    folder = shared_data / FEEDS / "louisville-tarc"
    golden = json.loads(gzip.decompress((folder / "louisville-positions.json.gz").read_bytes()))
    body = (folder / "louisville-positions.pb.bz2").read_bytes()  # bzip2 is sniffed
    decoded = decode_vehicle_positions(body, feed_id="tarc", engine=engine)  # type: ignore[arg-type]
    head = golden["Header"]
    assert decoded.header.version == head["GtfsRealtimeVersion"]
    assert decoded.header.incrementality == head["incrementality"]
    assert decoded.header.timestamp_raw == head["Timestamp"]
    for ent in golden["Entities"]:
        assert ent.pop("TripUpdate") is None and ent.pop("Alert") is None
    assert_matches_json(decoded, golden["Entities"], LOUISVILLE)
    t = decoded.positions
    assert set(t.column("header_timestamp_raw").to_pylist()) == {head["Timestamp"]}
    assert t.column("vehicle_timestamp")[0].as_py() == datetime.fromtimestamp(
        golden["Entities"][0]["Vehicle"]["Timestamp"], tz=UTC
    )


@pytest.mark.real_data
@pytest.mark.parametrize("engine", ENGINES)
def test_caltrain_golden_pair(shared_data: Path, engine: str) -> None:
    folder = shared_data / FEEDS / "caltrain"
    golden = json.loads((folder / "ct-vehicle-positions.pb.json").read_text())
    body = (folder / "ct-vehicle-positions.pb").read_bytes()
    decoded = decode_vehicle_positions(body, feed_id="ct", engine=engine)  # type: ignore[arg-type]
    head = golden["header"]
    assert decoded.header.version == head["gtfsRealtimeVersion"]
    assert decoded.header.incrementality == pb.FeedHeader.Incrementality.Value(
        head["incrementality"]
    )
    assert decoded.header.timestamp_raw == int(head["timestamp"])
    assert_matches_json(decoded, golden["entity"], CALTRAIN, CALTRAIN_NOT_COLUMNS)
    # Set-but-empty strings stay "" (present), never null.
    assert set(decoded.positions.column("vehicle_label").to_pylist()) == {""}


# ---------------------------------------------------------------- bad bodies


@pytest.mark.real_data
def test_real_broken_files_are_classified(shared_data: Path) -> None:
    jar = shared_data / "fault_corpus" / "jar"
    conf = shared_data / "fault_corpus" / "conformance" / "bullrunner"
    expected = {
        jar / "07-empty.pb": "empty",
        conf / "14-empty-file.pb": "empty",
        jar / "06-truncated.pb": "truncated",
        conf / "13-truncated.pb": "truncated",
        jar / "not-protobuf.pb": "not_protobuf",
    }
    for path, kind in expected.items():
        with pytest.raises(FeedDecodeError) as err:
            decode_vehicle_positions(path.read_bytes(), feed_id="x")
        assert err.value.kind == kind, path


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"", "empty"),
        (b" \r\n\t ", "empty"),
        (b"\n" * 5000, "empty"),
        (b" " * 300 + b"<html><body>Service Unavailable</body></html>", "html"),
        (b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", "html"),
        (b"  <html><head></head></html>", "html"),
        (b'<?xml version="1.0"?><error/>', "html"),
        (b'{"error": "rate limited, try again later"}', "not_protobuf"),
    ],
)
def test_bad_bodies_raise_a_classified_error(body: bytes, kind: str) -> None:
    with pytest.raises(FeedDecodeError) as err:
        decode_vehicle_positions(body, feed_id="x")
    assert err.value.kind == kind


@pytest.mark.real_data
def test_truncated_real_snapshot_is_truncated(shared_data: Path) -> None:
    body = read_body(shared_data / TFNSW / "GTFS_VP2020-09-01_08_00.pb.gz")
    for cut in (len(body) // 3, len(body) - 1):
        with pytest.raises(FeedDecodeError) as err:
            decode_vehicle_positions(body[:cut], feed_id="x")
        assert err.value.kind == "truncated"


@pytest.mark.real_data
def test_gzip_without_content_encoding_is_sniffed(shared_data: Path) -> None:
    raw = (shared_data / FEEDS / "caltrain" / "ct-vehicle-positions.pb").read_bytes()
    plain = decode_vehicle_positions(raw, feed_id="ct")
    zipped = decode_vehicle_positions(gzip.compress(raw), feed_id="ct")
    assert zipped.positions.equals(plain.positions) and zipped.positions.num_rows == 14
    # The TfNSW archive files are gzip too.
    tfnsw = (shared_data / TFNSW / "GTFS_VP2020-09-01_08_00.pb.gz").read_bytes()
    assert decode_vehicle_positions(tfnsw, feed_id="t").positions.num_rows == 4980


@pytest.mark.real_data
def test_corrupted_gzip_is_bad_gzip(shared_data: Path) -> None:
    gz = bytearray((shared_data / TFNSW / "GTFS_VP2020-09-01_08_01.pb.gz").read_bytes())
    bodies = [bytes(gz[: len(gz) // 2]), bytes(gz[:-4])]
    flipped = gz.copy()
    for i in range(1000, 1100):
        flipped[i] ^= 0xFF
    bodies.append(bytes(flipped))
    for body in bodies:
        with pytest.raises(FeedDecodeError) as err:
            decode_vehicle_positions(body, feed_id="x")
        assert err.value.kind == "bad_gzip"
    with pytest.raises(FeedDecodeError, match="bzip2"):
        decode_vehicle_positions(b"BZh91AY&SY" + b"\x00" * 20, feed_id="x")


@pytest.mark.real_data
def test_millisecond_timestamps_keep_row_and_raw_and_are_scaled(shared_data: Path) -> None:
    msg = pb.FeedMessage()
    msg.ParseFromString((shared_data / FEEDS / "caltrain" / "ct-vehicle-positions.pb").read_bytes())
    seconds = [e.vehicle.timestamp for e in msg.entity]
    msg.header.timestamp = 1_700_000_000_123
    for e in msg.entity:
        e.vehicle.timestamp = e.vehicle.timestamp * 1000 + 456
    c, py = decode_both(msg.SerializeToString())
    assert c.positions.equals(py.positions)
    t = c.positions
    assert t.num_rows == len(msg.entity) == 14 and min(seconds) > 1_600_000_000
    assert t.column("vehicle_timestamp_raw").to_pylist() == [s * 1000 + 456 for s in seconds]
    assert t.column("vehicle_timestamp").to_pylist() == [
        datetime.fromtimestamp(s, tz=UTC) + timedelta(milliseconds=456) for s in seconds
    ]
    assert t.column("header_timestamp_raw")[0].as_py() == 1_700_000_000_123
    assert t.column("header_timestamp")[0].as_py() == datetime(
        2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC
    )


@pytest.mark.real_data
@pytest.mark.parametrize(
    "path",
    ["louisville-tarc/louisville-updates.pb.bz2", "nyc-mta-bus/nyc-trip-updates.pb.bz2"],
)
def test_trip_updates_only_feed_gives_no_rows_and_right_counts(
    shared_data: Path, path: str
) -> None:
    body = (shared_data / FEEDS / path).read_bytes()
    msg = parse_feed_message(decompress_body(body))
    n_tu = sum(e.HasField("trip_update") for e in msg.entity)
    assert n_tu > 0
    for decoded in decode_both(body):
        assert decoded.positions.num_rows == 0
        assert decoded.positions.schema == pa.schema(POSITION_FIELDS)
        assert (decoded.n_entities, decoded.n_trip_updates, decoded.n_alerts) == (
            len(msg.entity),
            n_tu,
            0,
        )


@pytest.mark.real_data
def test_fetch_time_and_source_file_are_kept(shared_data: Path) -> None:
    body = (shared_data / FEEDS / "bullrunner" / "vehicle_positions.pb").read_bytes()
    sydney = timezone(timedelta(hours=10))
    fetched = datetime(2024, 5, 1, 10, 0, 0, 250000, tzinfo=sydney)
    for decoded in decode_both(body, fetched_at=fetched, source_file="raw/x.pb"):
        t = decoded.positions
        assert set(t.column("fetched_at").to_pylist()) == {
            datetime(2024, 5, 1, 0, 0, 0, 250000, tzinfo=UTC)
        }
        assert set(t.column("source_file").to_pylist()) == {"raw/x.pb"}
        assert set(t.column("feed_id").to_pylist()) == {"f"}
    with pytest.raises(ValueError, match="timezone-aware"):
        decode_vehicle_positions(body, feed_id="x", fetched_at=datetime(2024, 5, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="engine"):
        decode_vehicle_positions(body, feed_id="x", engine="rust")  # type: ignore[arg-type]


@pytest.mark.real_data
def test_invalid_utf8_is_escaped_counted_and_logged(
    shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # protobuf-python accepts it and hands back bytes; jar/03 has it in a TripUpdate.
    jar = parse_feed_message((shared_data / "fault_corpus/jar/03-invalid-utf8.pb").read_bytes())
    assert jar.entity[0].trip_update.trip.trip_id == b"\xff\xfe"
    raw = (shared_data / FEEDS / "caltrain" / "ct-vehicle-positions.pb").read_bytes()
    body = raw.replace(b"\n\x0b\n\x03124", b"\n\x0b\n\x03\xff2\xe9")  # 1st trip_id "124"
    assert body != raw
    with caplog.at_level(logging.WARNING, logger="transitnet.realtime.decode"):
        c, py = decode_both(body)
    assert c.positions.equals(py.positions)
    assert c.n_invalid_utf8 == py.n_invalid_utf8 == 1
    assert c.positions.column("trip_id")[0].as_py() == "\\xff2\\xe9"
    assert sum("not valid UTF-8" in r.message for r in caplog.records) == 2


# ---------------------------------------------------------------- C == Python oracle


def real_vehicle_bodies(shared_data: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted((shared_data / TFNSW).glob("*.pb.gz")):
        yield path.name, read_body(path)
    for rel in (
        "nyc-mta-bus/nyc-vehicle-positions.pb.bz2",
        "louisville-tarc/louisville-positions.pb.bz2",
        "louisville-tarc/louisville-updates.pb.bz2",
        "caltrain/ct-vehicle-positions.pb",
        "bullrunner/vehicle_positions.pb",
    ):
        yield rel, read_body(shared_data / FEEDS / rel)
    for path in sorted((shared_data / "fault_corpus").rglob("*.pb")):
        body = path.read_bytes()
        try:
            pb.FeedMessage().ParseFromString(body)
        except DecodeError:
            continue
        yield str(path.relative_to(shared_data)), body


@pytest.mark.real_data
def test_c_equals_python_on_every_real_feed(shared_data: Path, vpdecode: ModuleType) -> None:
    names = []
    for name, body in real_vehicle_bodies(shared_data):
        fast = assert_oracle(body, vpdecode, name)
        if name.startswith("GTFS_VP") or name.endswith(("positions.pb", "positions.pb.bz2")):
            assert fast.verified_initialized, name  # VehiclePositions-only: no IsInitialized
        names.append(name)
        try:
            c, py = decode_both(body)
        except FeedDecodeError as exc:  # parses, but empty or uninitialised
            assert exc.kind in ("empty", "not_initialized"), name
            continue
        assert c.positions.equals(py.positions), name
        assert (c.n_entities, c.n_trip_updates, c.n_alerts) == (
            py.n_entities,
            py.n_trip_updates,
            py.n_alerts,
        ), name
    assert sum(n.startswith("GTFS_VP") for n in names) == 5
    assert sum("fault_corpus" in n for n in names) >= 35


@pytest.mark.real_data
@pytest.mark.slow
def test_c_equals_python_on_auckland_day_sample(shared_data: Path, vpdecode: ModuleType) -> None:
    archive = shared_data / "auckland-2019-08-13" / "vehicle_positions.tar.xz"
    checked = rows = 0
    with tarfile.open(archive) as tar:
        for i, member in enumerate(m for m in tar if m.isfile()):
            if i % 10:  # every 10th of the 2,280 polls: 05:00 to 23:59
                continue
            fh = tar.extractfile(member)
            assert fh is not None
            rows += assert_oracle(fh.read(), vpdecode, member.name).n_rows
            checked += 1
    assert checked >= 200 and rows > 100_000


def test_hand_built_edge_cases(vpdecode: ModuleType) -> None:
    trip = fld(1, fld(1, "T1") + fld(5, "R1") + fv(6, 0) + fv(4, 0))
    pos = fld(2, ff32(1, -33.5) + ff32(2, 151.25))
    body = feed(
        entity("no-position", trip),
        entity("empty-vehicle"),
        entity("defaults", fld(1, fv(6, 0) + fld(1, "") + fv(4, 0) + fld(2, "") + fld(3, "")
                                 + fld(5, "")),
               fld(2, ff32(1, 0.0) + ff32(2, 0.0) + ff32(3, 0.0) + ff32(5, 0.0) + ff64(4, 0.0)),
               fv(3, 0), fv(4, 0), fv(5, 0), fv(6, 0), fv(9, 0), fld(7, ""),
               fld(8, fld(1, "") + fld(2, "")), extra=fv(2, 0)),
        entity("status-default", fv(4, 2)),
        # the same sub-message twice merges; a scalar twice: the last one wins
        entity("merged", fld(1, fld(1, "A")), pos, fld(1, fld(5, "R") + fld(1, "B")),
               fld(2, ff32(3, 90.0) + ff32(1, -34.0)), fv(5, 1), fv(5, 2)),
        fld(1, "vehicle-twice") + fld(4, trip) + fld(4, pos + fv(5, 7)),
        # unknown fields of every wire type, an extension, a group, everywhere
        entity("unknown", fv(99, 5), fld(98, b"\x01\x02"), ff32(97, 1.5), ff64(96, 2.5),
               group(95, fv(1, 1) + group(2, fld(3, "x"))), fld(1000, b"ext"),
               fld(2, ff32(1, 1.0) + fv(50, 3) + ff32(2, 2.0)),
               fld(1, fld(1, "T") + group(9, b"") + fld(1007, fv(1, 1))),
               extra=fv(77, 1) + fld(1007, b"\x08\x01")),
        # known field numbers with the wrong wire type are unknown fields
        entity("wrong-wire", fld(2, fv(1, 5) + ff64(2, 3.0) + fv(3, 1)), ff32(3, 1.0),
               fv(7, 1), fld(5, b"\x01"), group(1, fld(1, "g")), fld(6, varint(1))),
        # closed enums: values outside the enum are unknown fields; uint32 truncation
        entity("enums", fv(6, 99), fv(4, 1), fv(4, 7), fv(9, (1 << 32) + 1), fv(9, -1),
               fld(1, fv(4, 5) + fv(4, 4) + fv(6, (1 << 32) - 1)), fv(3, (1 << 40) + 5),
               fv(5, (1 << 64) - 1)),
        entity("floats", fld(2, ff32(1, float("nan")) + ff32(2, -0.0) + ff32(3, float("inf"))
                         + ff64(4, 1e300) + ff32(5, -1.0))),
        entity("strings", fld(8, fld(1, "Bus Ümit ✓") + fld(2, b"\xc3\x28")),
               fld(7, b"\xed\xa0\x80"), fld(1, fld(2, b"\xff") + fld(3, b"\xf4\x90\x80\x80")),
               extra=fv(2, 3)),
        fld(1, "trip-update") + fld(3, fld(1, fld(1, "T"))) + fld(5, b""),
        fld(1, "alert-only") + fld(5, fld(1, b"")),
        fld(1, "is-deleted") + fv(2, 1) + fld(4, b""),
    )  # fmt: skip
    cols = assert_oracle(body, vpdecode)
    rows = {r["entity_id"]: r for r in pa.table(cols.arrays).to_pylist()}
    assert cols.n_entities == 14 and cols.n_trip_updates == 1 and cols.n_alerts == 2
    assert set(rows) == {"no-position", "empty-vehicle", "defaults", "status-default",
                         "merged", "vehicle-twice", "unknown", "wrong-wire", "enums", "floats",
                         "strings", "is-deleted"}  # fmt: skip
    assert rows["no-position"]["latitude"] is None and rows["no-position"]["trip_id"] == "T1"
    assert rows["no-position"]["direction_id"] == 0
    assert all(v is None for k, v in rows["empty-vehicle"].items() if k != "entity_id")
    d = rows["defaults"]
    assert all(v is not None for v in d.values()), d  # set to the default: 0, not null
    assert d["bearing"] == 0.0 and d["direction_id"] == 0 and d["trip_id"] == ""
    assert d["is_deleted"] is False and d["current_status"] == 0
    assert rows["status-default"]["current_status"] == 2
    assert rows["no-position"]["current_status"] is None  # absent, though its default is 2
    m = rows["merged"]
    assert (m["trip_id"], m["route_id"], m["latitude"], m["longitude"], m["bearing"]) == (
        "B", "R", -34.0, 151.25, 90.0)  # fmt: skip
    assert m["vehicle_timestamp_raw"] == 2
    v2 = rows["vehicle-twice"]
    assert (v2["trip_id"], v2["latitude"], v2["vehicle_timestamp_raw"]) == ("T1", -33.5, 7)
    u = rows["unknown"]
    assert (u["latitude"], u["longitude"], u["trip_id"]) == (1.0, 2.0, "T")
    w = rows["wrong-wire"]
    assert [w[c] for c in ("latitude", "longitude", "bearing", "stop_id", "trip_id")] == [None] * 5
    assert [w[c] for c in ("current_stop_sequence", "vehicle_timestamp_raw")] == [None] * 2
    e = rows["enums"]
    assert (e["congestion_level"], e["current_status"], e["occupancy_status"]) == (None, 1, 1)
    assert (e["schedule_relationship"], e["direction_id"]) == (5, -1)
    assert (e["current_stop_sequence"], e["vehicle_timestamp_raw"]) == (5, (1 << 64) - 1)
    f = rows["floats"]
    assert np.isnan(f["latitude"]) and str(f["longitude"]) == "-0.0"
    assert (f["bearing"], f["odometer"], f["speed"]) == (float("inf"), 1e300, -1.0)
    s = rows["strings"]
    assert (s["vehicle_id"], s["vehicle_label"]) == ("Bus Ümit ✓", "\\xc3(")
    assert (s["stop_id"], s["start_time"]) == ("\\xed\\xa0\\x80", "\\xff")
    assert s["start_date"] == "\\xf4\\x90\\x80\\x80" and s["is_deleted"] is True
    assert cols.n_invalid_utf8 == 4
    assert rows["is-deleted"]["is_deleted"] is True


def test_empty_feed_and_header_only_feed(vpdecode: ModuleType) -> None:
    for body in (b"", feed()):
        cols = assert_oracle(body, vpdecode)
        assert cols.n_rows == cols.n_entities == 0
    decoded = decode_vehicle_positions(feed(), feed_id="x", engine="c")
    assert decoded.positions.num_rows == 0 and decoded.header.version == "2.0"


def test_required_fields_check_agrees_with_is_initialized(vpdecode: ModuleType) -> None:
    pos = fld(2, ff32(1, 1.0) + ff32(2, 2.0))
    # name: (body, C verified it, IsInitialized())
    cases = {
        "complete": (feed(entity("a", pos)), True, True),
        "no entities": (feed(), True, True),
        "no header": (fld(2, entity("a", pos)), False, False),
        "header without version": (feed(entity("a", pos), header=fv(2, 0)), False, False),
        "version with the wrong wire type": (feed(entity("a"), header=fv(1, 5)), False, False),
        "header twice, merged": (fld(1, fld(1, "2.0")) + fld(1, fv(3, 9)), True, True),
        "entity without id": (feed(fld(4, pos)), False, False),
        "non-vehicle entity without id": (feed(fv(2, 1)), False, False),
        "id with the wrong wire type": (feed(fv(1, 3) + fld(4, b"")), False, False),
        "position without longitude": (feed(entity("a", fld(2, ff32(1, 1.0)))), False, False),
        "latitude with the wrong wire type": (
            feed(entity("a", fld(2, fv(1, 1) + ff32(2, 1.0)))), False, False),
        "lat and lon in two merged positions": (
            feed(entity("a", fld(2, ff32(1, 1.0)), fld(2, ff32(2, 1.0)))), True, True),
        "empty position": (feed(entity("a", fld(2, b""))), False, False),
        # other entity parts are left to IsInitialized(), complete or not
        "complete trip update": (feed(fld(1, "t") + fld(3, fld(1, fld(1, "T")))), False, True),
        "trip update without trip": (feed(fld(1, "t") + fld(3, b"")), False, False),
        "alert": (feed(fld(1, "al") + fld(5, b"")), False, True),
        "alert, text without translation": (
            feed(fld(1, "al") + fld(5, fld(10, fld(1, fld(2, "en"))))), False, False),
        "shape": (feed(fld(1, "s") + fld(6, b"")), False, True),
        "stop": (feed(fld(1, "s") + fld(7, b"")), False, True),
        "trip modifications": (feed(fld(1, "m") + fld(8, b"")), False, True),
    }  # fmt: skip
    for name, (body, verified, initialized) in cases.items():
        fast = assert_oracle(body, vpdecode, name)
        assert fast.verified_initialized is verified, name
        msg = pb.FeedMessage()
        msg.ParseFromString(body)
        assert msg.IsInitialized() is initialized, name
        if initialized:
            assert decode_vehicle_positions(body, feed_id="x", engine="c").n_entities >= 0
            continue
        with pytest.raises(FeedDecodeError) as err:  # the public path still rejects it
            decode_vehicle_positions(body, feed_id="x", engine="c")
        assert err.value.kind == "not_initialized", name


def test_registered_extensions_disable_the_shortcut(
    vpdecode: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = feed(entity("a", fld(2, ff32(1, 1.0) + ff32(2, 2.0))))
    assert extract_columns_fast(body, vpdecode).verified_initialized
    monkeypatch.setattr(decode_fast, "has_registered_extensions", lambda: True)
    assert not extract_columns_fast(body, vpdecode).verified_initialized


@pytest.mark.real_data
def test_real_feed_missing_a_required_field_is_not_initialized(shared_data: Path) -> None:
    msg = pb.FeedMessage()
    msg.ParseFromString((shared_data / FEEDS / "caltrain" / "ct-vehicle-positions.pb").read_bytes())
    msg.entity[3].vehicle.position.ClearField("longitude")
    body = msg.SerializePartialToString()
    for engine in ENGINES:
        with pytest.raises(FeedDecodeError) as err:
            decode_vehicle_positions(body, feed_id="ct", engine=engine)  # type: ignore[arg-type]
        assert err.value.kind == "not_initialized"


def test_c_rejects_malformed_wire_data_cleanly(vpdecode: ModuleType) -> None:
    masks = compute_enum_masks()
    good = feed(entity("a", fld(2, ff32(1, 1.0) + ff32(2, 2.0))))
    bad = [
        good[:-1],  # truncated fixed32
        b"\x12\xff",  # length past the end
        b"\x12",  # truncated length
        b"\x80",  # truncated tag
        b"\x00\x01",  # field number 0
        b"\x0e",  # wire type 6
        b"\x0c",  # end group outside a group
        b"\x0b\x08\x01",  # unterminated group
        b"\x0b\x14",  # mismatched end group
        b"\x08" + b"\xff" * 10 + b"\x01",  # varint longer than 10 bytes
        b"\x1b" * 200 + b"\x1c" * 200,  # groups nested past the depth limit
    ]
    for body in bad:
        with pytest.raises(ValueError, match="malformed FeedMessage"):
            vpdecode.decode(body, masks)
        with pytest.raises(DecodeError):
            pb.FeedMessage().ParseFromString(body)


def first_entities(body: bytes, n: int) -> bytes:
    """The snapshot cut to its first ``n`` entities (unknown fields and extensions kept)."""
    msg = pb.FeedMessage()
    msg.ParseFromString(body)
    del msg.entity[n:]
    return msg.SerializeToString()


@pytest.mark.real_data
def test_fuzzed_real_bodies_never_crash_and_match_protobuf(
    shared_data: Path, vpdecode: ModuleType
) -> None:
    """Random truncations and bit flips: C never crashes; whenever protobuf accepts the
    bytes, the C columns equal the Python ones."""
    rng = random.Random(20200901)
    seeds = [
        (shared_data / FEEDS / "caltrain" / "ct-vehicle-positions.pb").read_bytes(),
        (shared_data / FEEDS / "bullrunner" / "vehicle_positions.pb").read_bytes(),
        read_body(shared_data / FEEDS / "louisville-tarc/louisville-positions.pb.bz2"),
        first_entities(read_body(shared_data / TFNSW / "GTFS_VP2020-09-01_08_02.pb.gz"), 100),
    ]
    masks = compute_enum_masks()
    accepted = 0
    for i in range(3000):
        body = bytearray(rng.choice(seeds))
        if i % 3 == 0:
            del body[rng.randrange(len(body)) :]
        for _ in range(rng.choice((1, 1, 2, 8))):
            body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
        try:
            msg = pb.FeedMessage()
            msg.ParseFromString(bytes(body))
        except DecodeError:
            try:  # must not crash; may raise ValueError or decode garbage
                vpdecode.decode(bytes(body), masks)
            except ValueError:
                pass
            continue
        accepted += 1
        fast = extract_columns_fast(bytes(body), vpdecode)
        assert_columns_identical(fast, extract_columns_python(msg), f"mutation {i}")
        assert msg.IsInitialized() or not fast.verified_initialized, f"mutation {i}"
    assert accepted > 300


# ---------------------------------------------------------------- fallback


@pytest.fixture
def no_extension(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def missing() -> ModuleType:
        raise ImportError("No module named 'transitnet.realtime._vpdecode'")

    decode_fast.load_extension.cache_clear()
    monkeypatch.setattr(decode_fast, "_import_extension", missing)
    yield
    monkeypatch.undo()
    decode_fast.load_extension.cache_clear()


@pytest.mark.real_data
@pytest.mark.usefixtures("no_extension")
def test_missing_extension_falls_back_to_python_with_one_warning(
    shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    body = (shared_data / FEEDS / "caltrain" / "ct-vehicle-positions.pb").read_bytes()
    with caplog.at_level(logging.WARNING):
        first = decode_vehicle_positions(body, feed_id="ct")
        second = decode_vehicle_positions(body, feed_id="ct")
    assert [r.message.startswith("The C decoder") for r in caplog.records] == [True]
    assert first.positions.num_rows == second.positions.num_rows == 14
    with pytest.raises(RuntimeError, match="not built"):
        decode_vehicle_positions(body, feed_id="ct", engine="c")


def test_stale_extension_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    stale = ModuleType("transitnet.realtime._vpdecode")
    stale.ABI_VERSION = 0  # type: ignore[attr-defined]
    decode_fast.load_extension.cache_clear()
    monkeypatch.setattr(decode_fast, "_import_extension", lambda: stale)
    try:
        assert decode_fast.load_extension() is None
    finally:
        monkeypatch.undo()
        decode_fast.load_extension.cache_clear()


@pytest.mark.real_data
def test_c_failure_on_protobuf_accepted_bytes_falls_back(
    shared_data: Path, vpdecode: ModuleType, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    body = (shared_data / FEEDS / "caltrain" / "ct-vehicle-positions.pb").read_bytes()
    expected = decode_vehicle_positions(
        body, feed_id="ct", source_file="a.pb", engine="python"
    ).positions

    def broken(body: bytes, masks: tuple[int, ...]) -> Any:
        raise ValueError("malformed FeedMessage at byte 3: injected")

    monkeypatch.setattr(vpdecode, "decode", broken)
    with caplog.at_level(logging.WARNING):
        got = decode_vehicle_positions(body, feed_id="ct", source_file="a.pb")
    assert got.positions.equals(expected)
    assert any("C decoder failed" in r.message for r in caplog.records)
    with pytest.raises(ValueError, match="injected"):
        decode_vehicle_positions(body, feed_id="ct", engine="c")


def test_enum_masks_follow_the_bindings() -> None:
    fields = (pb.TripDescriptor.ScheduleRelationship, pb.VehiclePosition.VehicleStopStatus,
              pb.VehiclePosition.CongestionLevel, pb.VehiclePosition.OccupancyStatus)  # fmt: skip
    expected = tuple(sum(1 << v for v in enum.values()) for enum in fields)
    assert compute_enum_masks() == expected
    assert expected[0] & (1 << 4) == 0  # ScheduleRelationship has no 4
