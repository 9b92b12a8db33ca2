"""Poll ONE feed once: fetch → archive → decode → validate → dedup → store → log.

:func:`ingest_feed` never raises for a bad feed: every attempt becomes one fetch-log row
(attempts == rows) and one ``.meta.json``; every body is archived raw before anything
parses it; failures become ``outcome``/``error_class`` values. The feed's state between
ticks (last snapshot hash, ETag/Last-Modified, 429 deferral, circuit breaker, validator
state, last fix per vehicle) lives in ``state/<id>.json``, written atomically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import requests

from transitnet.ingest_records import (
    build_fetch_log_row,
    build_raw_meta,
    is_snapshot,
    read_header_time,
)
from transitnet.realtime.breaker import CircuitBreaker
from transitnet.realtime.decode import DecodedFeed, FeedDecodeError, decode_vehicle_positions
from transitnet.realtime.fetch import FeedEndpoint, FetchAttempt, fetch_feed
from transitnet.realtime.validate import FeedValidator, StaticChecker
from transitnet.store.archive import ArchivedBody, RawMeta, archive_body, relative_to_store
from transitnet.store.archive import write_meta as write_raw_meta
from transitnet.store.dedup import filter_new_fixes
from transitnet.store.log import FetchLogRow, write_fetch_log
from transitnet.store.parquet import write_positions
from transitnet.store.state import (
    FeedLockedError,
    FeedState,
    feed_lock,
    load_feed_state,
    save_feed_state,
)

logger = logging.getLogger(__name__)

#: Tick outcomes that count as success (for the breaker and ``ingest once``'s exit status).
OK_OUTCOMES = frozenset({"ok", "duplicate", "not_modified"})


@dataclass
class IngestResult:
    """What one tick of one feed did.

    Attributes:
        feed_id: Feed id.
        outcome: Final outcome: ``ok``, ``duplicate``, ``not_modified``, ``decode_error``,
            ``http_error``, ``rate_limited``, ``timeout``, ``transport_error``,
            ``too_large``, ``config_error``, ``internal_error``, or ``skipped`` (breaker
            open or 429 deferral: no attempt made).
        ok: Whether the tick succeeded (outcome in :data:`OK_OUTCOMES`).
        attempts: HTTP attempts made (== fetch-log rows written).
        error_class: Short error id of the final attempt, if it failed.
        rows_decoded: Positions rows in the snapshot.
        rows_written: Rows stored after dedup against the previous snapshot.
        raw_files: ``.pb``/``.body``/``.meta.json`` files written.
        positions_files: Parquet parts written.
        snapshot_rules: Feed-level validator rules raised.
        header_age_s: Fetch time - header timestamp.
        vehicle_age_p90_s: p90 over rows of fetch time - vehicle timestamp.
        slippage_s: Start of attempt 1 - scheduled tick.
        deferred_until: 429 deferral or breaker pause, when one applies.
    """

    feed_id: str
    outcome: str = "skipped"
    ok: bool = False
    attempts: int = 0
    error_class: str | None = None
    rows_decoded: int = 0
    rows_written: int = 0
    raw_files: list[Path] = field(default_factory=list)
    positions_files: list[Path] = field(default_factory=list)
    snapshot_rules: list[str] = field(default_factory=list)
    header_age_s: float | None = None
    vehicle_age_p90_s: float | None = None
    slippage_s: float | None = None
    deferred_until: datetime | None = None


def ingest_feed(
    store: Path,
    endpoint: FeedEndpoint,
    *,
    scheduled_tick: datetime | None = None,
    static_checker: StaticChecker | None = None,
    session: requests.Session | None = None,
    sleep: Callable[[float], Any] = time.sleep,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    keep_going: Callable[[], bool] = lambda: True,
) -> IngestResult:
    """Run one tick for one feed; never raises for feed, network or storage problems.

    Args:
        store: Store root.
        endpoint: The feed.
        scheduled_tick: The tick this run belongs to (for slippage and the log).
        static_checker: Static GTFS rules for the validator (None: those flags null).
        session: requests session to reuse connections across ticks.
        sleep: Waits between retries (tests inject a fake).
        clock: Our UTC clock.
        keep_going: Returns False on shutdown: no further retry is started.

    Returns:
        The tick's result; the same facts are in the fetch log and the raw metadata.
    """
    tick = _Tick(store, endpoint, scheduled_tick, static_checker, clock)
    try:
        with feed_lock(store, endpoint.feed_id):
            try:
                tick.run(session=session, sleep=sleep, keep_going=keep_going)
            except Exception as exc:  # a bug must not stop the scheduler or lose log rows
                logger.exception("%s: internal error during ingest", endpoint.feed_id)
                tick.fail_internal(exc)
            tick.finish()
    except FeedLockedError as exc:
        logger.warning("%s: tick skipped: %s", endpoint.feed_id, exc)
        tick.result.error_class = "locked"
    except OSError as exc:  # the store itself is unusable (read-only, missing mount …)
        logger.error("%s: tick failed, store unusable: %s", endpoint.feed_id, exc)
        tick.result.outcome, tick.result.error_class = "internal_error", "store_unavailable"
    return tick.result


class _Tick:
    """State and steps of one ``ingest_feed`` call."""

    def __init__(
        self,
        store: Path,
        endpoint: FeedEndpoint,
        scheduled_tick: datetime | None,
        static_checker: StaticChecker | None,
        clock: Callable[[], datetime],
    ) -> None:
        self.store, self.endpoint, self.clock = store, endpoint, clock
        self.scheduled_tick = scheduled_tick
        self.static_checker = static_checker
        self.result = IngestResult(endpoint.feed_id)
        self.state = FeedState(endpoint.feed_id)
        self.loaded = False
        self.breaker = CircuitBreaker()
        self.attempts: list[tuple[FetchAttempt, ArchivedBody]] = []
        self.metas: list[RawMeta] = []
        self.rows: list[FetchLogRow] = []

    def run(
        self,
        *,
        session: requests.Session | None,
        sleep: Callable[[float], Any],
        keep_going: Callable[[], bool],
    ) -> None:
        self.state = load_feed_state(self.store, self.endpoint.feed_id)
        self.loaded = True
        self.breaker = make_breaker(self.state)
        if self._skip(self.clock()):
            return
        fetched = fetch_feed(
            self.endpoint, etag=self.state.etag, last_modified=self.state.last_modified,
            session=session, sleep=sleep, clock=self.clock, keep_going=keep_going,
            on_attempt=self._archive_attempt,
        )  # fmt: skip
        self.result.attempts = len(fetched.attempts)
        self.state.deferred_until = fetched.deferred_until
        self.result.deferred_until = fetched.deferred_until
        final_attempt, final_archived = self.attempts[-1]
        if is_snapshot(final_attempt):
            self._process_snapshot(final_attempt, final_archived)
        self._set_outcome(self.metas[-1].outcome, self.metas[-1].error_class)

    def _skip(self, now: datetime) -> bool:
        """Skip the tick while the breaker is open or a 429 asked us to wait."""
        waits = [t for t in (self.state.deferred_until,) if t is not None and now < t]
        if not self.breaker.allows(now) and self.breaker.open_until is not None:
            waits.append(self.breaker.open_until)
        if not waits:
            return False
        self.result.deferred_until = max(waits)
        logger.info("%s: tick skipped until %s", self.endpoint.feed_id, max(waits).isoformat())
        return True

    def _archive_attempt(self, attempt: FetchAttempt) -> None:
        """Archive an attempt's body and metadata right away, before anything parses it.

        The final attempt's metadata is written again once decoding has added the header
        timestamp, the rules and the row counts.
        """
        snapshot = is_snapshot(attempt)
        archived = archive_body(
            self.store, self.endpoint.feed_id, attempt.started_at, attempt.body,
            snapshot=snapshot, previous_sha256=self.state.last_sha256,
            previous_file=self.state.last_raw,
        )  # fmt: skip
        if archived.path is not None:
            self.result.raw_files.append(archived.path)
        self.attempts.append((attempt, archived))
        feed_id = self.endpoint.feed_id
        self.metas.append(
            build_raw_meta(self.store, feed_id, attempt, archived, self.scheduled_tick)
        )
        self.result.raw_files.append(write_raw_meta(archived.stem, self.metas[-1]))

    def _process_snapshot(self, attempt: FetchAttempt, archived: ArchivedBody) -> None:
        """Decode, validate, dedup and store the final attempt's snapshot."""
        meta = self.metas[-1]
        body = attempt.body or b""
        if archived.duplicate_of is not None:
            meta.outcome = "duplicate" if self.state.last_error_class is None else "decode_error"
            meta.error_class = self.state.last_error_class
            self._remember_snapshot(attempt, archived, good=meta.error_class is None)
            return
        source = relative_to_store(self.store, archived.path)
        try:
            decoded = decode_vehicle_positions(
                body, feed_id=self.endpoint.feed_id, fetched_at=attempt.started_at,
                source_file=source,
            )  # fmt: skip
        except FeedDecodeError as exc:
            meta.outcome, meta.error_class, meta.error = (
                "decode_error",
                f"decode_{exc.kind}",
                str(exc),
            )
            self._remember_snapshot(attempt, archived, good=False, error_class=meta.error_class)
            return
        self._validate_and_store(attempt, archived, decoded)

    def _validate_and_store(
        self, attempt: FetchAttempt, archived: ArchivedBody, decoded: DecodedFeed
    ) -> None:
        validator = make_validator(self.state, self.static_checker)
        sha = archived.sha256 or ""
        validated = validator.validate(decoded, now=attempt.started_at, sha256=sha)
        fresh, keys = filter_new_fixes(validated.positions, self.state.last_keys)
        self.result.positions_files = write_positions(self.store, fresh)
        self.state.last_keys = keys
        self.state.validator = validator.state_dict()
        meta = self.metas[-1]
        meta.rules = list(validated.snapshot_rules)
        meta.rows, meta.rows_written = validated.positions.num_rows, fresh.num_rows
        meta.header_timestamp_raw = decoded.header.timestamp_raw
        header_ts = read_header_time(decoded.header.timestamp_raw)
        meta.header_timestamp = header_ts.isoformat() if header_ts else None
        self._record_freshness(attempt.started_at, header_ts, validated.positions)
        self._remember_snapshot(attempt, archived, good=True)

    def _record_freshness(self, fetched: datetime, header_ts: datetime | None, table: Any) -> None:
        r = self.result
        r.header_age_s = (fetched - header_ts).total_seconds() if header_ts else None
        stamps = table.column("vehicle_timestamp").drop_null()
        if len(stamps):
            micros = stamps.cast("int64").to_numpy()
            ages = (fetched.timestamp() * 1e6 - micros) / 1e6
            r.vehicle_age_p90_s = float(np.percentile(ages, 90))

    def _remember_snapshot(
        self, attempt: FetchAttempt, archived: ArchivedBody, *, good: bool,
        error_class: str | None = None,
    ) -> None:  # fmt: skip
        """Advance the per-feed state past this snapshot."""
        if archived.path is not None:
            self.state.last_sha256 = archived.sha256
            self.state.last_raw = relative_to_store(self.store, archived.path)
            self.state.last_error_class = error_class
        if good:
            self.state.etag = attempt.headers.get("ETag")
            self.state.last_modified = attempt.headers.get("Last-Modified")

    def _set_outcome(self, outcome: str, error_class: str | None) -> None:
        r = self.result
        r.outcome, r.error_class, r.ok = outcome, error_class, outcome in OK_OUTCOMES
        if self.metas:
            r.rows_decoded = self.metas[-1].rows or 0
            r.rows_written = self.metas[-1].rows_written or 0
            r.snapshot_rules = list(self.metas[-1].rules)

    def fail_internal(self, exc: Exception) -> None:
        """Turn an unexpected exception into a failed outcome on the last attempt."""
        error_class = f"internal_{type(exc).__name__}"
        if self.metas:
            self.metas[-1].outcome, self.metas[-1].error_class = "internal_error", error_class
            self.metas[-1].error = str(exc)[:2000]
        self.result.attempts = len(self.attempts)
        self._set_outcome("internal_error", error_class)

    def finish(self) -> None:
        """Write metas, log rows and state; update the breaker. Storage errors are logged."""
        if not self.loaded or not self.attempts:
            return
        if self.result.ok:
            self.breaker.record_success()
        else:
            self.breaker.record_failure(self.clock())
        self.state.breaker = self.breaker.state_dict()
        _guard(self._write_records, "records")
        state = self.state
        _guard(lambda: save_feed_state(self.store, state), "state")
        self._log_summary()

    def _write_records(self) -> None:
        slippage = None
        first = self.attempts[0][0]
        if self.scheduled_tick is not None:
            slippage = (first.started_at - self.scheduled_tick).total_seconds()
        self.result.slippage_s = slippage
        if self.metas:  # decoding (or a failure) added to the final attempt's metadata
            write_raw_meta(self.attempts[len(self.metas) - 1][1].stem, self.metas[-1])
        for (attempt, _), meta in zip(self.attempts, self.metas, strict=False):
            self.rows.append(self._log_row(attempt, meta, slippage))
        write_fetch_log(self.store, self.rows)

    def _log_row(self, attempt: FetchAttempt, meta: RawMeta, slippage: float | None) -> FetchLogRow:
        r, last = self.result, meta is self.metas[-1]
        return build_fetch_log_row(
            attempt, meta, scheduled_tick=self.scheduled_tick, slippage_s=slippage,
            header_age_s=r.header_age_s if last else None,
            vehicle_age_p90_s=r.vehicle_age_p90_s if last else None,
        )  # fmt: skip

    def _log_summary(self) -> None:
        r = self.result
        level = logging.INFO if r.ok else logging.WARNING
        logger.log(
            level, "%s: %s%s attempts=%d rows=%d new=%d header_age=%s vehicle_age_p90=%s",
            r.feed_id, r.outcome, f" ({r.error_class})" if r.error_class else "", r.attempts,
            r.rows_decoded, r.rows_written, _fmt_s(r.header_age_s), _fmt_s(r.vehicle_age_p90_s),
        )  # fmt: skip


def make_breaker(state: FeedState) -> CircuitBreaker:
    """The feed's circuit breaker, restored from its state (a bad state starts closed)."""
    breaker = CircuitBreaker()
    _restore(breaker, state.breaker, f"{state.feed_id}: resetting breaker")
    return breaker


def make_validator(state: FeedState, static_checker: StaticChecker | None) -> FeedValidator:
    """The feed's validator, restored from its state (a bad state starts afresh)."""
    validator = FeedValidator(state.feed_id, static_checker=static_checker)
    _restore(validator, state.validator, f"{state.feed_id}: resetting validator state")
    return validator


def _restore(
    target: CircuitBreaker | FeedValidator, saved: dict[str, Any] | None, warn: str
) -> None:
    """Load ``saved`` (when set) into ``target``; a bad state is logged (``warn``) and skipped."""
    if saved:
        try:
            target.load_state_dict(saved)
        except ValueError as exc:
            logger.warning("%s: %s", warn, exc)


def _fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}s"


def _guard(action: Callable[[], Any], what: str) -> None:
    try:
        action()
    except Exception:  # storage trouble is reported, never raised into the scheduler
        logger.exception("failed to write %s", what)
