from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from transitnet.schema import FETCH_LOG_SCHEMA
from transitnet.store.log import (
    FETCH_LOG_SCHEMA_EXT,
    FetchLogRow,
    fetch_log_dataset,
    read_fetch_log,
    write_fetch_log,
)

T = datetime(2024, 3, 1, 23, 59, 59, tzinfo=UTC)


def test_rows_round_trip_and_partition_by_start_date(tmp_path: Path) -> None:
    rows = [
        FetchLogRow("f", 1, T, "http_error", http_status=503, error_class="http_503"),
        FetchLogRow("f", 2, T + timedelta(seconds=2), "ok", http_status=200, rows=5,
                    rules=["E017", "W007"], sha256="ab", slippage_s=0.25),
    ]  # fmt: skip
    paths = write_fetch_log(tmp_path, rows)
    assert sorted(p.parent.name for p in paths) == ["date=2024-03-01", "date=2024-03-02"]
    df = read_fetch_log(tmp_path)
    assert list(df["attempt"]) == [1, 2] and list(df["outcome"]) == ["http_error", "ok"]
    assert list(df.loc[1, "rules"]) == ["E017", "W007"] and df.loc[1, "slippage_s"] == 0.25
    assert df.loc[0, "error_class"] == "http_503" and df.loc[0, "started_at"] == T
    assert fetch_log_dataset(tmp_path, dates=[date(2024, 3, 2)]).count_rows() == 1


def test_extended_schema_keeps_the_base_columns() -> None:
    assert FETCH_LOG_SCHEMA_EXT.names[: len(FETCH_LOG_SCHEMA)] == FETCH_LOG_SCHEMA.names


def test_bad_rows_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="naive"):
        write_fetch_log(tmp_path, [FetchLogRow("f", 1, datetime(2024, 1, 1), "ok")])  # noqa: DTZ001
    with pytest.raises(ValueError, match="missing required"):
        write_fetch_log(tmp_path, pa.table({"feed_id": ["f"]}))
    assert not (tmp_path / "fetch_log").exists()
