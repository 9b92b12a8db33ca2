from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from transitnet.schema import POSITIONS_SCHEMA
from transitnet.store.compact import (
    CompactionLockedError,
    compact_store,
    compaction_lock,
)
from transitnet.store.layout import COMPACTED_NAME
from transitnet.store.log import FetchLogRow, read_fetch_log, write_fetch_log
from transitnet.store.parquet import positions_dataset, read_positions, write_positions

T = datetime(2024, 3, 1, 8, tzinfo=UTC)
DAY = date(2024, 3, 1)
LATER = date(2024, 3, 2)


def tick(n: int, vehicles: dict[str, int]) -> pa.Table:
    """One snapshot fetched at T + 30 s × n; vehicles map id → raw vehicle timestamp."""
    fetched = T + timedelta(seconds=30 * n)
    recs: list[dict[str, Any]] = [
        {"feed_id": "f", "entity_id": v, "vehicle_id": v, "vehicle_timestamp_raw": ts,
         "vehicle_timestamp": datetime.fromtimestamp(ts, UTC), "fetched_at": fetched,
         "trip_id": "t", "latitude": float(ts)}
        for v, ts in vehicles.items()
    ]  # fmt: skip
    names = list(recs[0])
    return pa.Table.from_pylist(recs, schema=pa.schema([POSITIONS_SCHEMA.field(c) for c in names]))


def fill(store: Path) -> None:
    base = int(T.timestamp())
    write_positions(store, tick(0, {"a": base, "b": base}))
    write_positions(store, tick(1, {"a": base, "b": base + 25}))  # a repeats its fix
    write_positions(store, tick(2, {"a": base + 40, "b": base + 25}))


def folder(store: Path) -> Path:
    return store / "positions/feed=f/date=2024-03-01"


def test_compaction_merges_dedups_sorts_and_is_idempotent(tmp_path: Path) -> None:
    fill(tmp_path)
    before = read_positions(tmp_path)
    assert len(read_positions(tmp_path, dedup=False)) == 6 and len(before) == 4
    (result,) = compact_store(tmp_path, before=LATER, kinds=["positions"])
    assert (result.parts_merged, result.rows_in, result.rows_out) == (3, 6, 4)
    assert [p.name for p in folder(tmp_path).iterdir()] == [COMPACTED_NAME]
    after = read_positions(tmp_path, dedup=False)
    assert list(zip(after["vehicle_id"], after["latitude"], strict=True)) == sorted(
        zip(before["vehicle_id"], before["latitude"], strict=True)
    )
    glob = f"{tmp_path}/positions/**/*.parquet"
    con = duckdb.connect()
    assert con.execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchall() == [(4,)]
    stamp = (folder(tmp_path) / COMPACTED_NAME).stat().st_mtime_ns
    (again,) = compact_store(tmp_path, before=LATER, kinds=["positions"])
    assert again.parts_merged == 0 and again.error is None
    assert (folder(tmp_path) / COMPACTED_NAME).stat().st_mtime_ns == stamp


def test_new_parts_join_the_compacted_file(tmp_path: Path) -> None:
    fill(tmp_path)
    compact_store(tmp_path, before=LATER)
    base = int(T.timestamp())
    write_positions(tmp_path, tick(3, {"a": base + 40, "c": base + 90}))  # a repeats again
    (result,) = compact_store(tmp_path, before=LATER, kinds=["positions"])
    assert (result.parts_merged, result.rows_in, result.rows_out) == (1, 6, 5)
    assert len(read_positions(tmp_path, dedup=False)) == 5


def test_crash_between_publish_and_delete_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path,
) -> None:
    fill(tmp_path)
    aside = tmp_path / "aside"
    shutil.copytree(folder(tmp_path), aside)
    compact_store(tmp_path, before=LATER)
    for part in aside.iterdir():  # the parts "survive" as if the process died before deleting
        shutil.copy(part, folder(tmp_path) / part.name)
    assert len(list(folder(tmp_path).iterdir())) == 4
    assert len(read_positions(tmp_path, dedup=False)) == 4
    assert positions_dataset(tmp_path).count_rows() == 4
    (result,) = compact_store(tmp_path, before=LATER, kinds=["positions"])
    assert result.stale_removed == 3 and result.parts_merged == 0
    assert [p.name for p in folder(tmp_path).iterdir()] == [COMPACTED_NAME]
    assert len(read_positions(tmp_path, dedup=False)) == 4


def test_open_days_are_left_alone_by_default(tmp_path: Path) -> None:
    today = datetime.now(UTC).replace(microsecond=0)
    now_tick = tick(0, {"a": int(today.timestamp())})
    col = now_tick.schema.get_field_index("fetched_at")
    ts_type = POSITIONS_SCHEMA.field("fetched_at").type
    write_positions(tmp_path, now_tick.set_column(col, "fetched_at", pa.array([today], ts_type)))
    fill(tmp_path)
    results = compact_store(tmp_path, kinds=["positions"])
    assert [r.day for r in results] == [DAY]


def test_unreadable_part_leaves_the_partition_untouched(tmp_path: Path) -> None:
    fill(tmp_path)
    (folder(tmp_path) / "part-zz-broken.parquet").write_bytes(b"PAR1 not parquet")
    (result,) = compact_store(tmp_path, before=LATER, kinds=["positions"])
    assert result.error is not None and result.rows_out == 0
    assert len(list(folder(tmp_path).iterdir())) == 4


def test_one_compaction_at_a_time(tmp_path: Path) -> None:
    with compaction_lock(tmp_path), pytest.raises(CompactionLockedError):
        compact_store(tmp_path)


def test_fetch_log_is_compacted_too(tmp_path: Path) -> None:
    for n in range(3):
        write_fetch_log(tmp_path, [FetchLogRow("f", 1, T + timedelta(seconds=30 * n), "ok")])
    results = compact_store(tmp_path, before=LATER)
    assert [(r.kind, r.parts_merged) for r in results] == [("fetch_log", 3)]
    assert len(read_fetch_log(tmp_path)) == 3
    assert len(list((tmp_path / "fetch_log/feed=f/date=2024-03-01").iterdir())) == 1
