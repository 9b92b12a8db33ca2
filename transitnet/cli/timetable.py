"""``transitnet timetable``: the day's timetable recovered from a TripUpdates archive.

``transitnet timetable --trip-updates TU --static GTFS --store DIR --out FILE`` writes a
timetable file (:func:`transitnet.gtfs.timetable.write_timetable`): the scheduled stop
times of the realtime trips (scheduled = event time - delay,
:mod:`transitnet.gtfs.realtime_timetable`), keyed by the realtime ``trip_id``, placed
on the shapes the trips were matched on in ``DIR/matched/``. Give it to the forecaster
as ``--data.timetable FILE`` when the static feed at hand does not hold the day's trips.
Exit status: 0 on success, 2 on bad input (one-line message), 1 when no trip got a
usable schedule.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from transitnet.cli.common import EXIT_FAILED, EXIT_OK

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    """Add ``timetable`` to the top-level subparsers."""
    p = sub.add_parser(
        "timetable",
        help="recover the day's timetable from TripUpdates into a Parquet file for the model",
        description="Recover scheduled stop times (event time - delay) of the realtime trips "
        "in a TripUpdates archive, placed on the shapes the trips were matched on in "
        "DIR/matched/, and write them as a timetable file (--data.timetable of `fit`).",
    )
    p.add_argument(
        "--trip-updates",
        type=Path,
        required=True,
        metavar="TU",
        help="TripUpdates snapshots: a tar/tar.xz archive or a folder of .pb files",
    )
    p.add_argument(
        "--static",
        required=True,
        metavar="GTFS",
        help="static GTFS (zip, folder or URL) giving stop distances along shapes",
    )
    p.add_argument(
        "--store",
        type=Path,
        required=True,
        metavar="DIR",
        help="store whose matched/ positions give each trip's shape",
    )
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="output Parquet file")
    p.add_argument(
        "--feed-id",
        action="append",
        dest="feed_ids",
        metavar="ID",
        help="matched feed(s) to read (default: all)",
    )
    p.add_argument(
        "--timezone",
        help="IANA zone of the service day (default: the static feed's agency timezone)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build and write the timetable file; returns the exit status."""
    from transitnet.datamodules.loading import read_trip_shapes
    from transitnet.gtfs.artefacts import load_or_build_artefacts
    from transitnet.gtfs.realtime_timetable import build_timetable_from_trip_updates
    from transitnet.gtfs.timetable import Timetable, write_timetable
    from transitnet.realtime.trip_updates import read_trip_updates

    art = load_or_build_artefacts(args.static, args.store)
    timezone = args.timezone or art.timezone
    if not timezone:
        raise ValueError("the static feed names no agency timezone: give --timezone")
    read = read_trip_updates(args.trip_updates)
    if read.failures:
        logger.warning("%s: snapshots that failed to decode: %s", args.trip_updates, read.failures)
    if read.events.empty:
        raise ValueError(f"{args.trip_updates}: no TripUpdates stop events")
    pairs = read_trip_shapes(args.store, args.feed_ids)
    rows = build_timetable_from_trip_updates(read.events, art, pairs, timezone)
    if Timetable.from_stop_times(rows) is None:
        logger.error(
            "no trip got a usable schedule (dropped: %s); nothing written",
            rows.attrs.get("dropped"),
        )
        return EXIT_FAILED
    write_timetable(rows, args.out)
    logger.info(
        "wrote %s: %d stop times of %d trips", args.out, len(rows), rows["trip_id"].nunique()
    )
    return EXIT_OK
