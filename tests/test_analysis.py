from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transitnet import analysis as an
from transitnet import analysis_quality as aq
from transitnet.realtime.encode import encode_feed_message
from transitnet.store.archive import archive_body
from transitnet.store.importers import import_paths
from transitnet.store.parquet import write_positions

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z


def _snapshot(header: int, fixes: list[tuple[str, int, float]]) -> bytes:
    """One encoded snapshot: (vehicle id, vehicle timestamp, latitude) per row."""
    table = pa.table(
        {
            "vehicle_id": [v for v, _, _ in fixes],
            "trip_id": [f"trip-{v}" for v, _, _ in fixes],
            "vehicle_timestamp_raw": pa.array([t for _, t, _ in fixes], pa.uint64()),
            "latitude": [lat for _, _, lat in fixes],
            "longitude": [8.0] * len(fixes),
        }
    )
    return encode_feed_message(table, header_timestamp_raw=header, version="2.0", incrementality=0)


def _write_snapshots(folder: Path) -> list[Path]:
    """Three snapshots 30 s apart; vehicle b re-publishes its first fix in the second one."""
    folder.mkdir(parents=True, exist_ok=True)
    bodies = {
        "feed_0000.pb": _snapshot(T0, [("a", T0 - 10, 46.0), ("b", T0 - 20, 46.1)]),
        "feed_0030.pb": _snapshot(T0 + 30, [("a", T0 + 25, 46.001), ("b", T0 - 20, 46.1)]),
        "feed_0060.pb": _snapshot(T0 + 60, [("a", T0 + 55, 46.002), ("b", T0 + 50, 46.1)]),
    }
    paths = []
    for name, body in bodies.items():
        (folder / name).write_bytes(body)
        paths.append(folder / name)
    return paths


def _positions(times: list[str]) -> pa.Table:
    stamps = pd.to_datetime(times, utc=True).astype("datetime64[us, UTC]")
    return pa.table(
        {
            "feed_id": ["f"] * len(times),
            "vehicle_id": [f"v{i}" for i in range(len(times))],
            "trip_id": ["t"] * len(times),
            "vehicle_timestamp": pa.array(stamps),
            "latitude": [46.0] * len(times),
            "longitude": [8.0] * len(times),
        }
    )


def test_read_feed_positions_cuts_a_local_time_range(tmp_path: Path) -> None:
    # fixes around local midnight in Auckland fall in two UTC partitions
    write_positions(
        tmp_path,
        _positions(
            ["2019-08-12T11:50Z", "2019-08-12T12:10Z", "2019-08-12T12:30Z", "2019-08-13T12:30Z"]
        ),
    )
    out = an.read_feed_positions(
        tmp_path,
        "f",
        "2019-08-13 00:00",
        "2019-08-13 00:20",
        timezone="Pacific/Auckland",
        columns=["vehicle_id"],
    )
    assert out.columns.tolist() == ["vehicle_id"]
    assert out["vehicle_id"].tolist() == ["v1"]
    everything = an.read_feed_positions(tmp_path, "f")
    assert everything["vehicle_id"].tolist() == ["v0", "v1", "v2", "v3"]  # time order
    assert str(everything["vehicle_timestamp"].dtype) == "datetime64[us, UTC]"


def test_read_feed_positions_errors(tmp_path: Path) -> None:
    write_positions(tmp_path, _positions(["2019-08-12T11:50Z"]))
    with pytest.raises(ValueError, match=r"feeds there: \['f'\]"):
        an.read_feed_positions(tmp_path, "other")
    with pytest.raises(ValueError, match="ends"):
        an.read_feed_positions(tmp_path, "f", "2019-08-13", "2019-08-12")
    with pytest.raises(ValueError, match="not a time"):
        an.to_utc_timestamp("NaT")


def test_read_matched_positions_needs_matching_first(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="transitnet match"):
        an.read_matched_positions(tmp_path, "f")
    folder = tmp_path / "matched" / "feed=f" / "date=2019-08-12"
    folder.mkdir(parents=True)
    frame = pa.Table.from_pandas(
        pd.DataFrame(
            {
                "vehicle_timestamp": pd.to_datetime(
                    ["2019-08-12T10:00Z", "2019-08-12T09:00Z"], utc=True
                ),
                "dist_along_m": [10.0, 5.0],
            }
        ),
        preserve_index=False,
    )
    pq.write_table(frame, folder / "part-matched.parquet")
    out = an.read_matched_positions(tmp_path, "f", end="2019-08-12T09:30Z")
    assert out["dist_along_m"].tolist() == [5.0]


def test_extract_snapshots_from_a_tar_by_name_range(tmp_path: Path) -> None:
    sources = _write_snapshots(tmp_path / "src")
    tar_path = tmp_path / "day.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        info = tarfile.TarInfo("notes.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
        for path in sources:
            tar.add(path, arcname=f"day/{path.name}")
    written = an.extract_snapshots(tar_path, tmp_path / "out", first="feed_0030", stop="feed_0060")
    assert [p.name for p in written] == ["feed_0030.pb"]
    assert written[0].read_bytes() == sources[1].read_bytes()
    from_folder = an.extract_snapshots(tmp_path / "src", tmp_path / "out2", first="feed_0030")
    assert [p.name for p in from_folder] == ["feed_0030.pb", "feed_0060.pb"]


