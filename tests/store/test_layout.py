from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from transitnet.store.layout import (
    InvalidFeedIdError,
    check_feed_id,
    iter_raw_files,
    list_partitions,
    new_part_name,
    partition_dir,
    raw_dir,
    raw_stem,
    reserve_raw_stem,
    state_path,
)

T = datetime(2019, 8, 13, 23, 59, 58, tzinfo=UTC)


@pytest.mark.parametrize("feed_id", ["akl", "tfnsw-bus", "a.b_c-9", "X" * 128])
def test_valid_feed_ids(feed_id: str) -> None:
    assert check_feed_id(feed_id) == feed_id


@pytest.mark.parametrize("feed_id", ["", "a/b", "a=b", "a b", ".hidden", "a..b", "x" * 129, "é"])
def test_invalid_feed_ids(feed_id: str) -> None:
    with pytest.raises(InvalidFeedIdError, match="invalid feed id"):
        check_feed_id(feed_id)


def test_raw_paths_use_our_utc_clock(tmp_path: Path) -> None:
    nz = timezone(timedelta(hours=12))
    local = T.astimezone(nz)  # 2019-08-14 11:59:58 in NZ: still the 13th, hour 23 in UTC
    assert raw_dir(tmp_path, "akl", local) == tmp_path / "raw/feed=akl/date=2019-08-13/hour=23"
    assert raw_stem("akl", local) == "akl-2019-08-13T23-59-58Z"


def test_naive_time_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="naive"):
        raw_dir(tmp_path, "akl", datetime(2019, 8, 13))  # noqa: DTZ001


def test_reserved_stems_stay_unique_and_sorted(tmp_path: Path) -> None:
    stems = []
    for suffix in (".pb", ".meta.json", ".body"):
        stem = reserve_raw_stem(tmp_path, "akl", T)
        stem.parent.mkdir(parents=True, exist_ok=True)
        stem.with_name(stem.name + suffix).write_bytes(b"x")
        stems.append(stem.name)
    assert stems == ["akl-2019-08-13T23-59-58Z", "akl-2019-08-13T23-59-58Z_1",
                     "akl-2019-08-13T23-59-58Z_2"]  # fmt: skip
    later = reserve_raw_stem(tmp_path, "akl", T + timedelta(seconds=1))
    later.parent.mkdir(parents=True, exist_ok=True)
    later.with_name(later.name + ".pb").write_bytes(b"y")
    names = [p.name for p in iter_raw_files(tmp_path, "akl")]
    assert names == ["akl-2019-08-13T23-59-58Z.pb", "akl-2019-08-13T23-59-59Z.pb"]
    assert sorted([*stems, later.name]) == [*stems, later.name]


def test_partitions_and_parts(tmp_path: Path) -> None:
    folder = partition_dir(tmp_path, "positions", "akl", date(2019, 8, 13))
    assert folder == tmp_path / "positions/feed=akl/date=2019-08-13"
    folder.mkdir(parents=True)
    (tmp_path / "positions/feed=akl/date=garbage").mkdir()
    assert list_partitions(tmp_path, "positions") == [("akl", date(2019, 8, 13), folder)]
    with pytest.raises(ValueError, match="unknown"):
        partition_dir(tmp_path, "elsewhere", "akl", date(2019, 8, 13))
    a, b = new_part_name(T), new_part_name(T)
    assert a != b and a.startswith("part-20190813T235958-") and a.endswith(".parquet")
    assert state_path(tmp_path, "akl") == tmp_path / "state/akl.json"
