from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from transitnet.schema import POSITIONS_SCHEMA
from transitnet.store.dedup import (
    FORGET_AFTER_S,
    compute_vehicle_key,
    dedup_positions,
    filter_new_fixes,
    sort_positions,
)
from transitnet.store.parquet import conform_positions

T = datetime(2024, 3, 1, 8, tzinfo=UTC)


def snap(
    rows: list[dict[str, Any]], fetched: datetime | None, source: str | None = None
) -> pa.Table:
    recs = []
    for r in rows:
        rec = {"feed_id": "f", "entity_id": r.get("entity", r.get("vid")), "fetched_at": fetched,
               "source_file": source, "trip_id": "t", "start_time": "08:00:00"}  # fmt: skip
        rec.update({"vehicle_id": r.get("vid"), "vehicle_label": r.get("label")})
        rec.update({k: v for k, v in r.items() if k not in ("vid", "label", "entity", "ts")})
        ts = r.get("ts")
        rec["vehicle_timestamp_raw"] = ts
        rec["vehicle_timestamp"] = datetime.fromtimestamp(ts, UTC) if ts is not None else None
        recs.append(rec)
    names = list(dict.fromkeys(k for r in recs for k in r))
    schema = pa.schema([POSITIONS_SCHEMA.field(n) for n in names])
    return conform_positions(pa.Table.from_pylist(recs, schema=schema))


def vids(table: pa.Table) -> list[Any]:
    return list(zip(table.column("vehicle_id").to_pylist(),
                    table.column("vehicle_timestamp_raw").to_pylist(), strict=True))  # fmt: skip


def test_vehicle_key_falls_back_to_label_then_entity() -> None:
    table = snap([{"vid": "7"}, {"vid": "", "label": "L7"}, {"vid": None, "entity": "e7"},
                  {"vid": None, "label": None, "entity": ""}], T)  # fmt: skip
    assert compute_vehicle_key(table).to_pylist() == ["id:7", "label:L7", "entity:e7", None]


def test_repeated_fixes_of_later_snapshots_are_dropped() -> None:
    s1 = snap([{"vid": "a", "ts": 100}, {"vid": "b", "ts": 100}], T)
    s2 = snap([{"vid": "a", "ts": 100}, {"vid": "b", "ts": 130}],
              T + timedelta(seconds=30))  # fmt: skip
    out = dedup_positions(pa.concat_tables([s2, s1]))  # input order does not matter
    assert sorted(vids(out)) == [("a", 100), ("b", 100), ("b", 130)]
    kept_a = out.filter(pa.compute.equal(out.column("vehicle_id"), "a"))
    assert kept_a.column("fetched_at").to_pylist() == [T]  # the earliest snapshot wins


def test_rows_of_one_snapshot_never_drop_each_other() -> None:
    dup = [{"vid": "claimed", "entity": "first", "ts": 100},
           {"vid": "claimed", "entity": "second", "ts": 100}]  # fmt: skip
    table = snap(dup, T)
    assert dedup_positions(table).num_rows == 2  # E052 duplicates are flagged, not dropped
    assert dedup_positions(pa.concat_tables([table, table])).num_rows == 2  # stored twice


def test_rows_without_timestamp_or_key_are_kept() -> None:
    rows = [{"vid": "a"}, {"vid": None, "label": None, "entity": "", "ts": 5}]
    s1, s2 = snap(rows, T), snap(rows, T + timedelta(seconds=30))
    assert dedup_positions(pa.concat_tables([s1, s2])).num_rows == 4


def test_trip_or_start_time_change_is_a_new_fix() -> None:
    s1 = snap([{"vid": "a", "ts": 100}], T)
    s2 = snap([{"vid": "a", "ts": 100, "trip_id": "t2"}], T + timedelta(seconds=1))
    assert dedup_positions(pa.concat_tables([s1, s2])).num_rows == 2


def test_backfill_rows_without_snapshot_identity_dedup_in_order() -> None:
    rows = [{"vid": "a", "ts": 100, "latitude": 1.0},
            {"vid": "a", "ts": 100, "latitude": 2.0},
            {"vid": "a", "ts": 160}]  # fmt: skip
    out = dedup_positions(snap(rows, None))
    assert out.column("latitude").to_pylist() == [1.0, None]


def test_sort_by_vehicle_and_time() -> None:
    table = snap([{"vid": "b", "ts": 5}, {"vid": "a", "ts": 9},
                  {"vid": "a", "ts": 3}], T)  # fmt: skip
    assert vids(sort_positions(table)) == [("a", 3), ("a", 9), ("b", 5)]


def test_filter_new_fixes_against_previous_snapshot() -> None:
    s1 = snap([{"vid": "a", "ts": 100}, {"vid": "b", "ts": 100},
               {"vid": "c"}], T)  # fmt: skip
    new1, keys = filter_new_fixes(s1, {})
    assert new1.num_rows == 3 and keys == {
        "id:a": [100, "t", "08:00:00"],
        "id:b": [100, "t", "08:00:00"],
    }
    s2 = snap([{"vid": "a", "ts": 100}, {"vid": "b", "ts": 130},
               {"vid": "c"}], T + timedelta(seconds=30))  # fmt: skip
    new2, keys = filter_new_fixes(s2, keys)
    assert vids(new2) == [("b", 130), ("c", None)] and keys["id:b"][0] == 130


def test_filter_new_fixes_forgets_long_gone_vehicles() -> None:
    old = {"id:gone": [100, None, None], "id:a": [100 + FORGET_AFTER_S, None, None]}
    table = snap([{"vid": "a", "ts": 200 + FORGET_AFTER_S}], T)
    _, keys = filter_new_fixes(table, old)
    assert set(keys) == {"id:a"}