def test_extract_snapshots_bad_inputs(tmp_path: Path) -> None:
    sources = _write_snapshots(tmp_path / "src")
    with pytest.raises(FileNotFoundError):
        an.extract_snapshots(tmp_path / "missing.tar", tmp_path / "out")
    with pytest.raises(ValueError, match="not a tar"):
        an.extract_snapshots(sources[0], tmp_path / "out")
    with pytest.raises(ValueError, match="no snapshot"):
        an.extract_snapshots(tmp_path / "src", tmp_path / "out", first="zzz")
    tar_path = tmp_path / "cut.tar"
    with tarfile.open(tar_path, "w") as tar:
        for path in sources:
            tar.add(path, arcname=path.name)
    data = tar_path.read_bytes()
    tar_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        an.extract_snapshots(tar_path, tmp_path / "out")


def test_read_raw_snapshots_keeps_republished_fixes_and_flags_bad_ones(tmp_path: Path) -> None:
    _write_snapshots(tmp_path / "src")
    store = tmp_path / "store"
    result = import_paths(store, "f", [tmp_path / "src"], progress=False)
    assert result.rows_read == 6 and result.rows_written == 5  # b's repeat is stored once
    raw = an.read_raw_snapshots(store, "f")
    assert len(raw.rows) == 6 and raw.failed == []
    assert raw.rows["fetched_at"].isna().all()  # a recorded archive has no fetch clock
    # a raw file that does not decode is reported, not dropped silently
    broken = min((store / "raw").rglob("*.pb"))
    broken.write_bytes(b"<html>busy</html>")
    again = an.read_raw_snapshots(store, "f")
    assert len(again.rows) == 4
    assert len(again.failed) == 1 and again.failed[0][1] == "html"
    late = an.read_raw_snapshots(store, "f", start=pd.Timestamp(T0 + 45, unit="s", tz="UTC"))
    assert len(late.rows) == 2
    nothing = an.read_raw_snapshots(store, "f", start="2030-01-01")
    assert nothing.rows.empty and "vehicle_timestamp" in nothing.rows.columns


def test_raw_snapshots_of_a_polled_feed_carry_the_fetch_clock(tmp_path: Path) -> None:
    # archived by a live poll (no meta written here: the clock comes from the file name)
    for offset in (0, 30):
        body = _snapshot(T0 + offset, [("a", T0 + offset - 12, 46.0)])
        when = pd.Timestamp(T0 + offset + 5, unit="s", tz="UTC").to_pydatetime()
        archive_body(tmp_path, "live", when, body, snapshot=True)
    raw = an.read_raw_snapshots(tmp_path, "live")
    assert raw.rows["fetched_at"].notna().all()
    freshness = aq.compute_freshness(raw.rows)
    assert freshness["clock"].tolist() == ["fetched_at", "fetched_at"]
    assert freshness["header_age_s"].tolist() == [5.0, 5.0]
    assert freshness["vehicle_age_p50_s"].tolist() == [17.0, 17.0]
    assert freshness["meets_guideline"].tolist() == [True, True]


def test_resolve_paths(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    with pytest.raises(FileNotFoundError, match="README"):
        an.resolve_paths(tmp_path / "data", None, "x")
    (tmp_path / "data" / "README.md").write_text("data")
    data, work = an.resolve_paths(tmp_path / "data", tmp_path / "w", "x")
    assert data == (tmp_path / "data").resolve() and work.is_dir()
    _, temporary = an.resolve_paths(tmp_path / "data", None, "x")
    assert temporary.is_dir() and temporary.name.startswith("transitnet-x-")
    temporary.rmdir()


@pytest.mark.real_data
def test_auckland_snapshots_freshness_and_contents(shared_data: Path, tmp_path: Path) -> None:
    archive = shared_data / "auckland-2019-08-13" / "vehicle_positions.tar.xz"
    an.extract_snapshots(archive, tmp_path / "snaps", stop="vehicle_locations_20190813050300")
    result = import_paths(tmp_path / "store", "akl", [tmp_path / "snaps"], progress=False)
    assert result.snapshots == 6 and result.ok
    positions = an.read_feed_positions(
        tmp_path / "store",
        "akl",
        "2019-08-13 04:00",
        "2019-08-13 06:00",
        timezone="Pacific/Auckland",
    )
    assert len(positions) == result.rows_written
    contents = aq.summarise_contents(positions)
    assert contents.loc["speed", "set_share"] == 0.0  # Auckland never sends speed
    assert 0.0 < contents.loc["bearing", "set_share"] < 1.0
    flags = aq.summarise_flags(positions)
    assert flags.loc["E039", "share"] == 1.0  # is_deleted set in a FULL_DATASET feed
    assert flags.loc["E003", "evaluated"] == 0  # no static feed given
    raw = an.read_raw_snapshots(tmp_path / "store", "akl")
    assert len(raw.rows) == result.rows_read
    freshness = aq.compute_freshness(raw.rows)
    assert len(freshness) == 6 and (freshness["clock"] == "header_timestamp").all()
    assert freshness["header_age_s"].isna().all()
    assert freshness["republished_share"].iloc[1:].gt(0).all()  # unchanged fixes re-sent
