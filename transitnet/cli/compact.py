"""``transitnet compact``: merge each closed day's part files into one file per feed."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from transitnet.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, parse_date

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    """Add the ``compact`` sub-command."""
    parser = sub.add_parser(
        "compact",
        help="merge closed days' part files (positions, fetch_log) and dedup rows",
        description="Merge the per-tick part files of every closed UTC day into one file per "
        "feed and day, deduplicating positions. Idempotent and crash-safe.",
    )
    parser.add_argument("--store", type=Path, required=True, metavar="DIR", help="store root")
    parser.add_argument("--feed-id", action="append", default=None, metavar="ID",
                        help="only this feed (repeatable; default: all)")  # fmt: skip
    parser.add_argument("--before", type=parse_date, default=None, metavar="DATE",
                        help="compact days strictly before DATE (YYYY-MM-DD, UTC; "
                        "default: today, i.e. every closed day)")  # fmt: skip
    parser.set_defaults(func=handle_compact)


def handle_compact(args: argparse.Namespace) -> int:
    """0 when every partition compacted, 1 when some failed, 2 when the store is busy/absent."""
    from data_pipelines.compact import run_compaction
    from transitnet.store.compact import CompactionLockedError

    if not args.store.is_dir():
        logger.error("store %s does not exist", args.store)
        return EXIT_USAGE
    try:
        results = run_compaction(args.store, feed_ids=args.feed_id, before=args.before)
    except CompactionLockedError as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    return EXIT_FAILED if any(r.error for r in results) else EXIT_OK
