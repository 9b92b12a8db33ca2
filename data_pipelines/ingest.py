"""Scheduled ingestion: one tick for every feed (cron), or a resident polling loop.

- :func:`run_once` polls every feed once, concurrently; one feed's failure or crash never
  stops the others. It returns whether every feed succeeded (``ingest once``'s exit status).
- :func:`run_forever` polls each feed every ``interval_s`` on a staggered grid
  (``tick = k·interval + crc32(feed_id) mod interval``). At most one run is in flight per
  feed; a tick that comes due while the previous run is still going, or that the loop
  woke up too late for, is dropped, not queued. Slippage (start − scheduled tick) and
  freshness (Cal-ITP: header age, p90 vehicle age) are logged. Setting ``stop_event``
  (the CLI does so on SIGTERM/SIGINT) starts no new tick and no new retry, lets in-flight
  runs finish their writes, and returns: never a half-written file.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import requests

from data_pipelines.config import FeedConfig, IngestConfig
from transitnet.ingest import IngestResult, ingest_feed
from transitnet.realtime.validate import StaticChecker

logger = logging.getLogger(__name__)

#: Cal-ITP guideline: p90 of max(header age, vehicle age) at or below this many seconds.
FRESHNESS_GUIDELINE_S = 90.0
_FRESHNESS_WINDOW = 120


def _utcnow() -> datetime:
    return datetime.now(UTC)


def load_static_checker(source: str, feed_id: str) -> StaticChecker | None:
    """Load a static GTFS (path or URL) for the validator; None on failure (logged).

    A broken static feed must not stop realtime archiving: the static-rule flags then
    stay null ("not evaluated").
    """
    try:
        from transitnet.gtfs.feeds import read_static_feed
        from transitnet.gtfs.static_rules import StaticRuleChecker

        return StaticRuleChecker(read_static_feed(source))
    except Exception:
        logger.exception("%s: cannot load static GTFS %s; static rules stay null", feed_id, source)
        return None


def build_static_checker(feed: FeedConfig) -> StaticChecker | None:
    """The feed's static-rule checker, or None when it has no (loadable) static feed."""
    return load_static_checker(feed.static, feed.id) if feed.static else None


class FeedRunner:
    """What one feed keeps between ticks in this process: an HTTP session, static rules.

    Args:
        feed: The feed.
        store: Store root.
        sleep: Waits between retries (interruptible on shutdown).
        keep_going: False once shutdown has begun.
    """

    def __init__(
        self,
        feed: FeedConfig,
        store: Path,
        *,
        sleep: Callable[[float], Any] = time.sleep,
        keep_going: Callable[[], bool] = lambda: True,
    ) -> None:
        self.feed, self.store = feed, store
        self.endpoint = feed.to_endpoint()
        self.sleep, self.keep_going = sleep, keep_going
        self.session = requests.Session()
        self._static: StaticChecker | None = None
        self._static_loaded = False
        self.freshness: deque[float] = deque(maxlen=_FRESHNESS_WINDOW)

    def run_tick(self, scheduled_tick: datetime | None = None) -> IngestResult:
        """Run one tick; never raises."""
        try:
            if not self._static_loaded:
                self._static, self._static_loaded = build_static_checker(self.feed), True
            result = ingest_feed(
                self.store, self.endpoint, scheduled_tick=scheduled_tick,
                static_checker=self._static, session=self.session, sleep=self.sleep,
                keep_going=self.keep_going,
            )  # fmt: skip
        except Exception as exc:  # ingest_feed does not raise; this guards the guard
            logger.exception("%s: tick crashed", self.feed.id)
            result = IngestResult(self.feed.id, outcome="internal_error",
                                  error_class=f"internal_{type(exc).__name__}")  # fmt: skip
        self._track_freshness(result)
        return result

    def _track_freshness(self, result: IngestResult) -> None:
        ages = [a for a in (result.header_age_s, result.vehicle_age_p90_s) if a is not None]
        if ages:
            self.freshness.append(max(ages))

    def freshness_p90(self) -> float | None:
        """p90 over recent ticks of max(header age, vehicle age p90), in seconds."""
        return float(np.percentile(list(self.freshness), 90)) if self.freshness else None

    def close(self) -> None:
        """Release the HTTP session."""
        self.session.close()


def run_ticks(config: IngestConfig, store: Path, *, max_workers: int = 8) -> list[IngestResult]:
    """One tick for every feed, concurrently; results in config order."""
    runners = [FeedRunner(feed, store) for feed in config.feeds]
    tick = _utcnow()
    workers = max(1, min(max_workers, len(runners)))
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest") as pool:
            return list(pool.map(lambda r: r.run_tick(tick), runners))
    finally:
        for runner in runners:
            runner.close()


def run_once(config: IngestConfig, store: Path, *, max_workers: int = 8) -> bool:
    """Poll every feed once (for cron, systemd timers, CronJobs); True when all succeeded.

    Args:
        config: The feeds.
        store: Store root.
        max_workers: Feeds polled at the same time.
    """
    results = run_ticks(config, store, max_workers=max_workers)
    failed = [f"{r.feed_id} ({r.outcome}: {r.error_class})" for r in results if not r.ok]
    if failed:
        logger.warning("ingest once: %d of %d feeds failed: %s", len(failed), len(results),
                       ", ".join(failed))  # fmt: skip
    else:
        logger.info("ingest once: all %d feeds succeeded", len(results))
    return not failed


