"""``transitnet demo``: the main job end to end on an embedded default (see transitnet.demo)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``demo`` subcommand."""
    p = sub.add_parser(
        "demo",
        help="Run simulate → ingest run → compact → match → fit → evaluate on 127.0.0.1.",
        description=(
            "Serves a SIMULATED VehiclePositions feed of the built-in network (or a recorded "
            "archive) on 127.0.0.1, polls it with `ingest run` at a speed-up, compacts the "
            "store, matches positions to shapes, trains a small forecaster and writes its "
            "evaluation report. Needs no network."
        ),
    )
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="Output folder.")
    p.add_argument("--archive", type=Path, help="Replay this archive (folder or tar of .pb).")
    p.add_argument(
        "--static", type=Path, help="Static GTFS: for --archive, or a real feed to simulate."
    )
    p.add_argument("--hours", type=float, default=8.0, help="Simulated hours (default 8).")
    p.add_argument(
        "--poll-s",
        type=float,
        default=0.05,
        help="Seconds between ingest ticks; one snapshot per tick (default 0.05).",
    )
    p.add_argument("--epochs", type=int, default=8, help="Training epochs (default 8).")
    p.add_argument("--seed", type=int, default=0, help="Seed (default 0).")
    p.add_argument("--no-model", action="store_true", help="Stop after ingestion.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print where everything is."""
    from transitnet.demo import DemoConfig, run_demo

    cfg = DemoConfig(
        out=args.out,
        archive=args.archive,
        static=args.static,
        hours=args.hours,
        poll_s=args.poll_s,
        epochs=args.epochs,
        seed=args.seed,
        train_model=not args.no_model,
    )
    summary = run_demo(cfg)
    sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
    if "report" in summary:
        sys.stdout.write(f"\nReport: {summary['report']}\n")
    return 0
