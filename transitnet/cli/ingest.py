"""``transitnet ingest once|run|import``: scheduled polling and backfills.

- ``ingest once --config FEEDS.yaml --store DIR``: one tick for every feed; exit status 0
  when every feed succeeded, 1 when any failed, 2 for a bad config.
- ``ingest run --config FEEDS.yaml --store DIR [--duration-s S] [--max-ticks N]``: the
  resident loop; SIGTERM/SIGINT stop it cleanly (exit 0).
- ``ingest import --store DIR --feed-id ID [--columns JSON] [--static PATH] PATH...``:
  backfill recorded archives (:func:`transitnet.store.importers.import_paths`).
"""

from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path
from typing import Any

from transitnet.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, stop_after, stop_on_signals

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    """Add ``ingest`` and its sub-commands to the top-level subparsers."""
    parser = sub.add_parser(
        "ingest",
        help="poll GTFS-realtime feeds into the store, or backfill recorded archives",
        description="Poll GTFS-realtime VehiclePositions feeds into DIR (raw/, positions/, "
        "fetch_log/, state/), or import recorded archives.",
    )
    isub = parser.add_subparsers(dest="ingest_command", metavar="{once,run,import}", required=True)
    once = isub.add_parser(
        "once", help="one tick for every feed (cron, systemd timer, CronJob)",
        description="Poll every feed of FEEDS.yaml once. Exit status: 0 all feeds succeeded, "
        "1 some failed, 2 bad config.",
    )  # fmt: skip
    _add_config_and_store(once)
    once.set_defaults(func=handle_once)
    run = isub.add_parser(
        "run", help="resident polling loop (sub-minute intervals)",
        description="Poll every feed on its interval until SIGTERM/SIGINT (clean shutdown: "
        "in-flight writes finish, nothing new starts).",
    )  # fmt: skip
    _add_config_and_store(run)
    run.add_argument("--duration-s", type=float, default=None, metavar="S",
                     help="stop cleanly after S seconds (demos, tests)")  # fmt: skip
    run.add_argument("--max-ticks", type=int, default=None, metavar="N",
                     help="stop after N ticks per feed (started or dropped)")  # fmt: skip
    run.set_defaults(func=handle_run)
    _register_import(isub)


def _add_config_and_store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, metavar="FEEDS.yaml",
                        help="feed config: 'feeds:' list of mappings with id and url")  # fmt: skip
    parser.add_argument("--store", type=Path, required=True, metavar="DIR",
                        help="store root (created if missing)")  # fmt: skip


def _register_import(isub: Any) -> None:
    imp = isub.add_parser(
        "import", help="backfill recorded archives into the positions store",
        description="Import .pb snapshots (folders, tars), CapMetrics CSV, or flattened "
        "GTFS-rt tables (dotted column names) into DIR under one feed id.",
    )  # fmt: skip
    imp.add_argument("--store", type=Path, required=True, metavar="DIR", help="store root")
    imp.add_argument("--feed-id", required=True, metavar="ID", help="feed id for every row")
    imp.add_argument(
        "--columns", default=None, metavar="JSON",
        help='mapping {"source column": "positions column"} for other layouts',
    )  # fmt: skip
    imp.add_argument(
        "--static", default=None, metavar="PATH",
        help="static GTFS (zip, folder or URL) to evaluate the static rules",
    )  # fmt: skip
    imp.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                     help="files or folders to import")  # fmt: skip
    imp.set_defaults(func=handle_import)


def _load(args: argparse.Namespace) -> Any:
    from data_pipelines.config import ConfigError, load_config

    try:
        return load_config(args.config)
    except ConfigError as exc:
        logger.error("%s", exc)
        return None


def handle_once(args: argparse.Namespace) -> int:
    """``ingest once``: 0 when every feed succeeded, 1 otherwise, 2 for a bad config."""
    config = _load(args)
    if config is None:
        return EXIT_USAGE
    from data_pipelines.ingest import run_once

    args.store.mkdir(parents=True, exist_ok=True)
    return EXIT_OK if run_once(config, args.store) else EXIT_FAILED


def handle_run(args: argparse.Namespace) -> int:
    """``ingest run``: poll until a signal, ``--duration-s`` or ``--max-ticks``; 0 on clean exit."""
    config = _load(args)
    if config is None:
        return EXIT_USAGE
    if (args.duration_s is not None and args.duration_s <= 0) or (
        args.max_ticks is not None and args.max_ticks < 1
    ):
        logger.error("--duration-s and --max-ticks must be positive")
        return EXIT_USAGE
    from data_pipelines.ingest import run_forever

    args.store.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    with (
        stop_on_signals(stop, "finishing in-flight writes, starting nothing new"),
        stop_after(stop, args.duration_s),
    ):
        run_forever(config, args.store, stop_event=stop, max_ticks=args.max_ticks)
    return EXIT_OK


def handle_import(args: argparse.Namespace) -> int:
    """``ingest import``: 0 when every input was imported, 1 otherwise, 2 for bad arguments."""
    import json

    columns = None
    if args.columns is not None:
        try:
            columns = json.loads(args.columns)
        except json.JSONDecodeError as exc:
            logger.error("--columns is not valid JSON: %s", exc)
            return EXIT_USAGE
        if not isinstance(columns, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in columns.items()
        ):
            logger.error('--columns must be a JSON object {"source": "target", ...}')
            return EXIT_USAGE
    return _run_import(args, columns)


def _run_import(args: argparse.Namespace, columns: dict[str, str] | None) -> int:
    from data_pipelines.ingest import load_static_checker
    from transitnet.store.importers import import_paths
    from transitnet.store.layout import InvalidFeedIdError

    checker = load_static_checker(args.static, args.feed_id) if args.static else None
    if args.static and checker is None:
        return EXIT_USAGE
    try:
        result = import_paths(args.store, args.feed_id, list(args.paths), columns=columns,
                              static_checker=checker)  # fmt: skip
    except (FileNotFoundError, InvalidFeedIdError, ValueError) as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    logger.info("%s", result.summary())
    for path, error in result.failed:
        logger.error("could not import %s: %s", path, error)
    return EXIT_OK if result.ok else EXIT_FAILED
