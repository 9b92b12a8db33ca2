"""``transitnet simulate``: a realistic, clearly simulated VehiclePositions feed.

Vehicles of a static GTFS feed (``--static``, or the built-in network) follow their
trips' shapes on schedule with persistent delays, dwells, GPS noise and missing/stale
fixes (see :mod:`transitnet.realtime.simulate`). The snapshots are either written to
``--out DIR`` (one ``sim-<UTC>.pb`` per step) or served over HTTP on 127.0.0.1 through
the replay server (same options as ``transitnet replay``).
"""

from __future__ import annotations

import argparse
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from transitnet.cli.common import EXIT_OK, EXIT_USAGE
from transitnet.cli.replay import add_server_options, serve_snapshots

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    """Add the ``simulate`` subcommand."""
    parser = sub.add_parser(
        "simulate",
        help="simulate a VehiclePositions feed from static GTFS (built-in network by default)",
        description="Turn a static GTFS feed into a realistic SIMULATED VehiclePositions "
        "stream (ids prefixed 'sim-'), written to --out or served over HTTP.",
    )
    _add_window_options(parser)
    _add_realism_options(parser)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="write the snapshots to DIR instead of serving them",
    )
    add_server_options(parser)
    parser.set_defaults(func=handle_simulate)


def _add_window_options(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--static",
        type=Path,
        default=None,
        metavar="PATH",
        help="static GTFS zip or folder (default: the built-in network)",
    )
    add(
        "--start",
        default="now",
        metavar="ISO",
        help="first snapshot time, ISO 8601 with offset (e.g. 2025-01-15T08:00:00+01:00) or "
        "'now' (default)",
    )
    add(
        "--duration-s",
        type=float,
        default=3600.0,
        metavar="S",
        help="simulated window length in seconds (default 3600)",
    )
    add(
        "--step-s",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds between snapshots (default 30)",
    )
    add(
        "--max-trips",
        type=int,
        default=None,
        metavar="N",
        help="simulate only the first N trips of the window",
    )
    add(
        "--max-vehicles",
        type=int,
        default=None,
        metavar="N",
        help="simulate only the first N vehicles of the window",
    )


def _add_realism_options(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    add(
        "--gps-noise-m",
        type=float,
        default=5.0,
        metavar="M",
        help="GPS noise standard deviation per axis (default 5 m)",
    )
    add(
        "--p-missing",
        type=float,
        default=0.03,
        metavar="P",
        help="probability a vehicle is absent from a snapshot (default 0.03)",
    )
    add(
        "--p-stale",
        type=float,
        default=0.05,
        metavar="P",
        help="probability a vehicle repeats its previous fix (default 0.05)",
    )


def parse_start(text: str) -> datetime | None:
    """``now`` → None; otherwise an ISO 8601 time with a UTC offset.

    Raises:
        ValueError: for unparseable or naive times (the zone is never guessed).
    """
    if text.strip().lower() == "now":
        return None
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"--start {text!r} has no UTC offset (e.g. +01:00 or Z)")
    return moment.astimezone(UTC)


def handle_simulate(args: argparse.Namespace) -> int:
    """Simulate, then write or serve; 0 on success, 2 for bad arguments or feeds."""
    from transitnet.realtime.sim_plan import StaticFeedError
    from transitnet.realtime.simulate import (
        SimConfig,
        read_static,
        simulate_snapshots,
        write_snapshot_files,
    )

    try:
        config = _build_config(args, SimConfig)
        snapshots = simulate_snapshots(read_static(args.static), config)
    except (StaticFeedError, ValueError) as exc:
        logger.error("cannot simulate: %s", exc)
        return EXIT_USAGE
    if args.out is not None:
        write_snapshot_files(snapshots, args.out)
        return EXIT_OK
    return serve_snapshots(snapshots, args)


def _build_config(args: argparse.Namespace, config_type: Any) -> Any:
    checks = [
        (args.duration_s > 0 and args.step_s > 0, "--duration-s and --step-s must be > 0"),
        (0 <= args.p_missing and 0 <= args.p_stale and args.p_missing + args.p_stale < 1,
         "--p-missing and --p-stale must be >= 0 and sum below 1"),
        (args.gps_noise_m >= 0, "--gps-noise-m must be >= 0"),
        (all(v is None or v > 0 for v in (args.max_trips, args.max_vehicles)),
         "--max-trips/--max-vehicles must be positive"),
    ]  # fmt: skip
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    return config_type(
        start=parse_start(args.start), duration_s=args.duration_s, step_s=args.step_s,
        seed=args.seed, max_trips=args.max_trips, max_vehicles=args.max_vehicles,
        gps_noise_m=args.gps_noise_m, p_missing=args.p_missing, p_stale=args.p_stale,
    )  # fmt: skip
