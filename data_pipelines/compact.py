"""The daily compaction job (run it after midnight UTC, e.g. from cron or a CronJob).

It merges each closed day's per-tick part files of ``positions`` and ``fetch_log`` into one
file per feed and day, deduplicating positions (see :mod:`transitnet.store.compact`), and
removes temporary files left by killed writers (older than an hour, so a writer that is
still running is never disturbed).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from transitnet.store.compact import CompactResult, compact_store, remove_stale_temp_files

logger = logging.getLogger(__name__)


def run_compaction(
    store: Path, *, feed_ids: Sequence[str] | None = None, before: date | None = None
) -> list[CompactResult]:
    """Compact every closed day (dated before ``before``, default today UTC).

    Returns:
        One result per partition looked at.

    Raises:
        CompactionLockedError: when another compaction runs on the same store.
    """
    results = compact_store(store, feed_ids=feed_ids, before=before)
    removed = sum(remove_stale_temp_files(store / sub) for sub in ("raw", "positions", "fetch_log"))
    merged = sum(r.parts_merged for r in results)
    errors = [r for r in results if r.error]
    logger.info("compaction: %d partitions, %d parts merged, %d rows kept of %d, %d temp files "
                "removed", len(results), merged, sum(r.rows_out for r in results),
                sum(r.rows_in for r in results), removed)  # fmt: skip
    for r in errors:
        logger.error("compaction of %s %s %s failed: %s", r.kind, r.feed_id, r.day, r.error)
    return results