def compute_offset_s(feed_id: str, interval_s: float) -> float:
    """Stable stagger offset of a feed within its interval (crc32, not Python's hash)."""
    return float(zlib.crc32(feed_id.encode("utf-8")) % max(1, int(interval_s * 1000))) / 1000


def next_tick(feed: FeedConfig, now: datetime) -> datetime:
    """The first grid tick of ``feed`` at or after ``now``."""
    offset = compute_offset_s(feed.id, feed.interval_s)
    k = math.ceil((now.timestamp() - offset) / feed.interval_s)
    return datetime.fromtimestamp(k * feed.interval_s + offset, UTC)


@dataclass
class RunStats:
    """What :func:`run_forever` did, per feed id.

    Attributes:
        started: Ticks started.
        dropped: Ticks dropped (previous run still in flight, or the loop woke up late).
        ok: Ticks that succeeded.
    """

    started: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    ok: dict[str, int] = field(default_factory=dict)


class _Loop:
    """The resident scheduler behind :func:`run_forever`."""

    def __init__(self, config: IngestConfig, store: Path, stop: threading.Event,
                 max_ticks: int | None, clock: Callable[[], datetime]) -> None:  # fmt: skip
        self.config, self.stop, self.max_ticks, self.clock = config, stop, max_ticks, clock
        self.runners = {
            f.id: FeedRunner(f, store, sleep=stop.wait, keep_going=lambda: not stop.is_set())
            for f in config.feeds
        }
        now = clock()
        self.due = {f.id: next_tick(f, now) for f in config.feeds}
        self.threads: dict[str, threading.Thread] = {}
        self.stats = RunStats(*({f.id: 0 for f in config.feeds} for _ in range(3)))
        self.lock = threading.Lock()

    def run(self) -> RunStats:
        try:
            while not self.stop.is_set() and not self._all_done():
                now = self.clock()
                for feed in self.config.feeds:
                    if now >= self.due[feed.id] and not self._done(feed.id):
                        self._dispatch(feed, now)
                wake = min(self.due.values())
                self.stop.wait(min(1.0, max(0.0, (wake - self.clock()).total_seconds())))
        finally:
            self._shutdown()
        return self.stats

    def _dispatch(self, feed: FeedConfig, now: datetime) -> None:
        """Start the latest due tick of ``feed``; drop the ones it supersedes."""
        interval = timedelta(seconds=feed.interval_s)
        late = int((now - self.due[feed.id]) / interval)
        tick = self.due[feed.id] + late * interval
        self.due[feed.id] = tick + interval
        self.stats.dropped[feed.id] += late
        if late:
            logger.warning("%s: woke up late, %d tick(s) dropped", feed.id, late)
        thread = self.threads.get(feed.id)
        if thread is not None and thread.is_alive():
            self.stats.dropped[feed.id] += 1
            logger.warning("%s: tick %s dropped: previous run still in flight",
                           feed.id, tick.isoformat())  # fmt: skip
            return
        self.stats.started[feed.id] += 1
        thread = threading.Thread(target=self._run_tick, args=(feed, tick),
                                  name=f"ingest-{feed.id}")  # fmt: skip
        self.threads[feed.id] = thread
        thread.start()

    def _run_tick(self, feed: FeedConfig, tick: datetime) -> None:
        runner = self.runners[feed.id]
        result = runner.run_tick(tick)
        with self.lock:
            self.stats.ok[feed.id] += int(result.ok)
        if result.slippage_s is not None and result.slippage_s > 0.1 * feed.interval_s:
            logger.warning("%s: tick slipped %.2f s", feed.id, result.slippage_s)
        if self.stats.started[feed.id] % 20 == 0:
            self._log_freshness(feed.id)

    def _log_freshness(self, feed_id: str) -> None:
        p90 = self.runners[feed_id].freshness_p90()
        if p90 is None:
            return
        level = logging.INFO if p90 <= FRESHNESS_GUIDELINE_S else logging.WARNING
        n = len(self.runners[feed_id].freshness)
        logger.log(level, "%s: freshness p90 %.0f s (guideline <= %.0f s) over %d ticks",
                   feed_id, p90, FRESHNESS_GUIDELINE_S, n)  # fmt: skip

    def _done(self, feed_id: str) -> bool:
        ticks = self.stats.started[feed_id] + self.stats.dropped[feed_id]
        return self.max_ticks is not None and ticks >= self.max_ticks

    def _all_done(self) -> bool:
        return all(self._done(f.id) for f in self.config.feeds)

    def _shutdown(self) -> None:
        """Start nothing new; let in-flight runs finish their writes."""
        for thread in self.threads.values():
            thread.join()
        for feed_id, runner in self.runners.items():
            self._log_freshness(feed_id)
            runner.close()
        logger.info("ingest run stopped: started %s, dropped %s, ok %s",
                    self.stats.started, self.stats.dropped, self.stats.ok)  # fmt: skip


def run_forever(
    config: IngestConfig,
    store: Path,
    *,
    stop_event: threading.Event,
    max_ticks: int | None = None,
    clock: Callable[[], datetime] = _utcnow,
) -> RunStats:
    """Poll every feed on its staggered grid until ``stop_event`` is set.

    Args:
        config: The feeds.
        store: Store root.
        stop_event: Set it (e.g. from a SIGTERM handler) to shut down cleanly.
        max_ticks: Stop after this many ticks per feed (started or dropped).
        clock: Our UTC clock.

    Returns:
        Per-feed counts of started, dropped and successful ticks.
    """
    return _Loop(config, store, stop_event, max_ticks, clock).run()
