"""TripUpdates decoding, the observed-arrival rule, bad bodies, and the real Auckland archive."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from google.transit import gtfs_realtime_pb2 as pb

from transitnet.realtime.decode import FeedDecodeError
from transitnet.realtime.trip_updates import (
    OBSERVED_COLUMNS,
    STOP_EVENT_COLUMNS,
    decode_trip_updates,
    derive_observed_arrivals,
    read_trip_updates,
)

T0 = 1_565_629_200  # 2019-08-12 17:00:00 UTC


def make_feed(header_ts: int | None, updates: list[dict[str, Any]]) -> bytes:
    """A TripUpdates FeedMessage; each update: trip, stop, seq, arr, dep (None: unset)."""
    msg = pb.FeedMessage()
    msg.header.gtfs_realtime_version = "2.0"
    if header_ts is not None:
        msg.header.timestamp = header_ts
    for i, u in enumerate(updates):
        entity = msg.entity.add(id=str(i))
        tu = entity.trip_update
        tu.trip.trip_id = u["trip"]
        tu.trip.route_id = u.get("route", "R1")
        if "vehicle" in u:
            tu.vehicle.id = u["vehicle"]
        if "ts" in u:
            tu.timestamp = u["ts"]
        stu = tu.stop_time_update.add(stop_id=u["stop"])
        if u.get("seq") is not None:
            stu.stop_sequence = u["seq"]
        if u.get("arr") is not None:
            stu.arrival.time = u["arr"]
            stu.arrival.delay = u.get("delay", 0)
        if u.get("dep") is not None:
            stu.departure.time = u["dep"]
    entity = msg.entity.add(id="vp")  # a position entity is ignored
    entity.vehicle.position.latitude = -36.8
    entity.vehicle.position.longitude = 174.7
    return msg.SerializeToString()


def test_decode_reads_fields_with_presence() -> None:
    body = make_feed(
        T0,
        [
            {"trip": "T1-v82", "stop": "S1-v82", "seq": 3, "arr": T0 - 20, "delay": 45, "ts": T0},
            {"trip": "T2-v82", "stop": "S9-v82", "dep": T0 - 5, "vehicle": "BUS7"},
        ],
    )
    df = decode_trip_updates(body, source_file="a.pb")
    assert list(df.columns) == list(STOP_EVENT_COLUMNS)
    assert len(df) == 2
    first, second = df.iloc[0], df.iloc[1]
    assert first["trip_id"] == "T1-v82" and first["stop_sequence"] == 3
    assert first["arrival_time"] == pd.Timestamp(T0 - 20, unit="s", tz="UTC")
    assert first["arrival_delay_s"] == 45
    assert pd.isna(first["departure_time"]) and pd.isna(first["departure_delay_s"])
    assert pd.isna(first["vehicle_id"])  # unset, not ""
    assert pd.isna(second["stop_sequence"]) and pd.isna(second["update_time"])
    assert second["vehicle_id"] == "BUS7"
    assert (df["snapshot_time"] == pd.Timestamp(T0, unit="s", tz="UTC")).all()
    assert (df["source_file"] == "a.pb").all()


def test_decode_gzip_body_and_empty_feed() -> None:
    body = make_feed(T0, [{"trip": "T1", "stop": "S1", "arr": T0}])
    assert len(decode_trip_updates(gzip.compress(body))) == 1
    empty = decode_trip_updates(make_feed(T0, []))
    assert empty.empty and list(empty.columns) == list(STOP_EVENT_COLUMNS)


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"", "empty"),
        (b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", "html"),
        (make_feed(T0, [{"trip": "T1", "stop": "S1", "arr": T0}])[:-7], "truncated"),
        (b"\x1f\x8b\x08\x00garbage", "bad_gzip"),
    ],
)
def test_decode_bad_bodies_raise_classified_errors(body: bytes, kind: str) -> None:
    with pytest.raises(FeedDecodeError) as info:
        decode_trip_updates(body)
    assert info.value.kind == kind


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:xz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return path


def test_read_archive_counts_bad_snapshots_and_keeps_the_rest(tmp_path: Path) -> None:
    good = make_feed(T0, [{"trip": "T1", "stop": "S1", "arr": T0 - 10}])
    members = {"a.pb": good, "b.pb": b"<html>oops</html>", "c.pb": b"", "d.pb": good[:-5]}
    read = read_trip_updates(write_tar(tmp_path / "tu.tar.xz", members))
    assert read.n_snapshots == 1 and len(read.events) == 1
    assert read.failures == {"html": 1, "empty": 1, "truncated": 1}
    assert ("b.pb", "html") in read.failed_files
    folder = tmp_path / "dir"
    folder.mkdir()
    for name, body in members.items():
        (folder / name).write_bytes(body)
    again = read_trip_updates(folder, limit=2)  # a.pb decodes, b.pb fails, then stop
    assert again.n_snapshots == 1 and again.failures == {"html": 1}


def test_a_truncated_archive_keeps_what_was_read_and_flags_the_break(tmp_path: Path) -> None:
    bodies = {
        f"{i:03d}.pb": make_feed(T0 + i, [{"trip": f"T{i}", "stop": "S", "arr": T0}])
        for i in range(400)
    }
    whole = write_tar(tmp_path / "whole.tar.xz", bodies).read_bytes()
    cut = tmp_path / "cut.tar.xz"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    read = read_trip_updates(cut)
    assert read.failures == {"archive_broken": 1}
    assert read.failed_files == [("cut.tar.xz", "archive_broken")]
    assert 0 < read.n_snapshots < 400 and len(read.events) == read.n_snapshots


def test_read_rejects_missing_and_foreign_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_trip_updates(tmp_path / "absent.tar.xz")
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(ValueError, match="neither a tar archive"):
        read_trip_updates(other)


def test_observed_rule_first_report_arrival_over_departure_no_future() -> None:
    snaps = [
        make_feed(T0, [{"trip": "T1", "stop": "S1", "seq": 1, "dep": T0 - 40}]),
        make_feed(T0 + 30, [{"trip": "T1", "stop": "S2", "seq": 2, "arr": T0 + 10}]),
        # later snapshots revise S2's arrival and report its departure: first report wins
        make_feed(T0 + 60, [{"trip": "T1", "stop": "S2", "seq": 2, "arr": T0 + 14}]),
        make_feed(T0 + 90, [{"trip": "T1", "stop": "S2", "seq": 2, "dep": T0 + 50}]),
        # a prediction (time after the snapshot) is not an observation
        make_feed(T0 + 90, [{"trip": "T1", "stop": "S3", "seq": 3, "arr": T0 + 200}]),
        # no header timestamp: the TripUpdate's own timestamp is the reference
        make_feed(None, [{"trip": "T2", "stop": "S1", "seq": 1, "arr": T0 + 5, "ts": T0 + 9}]),
    ]
    events = pd.concat([decode_trip_updates(b) for b in snaps], ignore_index=True)
    table = derive_observed_arrivals(events)
    assert list(table.columns) == list(OBSERVED_COLUMNS)
    obs = table.set_index(["trip_id", "stop_id"])
    assert set(obs.index) == {("T1", "S1"), ("T1", "S2"), ("T2", "S1")}
    s1 = obs.loc[[("T1", "S1")]].iloc[0]
    s2 = obs.loc[[("T1", "S2")]].iloc[0]
    assert s1["source"] == "departure"
    assert s1["observed_time"] == pd.Timestamp(T0 - 40, unit="s", tz="UTC")
    assert s2["source"] == "arrival"
    assert s2["observed_time"] == pd.Timestamp(T0 + 10, unit="s", tz="UTC")
    assert s2["first_seen"] == pd.Timestamp(T0 + 30, unit="s", tz="UTC")
    assert s2["n_reports"] == 2 and s2["spread_s"] == 4.0
    assert obs.loc[("T2", "S1"), "observed_time"] == pd.Timestamp(T0 + 5, unit="s", tz="UTC")


def test_observed_rule_keeps_loop_visits_apart() -> None:
    snap = make_feed(
        T0 + 600,
        [
            {"trip": "L", "stop": "HUB", "seq": 1, "arr": T0},
            {"trip": "L", "stop": "HUB", "seq": 9, "arr": T0 + 500},
        ],
    )
    obs = derive_observed_arrivals(decode_trip_updates(snap))
    assert sorted(obs["stop_sequence"].tolist()) == [1, 9]


@pytest.mark.real_data
def test_real_auckland_archive_first_members(shared_data: Path) -> None:
    path = shared_data / "auckland-2019-08-13" / "trip_updates.tar.xz"
    read = read_trip_updates(path, limit=60)
    assert read.n_snapshots == 60 and read.failures == {}
    events = read.events
    assert len(events) > 1000
    # Auckland: one update per trip and snapshot, either an arrival or a departure
    assert not (events["arrival_time"].notna() & events["departure_time"].notna()).any()
    assert events["trip_id"].str.endswith("_v82.14").all()
    assert events["stop_id"].str.endswith("_v82.14").all()
    obs = derive_observed_arrivals(events)
    assert len(obs) > 500
    assert obs.duplicated(["trip_id", "stop_id", "stop_sequence"]).sum() == 0
    assert (obs["observed_time"] <= obs["first_seen"]).all()
    assert set(obs["source"]) == {"arrival", "departure"}
    delays = events["arrival_delay_s"].dropna()
    assert delays.abs().median() < 1800  # delays are seconds, not garbage
