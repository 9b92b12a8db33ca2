"""The fetch log: one row per fetch ATTEMPT, failures included (attempts == rows).

Stored like positions: ``fetch_log/feed=<id>/date=<UTC date of started_at>/part-*.parquet``,
one file per tick, merged daily by compaction.

Schema: :data:`transitnet.schema.FETCH_LOG_SCHEMA`, whose last columns are

- ``rules`` (list<string>): snapshot-level validator rules raised (E017, W007, …);
- ``rows_written`` (int64): rows stored after row dedup (``rows`` counts decoded rows);
- ``slippage_s`` (float64): attempt-1 start minus the scheduled tick;
- ``header_age_s`` / ``vehicle_age_p90_s`` (float64): freshness per Cal-ITP
  (fetch time - header timestamp; p90 over rows of fetch time - vehicle timestamp);
- ``final_url`` (string): URL after redirects, secrets redacted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from transitnet.schema import FETCH_LOG_SCHEMA
from transitnet.store.layout import FETCH_LOG_DIR, to_utc
from transitnet.store.parquet import (
    compute_partition_dates,
    conform_table,
    list_table_files,
    open_dataset,
    to_pandas,
    write_partitioned,
)

#: The stored fetch-log schema (kept under this name for existing imports).
FETCH_LOG_SCHEMA_EXT = FETCH_LOG_SCHEMA


@dataclass
class FetchLogRow:
    """One fetch attempt (see the module docstring for the columns)."""

    feed_id: str
    attempt: int
    started_at: datetime
    outcome: str
    scheduled_tick: datetime | None = None
    duration_s: float | None = None
    http_status: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    header_timestamp: datetime | None = None
    error_class: str | None = None
    error: str | None = None
    raw_path: str | None = None
    rows: int | None = None
    rules: list[str] = field(default_factory=list)
    rows_written: int | None = None
    slippage_s: float | None = None
    header_age_s: float | None = None
    vehicle_age_p90_s: float | None = None
    final_url: str | None = None


def build_fetch_log_table(rows: Sequence[FetchLogRow]) -> pa.Table:
    """Rows → a table with :data:`FETCH_LOG_SCHEMA_EXT` columns.

    Raises:
        ValueError: for naive datetimes or values that do not fit the schema.
    """
    records = []
    for row in rows:
        rec = dataclasses.asdict(row)
        for key in ("started_at", "scheduled_tick", "header_timestamp"):
            if rec[key] is not None:
                rec[key] = to_utc(rec[key])
        records.append(rec)
    try:
        return pa.Table.from_pylist(records, schema=FETCH_LOG_SCHEMA_EXT)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"fetch log rows do not fit the schema: {exc}") from exc


def write_fetch_log(
    store: Path, rows: Sequence[FetchLogRow] | pa.Table, *, now: datetime | None = None
) -> list[Path]:
    """Append attempts to the fetch log: one new part per (feed, UTC date of started_at).

    Columns in (for a table): a subset of :data:`FETCH_LOG_SCHEMA_EXT` holding at least
    the non-nullable ``feed_id``, ``attempt``, ``started_at``, ``outcome``.

    Returns:
        The part files written.
    """
    table = rows if isinstance(rows, pa.Table) else build_fetch_log_table(rows)
    optional = [f.name for f in FETCH_LOG_SCHEMA_EXT if f.nullable]
    conformed = conform_table(table, FETCH_LOG_SCHEMA_EXT, optional=optional)
    days = compute_partition_dates(conformed, "started_at")
    return write_partitioned(store, FETCH_LOG_DIR, conformed, days, now)


def fetch_log_dataset(
    store: Path,
    feed_ids: Sequence[str] | None = None,
    dates: Iterable[date | str] | None = None,
) -> ds.Dataset:
    """The fetch log as a ``pyarrow.dataset.Dataset`` (plus ``feed``/``date`` fields)."""
    files = list_table_files(store, FETCH_LOG_DIR, feed_ids, dates)
    return open_dataset(store / FETCH_LOG_DIR, files, FETCH_LOG_SCHEMA_EXT)


def read_fetch_log(
    store: Path,
    feed_ids: Sequence[str] | None = None,
    dates: Iterable[date | str] | None = None,
) -> pd.DataFrame:
    """Read the fetch log, sorted by feed and start time.

    Returns:
        Columns of :data:`FETCH_LOG_SCHEMA_EXT` (nullable ints, UTC timestamps).
    """
    table = fetch_log_dataset(store, feed_ids, dates).to_table(columns=FETCH_LOG_SCHEMA_EXT.names)
    table = table.sort_by([("feed_id", "ascending"), ("started_at", "ascending"),
                           ("attempt", "ascending")])  # fmt: skip
    return to_pandas(table)
