"""The records one ingest tick writes per fetch attempt: raw metadata and fetch-log rows.

Pure functions from the facts of an attempt (:class:`transitnet.realtime.fetch.
FetchAttempt`) and its archived body (:class:`transitnet.store.archive.ArchivedBody`) to
the ``.meta.json`` record (:class:`transitnet.store.archive.RawMeta`) and the fetch-log
row (:class:`transitnet.store.log.FetchLogRow`); :mod:`transitnet.ingest` writes them.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow as pa

from transitnet.realtime.decode import timestamps_from_raw
from transitnet.realtime.fetch import FetchAttempt
from transitnet.store.archive import ArchivedBody, RawMeta, relative_to_store
from transitnet.store.log import FetchLogRow


def is_snapshot(attempt: FetchAttempt) -> bool:
    """A complete 2xx body: archived as ``.pb`` and parsed."""
    ok_status = attempt.status is not None and 200 <= attempt.status < 300
    return ok_status and attempt.outcome == "ok" and attempt.body_complete


def read_header_time(raw: int | None) -> datetime | None:
    """The header timestamp as UTC (milliseconds etc. scaled like the decoder does)."""
    if raw is None:
        return None
    value: datetime | None = timestamps_from_raw(pa.array([raw], pa.uint64()))[0].as_py()
    return value


def build_raw_meta(
    store: Path,
    feed_id: str,
    attempt: FetchAttempt,
    archived: ArchivedBody,
    scheduled_tick: datetime | None,
) -> RawMeta:
    """The metadata of one attempt from the fetch facts (before any decoding)."""
    return RawMeta(
        feed_id=feed_id, fetched_at=attempt.started_at.isoformat(),
        scheduled_tick=scheduled_tick.isoformat() if scheduled_tick else None,
        attempt=attempt.attempt, duration_s=round(attempt.duration_s, 6),
        outcome=attempt.outcome, status=attempt.status, final_url=attempt.final_url,
        redirects=attempt.redirects, headers=attempt.headers,
        bytes=attempt.bytes_received, sha256=archived.sha256,
        file=relative_to_store(store, archived.path),
        duplicate_of=archived.duplicate_of, body_complete=attempt.body_complete,
        redacted=attempt.redacted, error_class=attempt.error_class, error=attempt.error,
    )  # fmt: skip


def build_fetch_log_row(
    attempt: FetchAttempt,
    meta: RawMeta,
    *,
    scheduled_tick: datetime | None,
    slippage_s: float | None,
    header_age_s: float | None = None,
    vehicle_age_p90_s: float | None = None,
) -> FetchLogRow:
    """The fetch-log row of one attempt from its facts and its final metadata.

    Args:
        attempt: The attempt.
        meta: Its metadata, with what decoding added (outcome, rows, rules …).
        scheduled_tick: The tick the attempt belongs to.
        slippage_s: Start of the tick's first attempt minus the scheduled tick.
        header_age_s: Fetch time minus header timestamp (the final attempt's only).
        vehicle_age_p90_s: p90 of fetch time minus vehicle timestamps (likewise).
    """
    return FetchLogRow(
        feed_id=meta.feed_id, attempt=attempt.attempt,
        started_at=attempt.started_at, outcome=meta.outcome,
        scheduled_tick=scheduled_tick, duration_s=attempt.duration_s,
        http_status=attempt.status, bytes=attempt.bytes_received, sha256=meta.sha256,
        header_timestamp=datetime.fromisoformat(meta.header_timestamp)
        if meta.header_timestamp else None,
        error_class=meta.error_class, error=meta.error,
        raw_path=meta.file or meta.duplicate_of, rows=meta.rows, rules=meta.rules,
        rows_written=meta.rows_written, slippage_s=slippage_s,
        header_age_s=header_age_s, vehicle_age_p90_s=vehicle_age_p90_s,
        final_url=attempt.final_url,
    )  # fmt: skip
