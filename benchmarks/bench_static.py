"""Static GTFS build: time and peak memory, cold vs cached, as ratios measured in one run.

Feeds (all real): Austin CapMetro ``gtfs_2017-01`` (folder; 310 shapes, 15,901 trips, no
stop_times) and, without ``--quick``, Caltrain ``ct.zip`` (33 shapes, 3,498 stop_times)
and the Auckland subset (R-written, 15 trips).

Rows (median wall time of N runs; memory from separate runs, so measuring it never slows
the timed runs): ``heap MiB`` is the peak traced by ``tracemalloc`` (Python and numpy
allocations; Arrow-backed pandas strings are not traced), ``RSS +MiB`` the peak resident
set growth of the step run once in a fresh process (Linux ``VmHWM`` after resetting it via
``/proc/self/clear_refs``; on other systems ``ru_maxrss`` minus the RSS before the step):

- ``gtfs-kit read_feed``: ``gtfs_kit.read_feed`` alone, the baseline every build pays;
- ``cold build + cache``: :func:`load_or_build_artefacts` on an empty cache (read with
  gtfs-kit, project shapes to UTM, stop distances, schedule, write Parquet);
- ``cached load``: the same call on the warm cache (hash the feed, read Parquet);
- ``resolve one day`` (Austin only): :func:`resolve_trip_shapes` on 2017-03-21
  (45k positions), for scale.

Each row prints ``x read_feed`` (time over the baseline's) and ``x cold`` (the cold build
over the row's time: how much the cache saves).

Usage: ``.venv/bin/python benchmarks/bench_static.py [--quick]``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import gtfs_kit as gk
import pandas as pd
from bench_common import DATA, build_parser, machine_facts

from transitnet.gtfs.artefacts import load_or_build_artefacts
from transitnet.gtfs.resolve import resolve_trip_shapes

FEEDS = {
    "austin gtfs_2017-01": DATA / "austin-capmetro" / "gtfs_2017-01",
    "caltrain ct.zip": DATA / "feeds" / "caltrain" / "ct.zip",
    "auckland subset": DATA / "auckland-2019-08-13" / "static_subset_2019-06",
}


def _status_kib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    return float("nan")


def _run_step(step: str, path: str, cache: str) -> object:
    if step == "read":
        return gk.read_feed(path)
    return load_or_build_artefacts(path, Path(cache))


def _child_peak(step: str, path: str, cache: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    """Run one step in this fresh process and report its peak RSS growth in MiB."""
    art = None
    if step.startswith("resolve ") or step == "warm":
        art = load_or_build_artefacts(path, Path(cache))  # warm cache: not part of the step
    extra = read_day(step.split()[1]) if step.startswith("resolve ") else None
    proc = Path("/proc/self/clear_refs")
    before = _status_kib("VmRSS") if proc.exists() else resource.getrusage(0).ru_maxrss
    if proc.exists():
        proc.write_text("5")  # reset VmHWM to the current RSS
    if extra is not None and art is not None:
        resolve_trip_shapes(extra, art)
    else:
        _run_step(step, path, cache)
    peak = _status_kib("VmHWM") if proc.exists() else resource.getrusage(0).ru_maxrss
    queue.put((peak - before) / 1024)


def peak_rss_mib(step: str, path: Path, cache: Path) -> float:
    """Run ``step`` once in a spawned process; return its peak RSS growth in MiB."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_peak, args=(step, str(path), str(cache), queue))
    proc.start()
    value = float(queue.get(timeout=600))
    proc.join()
    return value


def read_day(day: str) -> pd.DataFrame:
    """Read one Austin day of decoded positions."""
    csv = DATA / "austin-capmetro" / "vehicle_positions" / f"{day}.csv"
    ids = {"vehicle_id": str, "route_id": str, "trip_id": str}
    return pd.read_csv(csv, dtype=ids)  # type: ignore[arg-type]


def measure(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """Return (median seconds over ``runs``, peak traced MiB of one extra traced run)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return statistics.median(times), peak / 2**20


def bench_feed(name: str, path: Path, runs: int, resolve_day: str | None) -> None:
    """Measure one feed and print its rows."""
    with tempfile.TemporaryDirectory(prefix="bench-static-") as tmp:
        root = Path(tmp)
        counter = iter(range(10**6))

        def cold() -> object:
            return load_or_build_artefacts(path, root / f"cold{next(counter)}")

        warm_dir = root / "warm"
        art = load_or_build_artefacts(path, warm_dir)
        steps: dict[str, tuple[str, Callable[[], object]]] = {
            "gtfs-kit read_feed": ("read", lambda: gk.read_feed(path)),
            "cold build + cache": ("cold", cold),
            "cached load": ("warm", lambda: load_or_build_artefacts(path, warm_dir)),
        }
        if resolve_day:
            positions = read_day(resolve_day)
            steps[f"resolve {resolve_day} ({len(positions):,} rows)"] = (
                f"resolve {resolve_day}",
                lambda: resolve_trip_shapes(positions, art),
            )
        rows = {}
        for label, (step, fn) in steps.items():
            cache = root / f"rss-{step.replace(' ', '-')}" if step == "cold" else warm_dir
            rows[label] = (*measure(fn, runs), peak_rss_mib(step, path, cache))
    print(f"\n{name}: {len(art.shapes)} shapes, {len(art.trips):,} trips, "
          f"{0 if art.stop_times is None else len(art.stop_times):,} stop_times, "
          f"version {art.version}, {runs} runs")  # fmt: skip
    base, cold_s = rows["gtfs-kit read_feed"][0], rows["cold build + cache"][0]
    print(f"  {'step':<36}{'median s':>10}{'heap MiB':>10}{'RSS +MiB':>10}"
          f"{'x read_feed':>13}{'x cold':>9}")  # fmt: skip
    for label, (seconds, heap, rss) in rows.items():
        print(f"  {label:<36}{seconds:>10.4f}{heap:>10.1f}{rss:>10.1f}"
              f"{seconds / base:>13.2f}{cold_s / seconds:>9.1f}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (``--quick``: Austin only, 2 runs)."""
    args = build_parser(__doc__, "Austin only, 2 runs per step").parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not DATA.is_dir():
        sys.exit(f"real data not found at {DATA}")
    print(machine_facts("numpy", "pandas", "pyarrow", "gtfs-kit"))
    runs = 2 if args.quick else 5
    names = ["austin gtfs_2017-01"] if args.quick else list(FEEDS)
    for name in names:
        day = "2017-03-21" if name.startswith("austin") else None
        bench_feed(name, FEEDS[name], runs, day)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nprocess max RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
