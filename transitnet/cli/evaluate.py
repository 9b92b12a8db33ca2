"""``transitnet evaluate``: score a checkpoint and every baseline on the same windows."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``evaluate`` subcommand."""
    p = sub.add_parser(
        "evaluate",
        help="Score a forecasting checkpoint against the baselines; write metrics.json + report.",
        description=(
            "Rebuilds the checkpoint's DataModule (optionally on other data or dates), fits the "
            "baselines on the checkpoint's training period, and scores model and baselines on "
            "the same test windows. Writes OUT/metrics.json, OUT/report.md and PNG plots."
        ),
    )
    p.add_argument("--ckpt", required=True, type=Path, help="Checkpoint written by `fit`.")
    p.add_argument("--store", help="Store folder (default: the one the model was trained on).")
    p.add_argument("--static", help="Static GTFS for matching (default: the training one).")
    p.add_argument(
        "--dates",
        nargs="+",
        help="Test period: service dates, start..end ranges, or one local-time range "
        "YYYY-MM-DDTHH:MM..YYYY-MM-DDTHH:MM (default: the checkpoint's test period).",
    )
    p.add_argument(
        "--trip-updates",
        type=Path,
        help="TripUpdates snapshots (a tar/tar.xz archive or a folder of .pb files) giving "
        "observed arrivals: adds ETA accuracy (Transit-app bands) to the report.",
    )
    p.add_argument("--out", required=True, type=Path, help="Output folder for the report.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate and write the report; returns the exit status."""
    from transitnet.evaluate import (
        run_evaluation,
        summarise,
        write_evaluation_report,
        write_metrics,
    )

    observed = None
    if args.trip_updates is not None:
        from transitnet.realtime.trip_updates import derive_observed_arrivals, read_trip_updates

        read = read_trip_updates(args.trip_updates)
        if read.failures:
            logger.warning(
                "%s: snapshots that failed to decode: %s", args.trip_updates, read.failures
            )
        observed = derive_observed_arrivals(read.events)
    evaluation = run_evaluation(args.ckpt, store=args.store, static=args.static, dates=args.dates)
    metrics = summarise(evaluation, observed)
    write_metrics(metrics, args.out)
    write_evaluation_report(metrics, args.out, args.ckpt.name)
    logger.info("wrote %s (metrics.json, report.md, plots)", args.out)
    return 0
