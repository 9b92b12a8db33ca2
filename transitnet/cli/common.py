"""Pieces several ``transitnet`` subcommands share: exit statuses, argument types, stopping.

Not a subcommand (it has no ``register``): the subcommand modules import from it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from types import FrameType

logger = logging.getLogger(__name__)

#: Exit statuses: success; the command ran but some of its work failed; bad arguments,
#: config or input (a one-line message on stderr says which).
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def parse_date(text: str) -> date:
    """An argparse type: ``YYYY-MM-DD`` → :class:`datetime.date`.

    Raises:
        argparse.ArgumentTypeError: When ``text`` is not such a date.
    """
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {text!r}") from exc


@contextmanager
def stop_on_signals(stop: threading.Event, action: str) -> Iterator[None]:
    """Set ``stop`` on SIGTERM/SIGINT while inside (main thread only; others: no-op).

    Args:
        stop: The event the running work polls.
        action: What stopping means, logged after ``received <SIGNAL>:``.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        logger.info("received %s: %s", signal.Signals(signum).name, action)
        stop.set()

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def stop_after(stop: threading.Event, seconds: float | None) -> Iterator[None]:
    """Set ``stop`` once ``seconds`` have passed while inside (None or 0: never)."""
    timer = threading.Timer(seconds, stop.set) if seconds else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
