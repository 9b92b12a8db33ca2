"""Helpers every ``benchmarks/bench_*.py`` script shares: data paths, facts, timing, inputs.

The scripts run from the repository root (``.venv/bin/python benchmarks/bench_x.py``), so
Python puts ``benchmarks/`` on the path and they import this module as ``bench_common``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tarfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Generic, NamedTuple, TypeVar

import pyarrow as pa

#: The shared recorded data, seen from the repository root.
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
#: The Auckland day 2019-08-13: 2,280 VehiclePositions snapshots (``.pb``), in time order.
AUCKLAND_TAR = DATA / "auckland-2019-08-13" / "vehicle_positions.tar.xz"

T = TypeVar("T")


def build_parser(doc: str | None, quick_help: str) -> argparse.ArgumentParser:
    """Return an argument parser described by the first line of ``doc``, with ``--quick``."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    return parser


def add_work_option(parser: argparse.ArgumentParser) -> None:
    """``--work``: the folder where exp_forecast.py keeps its prepared stores."""
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("runs/exp_work"),
        help="Working folder of exp_forecast.py: the Austin store is imported and matched "
        "there on the first run and reused after (default: %(default)s).",
    )


def machine_facts(*packages: str) -> str:
    """Return one line of machine facts, then the version of each named distribution.

    The facts: UTC time, platform, CPU model, logical CPUs, RAM, 1-minute load average
    (the machine may be shared) and Python version.
    """
    cpu = platform.processor() or platform.machine() or "?"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                 if ln.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    facts = [f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}", platform.platform(), cpu,
             f"cpus {os.cpu_count()}", f"RAM {_ram_gib():.1f} GiB", f"load1 {load:.2f}",
             f"python {platform.python_version()}"]  # fmt: skip
    return " | ".join(facts + [f"{name} {_version(name)}" for name in packages])


def _ram_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):  # not on every platform
        return float("nan")


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def pin_to_one_core() -> str:
    """Pin this process (and Arrow's pool) to one CPU; returns a description."""
    pa.set_cpu_count(1)
    if hasattr(os, "sched_setaffinity"):
        cpu = sorted(os.sched_getaffinity(0))[-1]
        os.sched_setaffinity(0, {cpu})
        return f"pinned to cpu {cpu}"
    return "not pinned (no sched_setaffinity)"


class Timing(NamedTuple, Generic[T]):
    """What :func:`time_best_of` measured.

    Attributes:
        wall_s: Best wall-clock seconds of one call.
        cpu_s: Best CPU seconds of this process (all its threads) during one call.
        value: What the last call returned.
    """

    wall_s: float
    cpu_s: float
    value: T


def time_best_of(fn: Callable[[], T], repeats: int) -> Timing[T]:
    """Call ``fn`` ``repeats`` times (at least once); return the best wall and CPU times."""
    wall, cpu = float("inf"), float("inf")
    for _ in range(max(repeats, 1)):
        start, start_cpu = time.perf_counter(), time.process_time()
        value = fn()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return Timing(wall, cpu, value)


def iter_tar_files(path: Path) -> Iterator[tuple[str, bytes]]:
    """Stream a tar (any compression) once: ``(name, bytes)`` of each regular file, in order."""
    with tarfile.open(path, mode="r|*") as tar:
        for member in tar:
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is not None:
                yield member.name, handle.read()
