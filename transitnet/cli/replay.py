"""``transitnet replay SOURCE``: serve a recorded archive over HTTP on 127.0.0.1.

SOURCE is a folder or tar of ``.pb`` snapshots (served in name order, byte for byte) or
a flattened table (CSV/Parquet, any layout ``ingest import`` reads), re-encoded into one
FeedMessage per timestamp. The feed URL is printed on stdout (and written to
``--url-file``); ``/status`` tells the position. Stops on SIGTERM/SIGINT, after
``--stop-after-s``, or with ``--exit-when-done`` once the last snapshot was served.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any

from transitnet.cli.common import EXIT_OK, EXIT_USAGE, stop_after, stop_on_signals

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    """Add the ``replay`` subcommand."""
    parser = sub.add_parser(
        "replay",
        help="serve a recorded archive (.pb folder/tar or flattened table) over HTTP",
        description="Serve recorded GTFS-realtime snapshots on 127.0.0.1 in order at a "
        "speed-up, with ETag/Last-Modified and a /status JSON endpoint.",
    )
    add_server_options(parser)
    parser.add_argument("source", type=Path, metavar="SOURCE",
                        help="folder or tar (.tar, .tar.gz, .tar.xz) of .pb snapshots, or a "
                        "CSV/Parquet positions table")  # fmt: skip
    parser.add_argument("--columns", default=None, metavar="JSON",
                        help='for tables of another layout: {"source column": "positions '
                        'column"}')  # fmt: skip
    parser.add_argument("--window-s", type=int, default=30, metavar="S",
                        help="for tables without header timestamps: one snapshot per S "
                        "seconds of fixes (default 30)")  # fmt: skip
    parser.set_defaults(func=handle_replay)


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``replay`` and ``simulate``: speed, loop, port, stop conditions."""
    parser.add_argument("--speed", type=float, default=1.0, metavar="X",
                        help="recorded seconds per wall second (default 1; 0 = next snapshot "
                        "on every request)")  # fmt: skip
    parser.add_argument("--loop", action="store_true", help="start again after the last snapshot")
    parser.add_argument("--port", type=int, default=0, metavar="PORT",
                        help="TCP port on 127.0.0.1 (default 0: pick a free one)")  # fmt: skip
    parser.add_argument("--url-file", type=Path, default=None, metavar="PATH",
                        help="also write the feed URL into this file")  # fmt: skip
    parser.add_argument(
        "--exit-when-done",
        action="store_true",
        help="stop once the last snapshot has been served (without --loop)",
    )
    parser.add_argument("--stop-after-s", type=float, default=None, metavar="S",
                        help="stop after S seconds")  # fmt: skip


def handle_replay(args: argparse.Namespace) -> int:
    """Serve ``args.source`` until stopped; 0 on a clean stop, 2 for bad arguments."""
    from transitnet.realtime.replay import load_snapshots, snapshots_from_table
    from transitnet.store.importers_flat import LayoutError, is_table_path, read_flat_table

    try:
        if is_table_path(args.source):
            columns = json.loads(args.columns) if args.columns else None
            table = read_flat_table(args.source, columns=columns).table
            snapshots = snapshots_from_table(table, bin_s=args.window_s)
        else:
            snapshots = load_snapshots(args.source)
    except (LayoutError, ValueError, OSError) as exc:
        logger.error("cannot replay %s: %s", args.source, exc)
        return EXIT_USAGE
    return serve_snapshots(snapshots, args)


def serve_snapshots(snapshots: list[Any], args: argparse.Namespace) -> int:
    """Run a :class:`~transitnet.realtime.replay.ReplayServer` with the shared options."""
    from transitnet.realtime.replay import ReplayServer

    if args.speed < 0 or (args.stop_after_s is not None and args.stop_after_s <= 0):
        logger.error("--speed must be >= 0 and --stop-after-s > 0")
        return EXIT_USAGE
    try:
        server = ReplayServer(snapshots, speed=args.speed, loop=args.loop, port=args.port)
    except (OSError, ValueError) as exc:
        logger.error("cannot start the replay server: %s", exc)
        return EXIT_USAGE
    stop = threading.Event()
    with server:
        print(server.url, flush=True)
        if args.url_file is not None:
            from transitnet.store.atomic import write_text_atomic

            write_text_atomic(args.url_file, server.url + "\n")
        _wait(server, stop, args)
    logger.info("replay stopped after %d requests", server.status()["served"])
    return EXIT_OK


def _wait(server: Any, stop: threading.Event, args: argparse.Namespace) -> None:
    with stop_on_signals(stop, "stopping the replay"), stop_after(stop, args.stop_after_s):
        while not stop.wait(0.1):
            if args.exit_when_done and not args.loop and server.status()["done"]:
                logger.info("last snapshot served: stopping")
                break
    sys.stdout.flush()
