from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from transitnet.realtime.decode import decode_vehicle_positions
from transitnet.realtime.validate import FeedValidator
from transitnet.schema import FLAG_COLUMNS, POSITIONS_SCHEMA
from transitnet.store.parquet import (
    conform_positions,
    positions_dataset,
    read_positions,
    write_positions,
)

T1 = datetime(2024, 3, 1, 23, 59, 50, tzinfo=UTC)
T2 = datetime(2024, 3, 2, 0, 0, 20, tzinfo=UTC)


def make_table(records: list[dict[str, Any]]) -> pa.Table:
    names = list(dict.fromkeys(k for r in records for k in r))
    schema = pa.schema([POSITIONS_SCHEMA.field(n) for n in names])
    return pa.Table.from_pylist(records, schema=schema)


def fix(vehicle: str, ts: int, fetched: datetime | None, **kw: Any) -> dict[str, Any]:
    vts = datetime.fromtimestamp(ts, UTC)
    rec = {"feed_id": "f", "entity_id": vehicle, "vehicle_id": vehicle, "trip_id": "t1",
           "vehicle_timestamp": vts, "vehicle_timestamp_raw": ts, "fetched_at": fetched,
           "latitude": -36.8, "longitude": 174.7}  # fmt: skip
    rec.update(kw)
    return rec


def test_partitions_by_fetch_date_else_vehicle_date(tmp_path: Path) -> None:
    backfill_ts = int(datetime(2024, 2, 29, 12, tzinfo=UTC).timestamp())
    table = make_table([fix("a", 1709337580, T1), fix("a", 1709337610, T2),
                        fix("b", backfill_ts, None)])  # fmt: skip
    paths = write_positions(tmp_path, table)
    dirs = sorted(p.parent.name for p in paths)
    assert dirs == ["date=2024-02-29", "date=2024-03-01", "date=2024-03-02"]
    for path in paths:
        assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"
        assert pq.read_schema(path).remove_metadata() == POSITIONS_SCHEMA


def test_missing_flag_columns_become_null_and_values_survive(tmp_path: Path) -> None:
    write_positions(tmp_path, make_table([fix("a", 1709337580, T1, bearing=90.0)]))
    df = read_positions(tmp_path)
    assert list(df.columns) == POSITIONS_SCHEMA.names
    assert df[FLAG_COLUMNS].isna().all().all()
    row = df.iloc[0]
    assert row["bearing"] == 90.0 and pd.isna(row["speed"]) and row["fetched_at"] == T1
    assert str(df["vehicle_timestamp"].dtype) == "datetime64[us, UTC]"
    assert str(df["direction_id"].dtype) == "Int32" and str(df["flag_e026"].dtype) == "boolean"


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"feed_id": "f", "bogus": 1}], "unknown columns"),
        ([{"entity_id": "x", "fetched_at": T1}], "missing required"),
        ([fix("a", 1, None, vehicle_timestamp=None)], "cannot choose a date"),
        ([fix("a", 1, T1, feed_id="bad/id")], "invalid feed id"),
        ([fix("a", 1, T1, feed_id=None)], "nulls"),
    ],
)
def test_bad_tables_are_clear_errors_and_write_nothing(
    tmp_path: Path, records: list[dict[str, Any]], message: str
) -> None:
    table = (
        pa.table({"feed_id": ["f"], "bogus": [1]}) if "bogus" in records[0] else make_table(records)
    )
    with pytest.raises(ValueError, match=message):
        write_positions(tmp_path, table)
    assert not (tmp_path / "positions").exists()


def test_naive_and_uncastable_columns_are_rejected(tmp_path: Path) -> None:
    naive = pa.table({"feed_id": ["f"], "fetched_at": pa.array([T1.replace(tzinfo=None)])})
    with pytest.raises(ValueError, match="naive"):
        write_positions(tmp_path, naive)
    text = pa.table({"feed_id": ["f"], "fetched_at": [T1], "direction_id": ["north"]})
    with pytest.raises(ValueError, match="direction_id"):
        write_positions(tmp_path, text)


def test_casts_compatible_types() -> None:
    table = pa.table({"feed_id": ["f"], "direction_id": pa.array([1], pa.int64()),
                      "fetched_at": pa.array([T1], pa.timestamp("ns", tz="UTC"))})  # fmt: skip
    out = conform_positions(table)
    assert out.schema == POSITIONS_SCHEMA and out.column("direction_id").to_pylist() == [1]


def test_read_filters(tmp_path: Path) -> None:
    write_positions(tmp_path, make_table([fix("a", 1709337580, T1), fix("b", 1709337610, T2)]))
    write_positions(tmp_path, make_table([fix("c", 1709337580, T1, feed_id="g")]))
    assert len(read_positions(tmp_path)) == 3
    assert list(read_positions(tmp_path, feed_ids=["g"])["vehicle_id"]) == ["c"]
    assert list(read_positions(tmp_path, dates=[date(2024, 3, 2)])["vehicle_id"]) == ["b"]
    cols = read_positions(tmp_path, columns=["vehicle_id"], filter=pc.field("vehicle_id") == "a")
    assert list(cols.columns) == ["vehicle_id"] and list(cols["vehicle_id"]) == ["a"]
    with pytest.raises(ValueError, match="unknown columns"):
        read_positions(tmp_path, columns=["nope"])
    assert read_positions(tmp_path / "empty").empty


@pytest.mark.real_data
def test_real_snapshot_round_trips_through_every_reader(tmp_path: Path, shared_data: Path) -> None:
    body = (shared_data / "feeds/tfnsw-2020-09-01/GTFS_VP2020-09-01_08_00.pb.gz").read_bytes()
    fetched = datetime(2020, 9, 1, 8, 0, 5, tzinfo=UTC)
    decoded = decode_vehicle_positions(body, feed_id="tfnsw", fetched_at=fetched)
    validated = FeedValidator("tfnsw").validate(decoded, now=fetched, sha256="x").positions
    write_positions(tmp_path, validated)
    root = tmp_path / "positions"

    ours = read_positions(tmp_path, dedup=False)
    expected = validated.to_pandas(types_mapper={pa.int32(): pd.Int32Dtype()}.get)
    assert len(ours) == validated.num_rows > 4000
    pd.testing.assert_series_equal(ours["vehicle_id"], expected["vehicle_id"], check_dtype=False)
    assert ours["latitude"].equals(expected["latitude"])

    arrow = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    assert arrow.num_rows == validated.num_rows
    assert (
        arrow.select(validated.schema.names)
        .cast(POSITIONS_SCHEMA)
        .equals(positions_dataset(tmp_path).to_table(columns=POSITIONS_SCHEMA.names))
    )
    assert set(arrow.column("feed").to_pylist()) == {"tfnsw"}
    assert len(pd.read_parquet(root)) == validated.num_rows

    con = duckdb.connect()
    got = con.execute(
        f"SELECT feed, date, count(*), count(DISTINCT vehicle_id), typeof(min(vehicle_timestamp)) "
        f"FROM read_parquet('{root}/**/*.parquet', hive_partitioning = true) GROUP BY ALL"
    ).fetchall()
    assert got[0][:4] == ("tfnsw", date(2020, 9, 1), validated.num_rows,
                          pc.count_distinct(validated.column("vehicle_id")).as_py())  # fmt: skip
    assert got[0][4] == "TIMESTAMP WITH TIME ZONE"
