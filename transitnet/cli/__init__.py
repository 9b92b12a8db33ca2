"""The ``transitnet`` command: one entry point for every job.

Each subcommand lives in its own module under :mod:`transitnet.cli` and exposes
``register(subparsers)``. ``fit``/``validate``/``test``/``predict`` are handed to
LightningCLI (see :mod:`transitnet.cli.lightning`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from collections.abc import Sequence

#: Subcommand modules, in the order ``transitnet --help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "transitnet.cli.ingest",
    "transitnet.cli.compact",
    "transitnet.cli.replay",
    "transitnet.cli.simulate",
    "transitnet.cli.match",
    "transitnet.cli.timetable",
    "transitnet.cli.evaluate",
    "transitnet.cli.extend",
    "transitnet.cli.extend_classes",
    "transitnet.cli.demo",
)

#: Subcommands handled by LightningCLI; listed in ``--help`` for discoverability.
LIGHTNING_COMMANDS: dict[str, str] = {
    "fit": "Train a model (LightningCLI; see `transitnet fit --help` and transitnet/configs/).",
    "validate": "Run a model on the validation split (LightningCLI).",
    "test": "Run a model on the test split (LightningCLI).",
    "predict": "Write predictions for the predict period (LightningCLI).",
}


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="transitnet",
        description="Forecast where transit vehicles will be from GTFS-realtime feeds.",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="Logging verbosity (default: INFO). Logs go to stderr.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in LIGHTNING_COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler bound to whatever ``sys.stderr`` is when a record is emitted.

    ``logging.StreamHandler(sys.stderr)`` keeps the stream it was built with; when that
    stream is later closed or swapped (pytest's capture, notebooks, an embedding
    application), every record from a worker thread raises "I/O operation on closed file".
    """

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(level: str) -> None:
    """Send log records to the current stderr with UTC timestamps.

    Args:
        level: A ``logging`` level name (``DEBUG``, ``INFO``, ``WARNING``, ``ERROR``).
    """
    formatter = logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"
    )
    formatter.converter = time.gmtime
    handler = _CurrentStderrHandler()
    handler.setFormatter(formatter)
    logging.basicConfig(level=getattr(logging, level), handlers=[handler], force=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``transitnet`` command; returns the process exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in LIGHTNING_COMMANDS:
        from transitnet.cli.lightning import run_lightning_cli

        configure_logging("INFO")
        run_lightning_cli(args_list)
        return 0
    parser = build_parser()
    args, extra = parser.parse_known_args(args_list)
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    configure_logging(args.log_level)
    try:
        status: int = args.func(args)
    except (ValueError, OSError) as exc:
        # Bad input (a broken feed, a missing file, a malformed option) is reported in one
        # line; the traceback is shown with --log-level DEBUG.
        logging.getLogger("transitnet").debug("traceback", exc_info=True)
        logging.getLogger("transitnet").error("%s: %s", type(exc).__name__, exc)
        return 2
    return status
