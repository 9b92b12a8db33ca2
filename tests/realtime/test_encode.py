from __future__ import annotations

import bz2
import logging
import tarfile
from pathlib import Path

import pyarrow as pa
import pytest
from google.transit import gtfs_realtime_pb2

from transitnet.realtime.decode import decode_vehicle_positions
from transitnet.realtime.encode import (
    EncodeError,
    encode_feed_message,
    encode_snapshots,
    iter_snapshot_tables,
)

#: Decodable files and VehiclePosition rows in fault_corpus/ (measured).
CORPUS_DECODABLE, CORPUS_VP_ROWS = 36, 134


def _read_tar_members(path: Path, every: int, limit: int) -> list[tuple[str, bytes]]:
    out = []
    with tarfile.open(path, mode="r|*") as tar:
        for i, member in enumerate(tar):
            if i >= limit:
                break
            handle = tar.extractfile(member)
            if i % every == 0 and handle is not None:
                out.append((member.name, handle.read()))
    return out


def _assert_round_trip(name: str, body: bytes) -> int:
    """decode(encode(t)) == t, header included; returns the rows checked."""
    decoded = decode_vehicle_positions(body, feed_id="f", source_file=name)
    h = decoded.header
    again_body = encode_feed_message(
        decoded.positions, header_timestamp_raw=h.timestamp_raw, version=h.version or "",
        incrementality=h.incrementality,
    )  # fmt: skip
    again = decode_vehicle_positions(again_body, feed_id="f", source_file=name)
    assert again.positions.equals(decoded.positions), name
    assert again.header == decoded.header, name
    if decoded.positions.num_rows and h.timestamp_raw is not None:
        snaps = encode_snapshots(decoded.positions)
        assert len(snaps) == 1 and snaps[0].body == again_body, name
    return decoded.positions.num_rows


@pytest.mark.real_data
def test_round_trip_on_real_feeds(shared_data: Path) -> None:
    bodies = _read_tar_members(
        shared_data / "auckland-2019-08-13/vehicle_positions.tar.xz", every=40, limit=800
    )
    feeds = shared_data / "feeds"
    singles = [
        feeds / "nyc-mta-bus/nyc-vehicle-positions.pb.bz2",
        feeds / "louisville-tarc/louisville-positions.pb.bz2",
        feeds / "bullrunner/vehicle_positions.pb",
        feeds / "caltrain/ct-vehicle-positions.pb",
    ]
    for path in [*sorted(feeds.glob("tfnsw-2020-09-01/*.pb.gz")), *singles]:
        bodies.append((path.name, path.read_bytes()))
    rows = sum(_assert_round_trip(name, body) for name, body in bodies)
    assert len(bodies) == 20 + 9
    assert rows > 30_000


@pytest.mark.real_data
def test_round_trip_keeps_nulls_of_the_fault_corpus(shared_data: Path) -> None:
    checked = rows = 0
    for path in sorted((shared_data / "fault_corpus").rglob("*.pb")):
        try:
            decode_vehicle_positions(path.read_bytes(), feed_id="f")
        except ValueError:
            continue  # truncated / empty / not protobuf: nothing to encode
        rows += _assert_round_trip(path.name, path.read_bytes())
        checked += 1
    assert (checked, rows) == (CORPUS_DECODABLE, CORPUS_VP_ROWS)


def _table(**columns: list[object]) -> pa.Table:
    types = {"latitude": pa.float64(), "longitude": pa.float64(), "bearing": pa.float64(),
             "speed": pa.float64(), "direction_id": pa.int32(), "current_status": pa.int32(),
             "vehicle_timestamp_raw": pa.uint64(), "header_timestamp_raw": pa.uint64(),
             "current_stop_sequence": pa.int64()}  # fmt: skip
    return pa.table({k: pa.array(v, types.get(k, pa.string())) for k, v in columns.items()})


