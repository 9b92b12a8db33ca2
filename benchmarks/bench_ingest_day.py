"""The whole Auckland day (2,280 snapshots) from tar to deduplicated Parquet.

``ours``: :func:`transitnet.store.importers.import_paths` on the ``.tar.xz`` — stream the
tar, archive every snapshot raw (batched durable publish), decode, validate (feed-only
rules, cross-snapshot state), deduplicate rows exactly, write zstd Parquet. It runs in a
child process so its wall time and peak RSS (``ru_maxrss``) are its own.

``naive`` baseline, measured in the same run: per snapshot ``ParseFromString`` +
``MessageToDict`` + ``pandas.json_normalize``, one ``pandas.concat``, ``drop_duplicates`` on
(vehicle id, timestamp, trip id, start time) and ``to_parquet``, on every Nth snapshot
(default 20), scaled to the day by rows; plus the measured time to stream the tar once.
The baseline is timed in CPU seconds (it is single-threaded, so that equals its wall time
on an idle machine); ours is reported both as wall time and as CPU time, so a machine
shared with other jobs is visible instead of silently inflating the figures.

Prints the machine facts, both times, the ratio, rows/s, peak memory, and the bars
(under 60 s and under 2 GiB on a 2-core machine).

Usage: ``.venv/bin/python benchmarks/bench_ingest_day.py [--quick] [--every N]``
(``--quick``: the first 300 snapshots).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from itertools import islice
from pathlib import Path

import pandas as pd
from bench_common import DATA, build_parser, iter_tar_files, machine_facts
from google.protobuf.json_format import MessageToDict
from google.transit import gtfs_realtime_pb2

TAR = "auckland-2019-08-13/vehicle_positions.tar.xz"
BAR_WALL_S = 60.0
BAR_RSS_GIB = 2.0
QUICK_SNAPSHOTS = 300

CHILD = """
import json, resource, sys, time
from pathlib import Path
from transitnet.store.importers import import_paths
before = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
r = import_paths(Path(sys.argv[1]), "akl", [Path(sys.argv[2])], progress=False)
wall = time.perf_counter() - t0
usage = resource.getrusage(resource.RUSAGE_SELF)
rss = usage.ru_maxrss * 1024
cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
print(json.dumps({"wall_s": wall, "cpu_s": cpu, "rss_bytes": rss, "snapshots": r.snapshots,
                  "rows_read": r.rows_read, "rows_written": r.rows_written}))
"""


def read_members(tar_path: Path, limit: int | None) -> list[tuple[str, bytes]]:
    """Stream the tar once; returns ``(name, bytes)`` of the first ``limit`` members."""
    return list(islice(iter_tar_files(tar_path), limit))


def write_subset_tar(members: list[tuple[str, bytes]], path: Path) -> None:
    """An uncompressed-then-xz tar of ``members`` (the ``--quick`` input)."""
    with tarfile.open(path, "w:xz") as tar:
        for name, body in members:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))


def run_ours(tar_path: Path, store: Path) -> dict[str, float]:
    """Import in a child process; returns its JSON report."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(store), str(tar_path)],
                         check=True, capture_output=True, text=True)  # fmt: skip
    report: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return report


def run_naive(members: list[tuple[str, bytes]], out: Path) -> tuple[float, int]:
    """The naive path on ``members``; returns (CPU seconds, rows decoded).

    CPU time, not wall time: the naive path is single-threaded, so on an idle machine the
    two agree, and on a busy one CPU time does not penalise the baseline.
    """
    t0 = time.process_time()
    frames = []
    for name, body in members:
        msg = gtfs_realtime_pb2.FeedMessage()
        msg.ParseFromString(body)
        entities = MessageToDict(msg, preserving_proto_field_name=True).get("entity", [])
        frame = pd.json_normalize(entities)
        frame["source_file"] = name
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    key = [c for c in ("vehicle.vehicle.id", "vehicle.timestamp", "vehicle.trip.trip_id",
                       "vehicle.trip.start_time") if c in table.columns]  # fmt: skip
    rows = len(table)
    table.drop_duplicates(subset=key).to_parquet(out, compression="zstd")
    return time.process_time() - t0, rows


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(__doc__, "first 300 snapshots only")
    parser.add_argument("--every", type=int, default=20, help="naive path on every Nth snapshot")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    args = parser.parse_args(argv)
    facts = machine_facts("pyarrow", "pandas", "protobuf")
    print(f"machine: {facts}", flush=True)
    tar_path = args.data / TAR
    with tempfile.TemporaryDirectory(prefix="bench-ingest-day-") as tmp:
        t0 = time.process_time()
        members = read_members(tar_path, QUICK_SNAPSHOTS if args.quick else None)
        stream_s = time.process_time() - t0
        source = tar_path
        if args.quick:
            source = Path(tmp) / "quick.tar.xz"
            write_subset_tar(members, source)
        ours = run_ours(source, Path(tmp) / "store")
        subset = members[:: args.every]
        naive_s, naive_rows = run_naive(subset, Path(tmp) / "naive.parquet")
    report(ours, naive_s, naive_rows, stream_s, len(subset), args.quick)
    return 0


def report(ours: dict[str, float], naive_s: float, naive_rows: int, stream_s: float,
           n_subset: int, quick: bool) -> None:  # fmt: skip
    rows = ours["rows_read"]
    naive_day = naive_s * rows / naive_rows + stream_s
    rss_gib = ours["rss_bytes"] / 2**30
    print(f"input: {int(ours['snapshots'])} snapshots, {int(rows)} rows -> "
          f"{int(ours['rows_written'])} stored after dedup")  # fmt: skip
    print(f"ours : {ours['wall_s']:8.1f} s  {rows / ours['wall_s']:>10,.0f} rows/s  "
          f"peak RSS {rss_gib:.2f} GiB  (CPU {ours['cpu_s']:.1f} s user+sys over all threads; "
          "wall > CPU means the machine was busy)")  # fmt: skip
    print(
        f"naive: {naive_day:8.1f} s  {rows / naive_day:>10,.0f} rows/s  (measured on "
        f"{n_subset} snapshots / {naive_rows} rows, scaled; + {stream_s:.1f} s tar stream)"
    )
    print(
        f"ratio: ours is {naive_day / ours['wall_s']:.1f}x faster than naive (wall), "
        f"{naive_day / ours['cpu_s']:.1f}x by CPU time"
    )
    if not quick:
        wall_ok = "PASS" if ours["wall_s"] < BAR_WALL_S else "FAIL"
        rss_ok = "PASS" if rss_gib < BAR_RSS_GIB else "FAIL"
        print(f"bars : wall < {BAR_WALL_S:.0f} s {wall_ok}; peak RSS < {BAR_RSS_GIB} GiB {rss_ok}")


if __name__ == "__main__":
    sys.exit(main())
