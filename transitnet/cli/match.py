"""``transitnet match``: place stored positions on their routes.

``transitnet match --store DIR --static PATH [--feed-id ID] [--dates D ...]`` reads
``DIR/positions/`` and writes ``DIR/matched/feed=<id>/date=<day>/part-matched.parquet``
(see :func:`transitnet.gtfs.match.match_store`). Exit status: 0 on success, 1 when the
store holds an unreadable file, 2 for a bad static feed, store or option (one-line
message on stderr).
"""

from __future__ import annotations

import argparse
import logging
import zoneinfo
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from transitnet.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, parse_date

logger = logging.getLogger(__name__)


def _day(text: str) -> str:
    return parse_date(text).isoformat()


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _zone(text: str) -> str:
    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"not an IANA time zone: {text!r}") from exc
    return text


def register(sub: Any) -> None:
    """Add ``match`` to the top-level subparsers."""
    parser = sub.add_parser(
        "match",
        help="place stored positions on their routes (distance along shape, offset, delay)",
        description="Map-match DIR/positions/ against a static GTFS feed into DIR/matched/ "
        "(hive-partitioned like positions/): distance along the shape, cross-track offset, "
        "match status, along-route speed, dwells and schedule delay. Static artefacts are "
        "cached under DIR/static/. Unchanged partitions are skipped.",
    )
    parser.add_argument(
        "--store",
        type=Path,
        required=True,
        metavar="DIR",
        help="store root holding positions/ (as written by transitnet ingest)",
    )
    parser.add_argument(
        "--static",
        required=True,
        metavar="PATH",
        help="static GTFS feed: zip, folder or http(s) URL",
    )
    parser.add_argument(
        "--feed-id",
        default=None,
        metavar="ID",
        help="match only this feed (default: every feed in the store)",
    )
    parser.add_argument(
        "--dates",
        nargs="+",
        type=_day,
        default=None,
        metavar="YYYY-MM-DD",
        help="match only these partition days (UTC; default: every day)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="re-match partitions even when positions, static feed and settings are unchanged",
    )
    parser.add_argument(
        "--timezone",
        type=_zone,
        default=None,
        metavar="ZONE",
        help="IANA time zone for service days and delays (default: the "
        "static feed's agency_timezone)",
    )
    parser.add_argument("--off-shape-m", type=_positive, default=200.0, metavar="M",
                        help="fixes farther than M metres from their shape are off_shape "
                        "(default: 200, validator rule E029)")  # fmt: skip
    parser.set_defaults(func=handle_match)


def handle_match(args: argparse.Namespace) -> int:
    """Run ``transitnet match``; 0 on success, 2 for a bad feed, store or option."""
    from transitnet.gtfs.feeds import StaticFeedError
    from transitnet.gtfs.match import MatchConfig, match_store

    if not (args.store / "positions").is_dir():
        logger.error("%s has no positions/ folder: not a transitnet store", args.store)
        return EXIT_USAGE
    config = replace(MatchConfig(), timezone=args.timezone, off_shape_m=args.off_shape_m)
    try:
        written = match_store(args.store, args.static, feed_id=args.feed_id, dates=args.dates,
                              config=config, force=args.force)  # fmt: skip
    except (StaticFeedError, OSError) as exc:
        logger.error("%s", " ".join(str(exc).split()))
        return EXIT_USAGE
    except pa.ArrowException as exc:  # an unreadable part file in the store
        logger.error("cannot read the positions store: %s", " ".join(str(exc).split()))
        return EXIT_FAILED
    logger.info("wrote %d matched partition(s) under %s", len(written), args.store / "matched")
    return EXIT_OK