def test_presence_and_default_values_survive() -> None:
    table = _table(
        entity_id=["a", "b"],
        vehicle_id=["v1", None],
        trip_id=[None, "t2"],
        direction_id=[0, None],
        latitude=[-36.8, None],
        longitude=[174.7, None],
        bearing=[0.0, None],
        current_status=[None, 0],
        vehicle_timestamp_raw=[1565650000, None],
    )
    body = encode_feed_message(table, header_timestamp_raw=1565650030)
    msg = gtfs_realtime_pb2.FeedMessage.FromString(body)
    first, second = (e.vehicle for e in msg.entity)
    assert first.trip.HasField("direction_id") and first.trip.direction_id == 0
    assert not first.trip.HasField("trip_id")
    assert first.position.HasField("bearing") and first.position.bearing == 0.0
    assert not first.HasField("current_status")
    assert not second.HasField("position") and not second.HasField("timestamp")
    assert second.HasField("current_status") and second.current_status == 0
    assert not second.vehicle.HasField("id")
    out = decode_vehicle_positions(body, feed_id="f").positions
    assert out.column("direction_id").to_pylist() == [0, None]
    assert out.column("bearing").to_pylist() == [0.0, None]
    assert msg.header.timestamp == 1565650030 and msg.header.gtfs_realtime_version == "2.0"


def test_lone_coordinate_is_left_out_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    table = _table(entity_id=["a"], latitude=[1.5], longitude=[None])
    with caplog.at_level(logging.WARNING):
        body = encode_feed_message(table, header_timestamp_raw=None)
    assert not gtfs_realtime_pb2.FeedMessage.FromString(body).entity[0].vehicle.HasField("position")
    assert "lack latitude or longitude" in caplog.text


def test_float64_coordinates_round_to_float32() -> None:
    table = _table(entity_id=["a"], latitude=[42.27057123456], longitude=[-71.12061987654])
    out = decode_vehicle_positions(encode_feed_message(table, header_timestamp_raw=1), feed_id="f")
    assert out.positions.column("latitude")[0].as_py() == pytest.approx(42.27057123456, abs=1e-5)


def test_entity_id_falls_back_to_vehicle_then_row() -> None:
    table = _table(entity_id=[None, None], vehicle_id=["v9", None])
    msg = gtfs_realtime_pb2.FeedMessage.FromString(
        encode_feed_message(table, header_timestamp_raw=None)
    )
    assert [e.id for e in msg.entity] == ["v9", "row-1"]


def test_values_outside_the_proto_range_raise() -> None:
    with pytest.raises(EncodeError, match="row 0"):
        encode_feed_message(_table(entity_id=["a"], current_stop_sequence=[-1]),
                            header_timestamp_raw=None)  # fmt: skip
    with pytest.raises(EncodeError):
        encode_feed_message(_table(entity_id=["a"], current_status=[9]), header_timestamp_raw=None)


def test_snapshots_group_by_header_then_vehicle_timestamp() -> None:
    by_header = _table(entity_id=["a", "b", "c"], header_timestamp_raw=[20, 10, 20],
                       vehicle_timestamp_raw=[1, 2, 3])  # fmt: skip
    groups = [(ts, t.column("entity_id").to_pylist()) for ts, t in iter_snapshot_tables(by_header)]
    assert groups == [(10, ["b"]), (20, ["a", "c"])]
    by_vehicle = _table(entity_id=["a", "b", "c"], vehicle_timestamp_raw=[5, None, 4])
    groups = [(ts, t.column("entity_id").to_pylist()) for ts, t in iter_snapshot_tables(by_vehicle)]
    assert groups == [(4, ["c"]), (5, ["a"]), (None, ["b"])]
    snaps = encode_snapshots(by_vehicle)
    assert [s.header_timestamp_raw for s in snaps] == [4, 5, None]
    assert not gtfs_realtime_pb2.FeedMessage.FromString(snaps[2].body).header.HasField("timestamp")
    binned = [(ts, t.column("entity_id").to_pylist())
              for ts, t in iter_snapshot_tables(by_vehicle, bin_s=30)]  # fmt: skip
    assert binned == [(30, ["a", "c"]), (None, ["b"])]  # one window [0, 30) ends at 30
    with pytest.raises(EncodeError, match="header_timestamp_raw or vehicle_timestamp_raw"):
        list(iter_snapshot_tables(_table(entity_id=["a"])))


def test_compressed_bodies_round_trip_after_decompression() -> None:
    table = _table(entity_id=["a"], latitude=[1.0], longitude=[2.0], vehicle_timestamp_raw=[7])
    body = encode_feed_message(table, header_timestamp_raw=7)
    decoded = decode_vehicle_positions(bz2.compress(body), feed_id="f")
    assert decoded.positions.column("vehicle_timestamp_raw").to_pylist() == [7]
