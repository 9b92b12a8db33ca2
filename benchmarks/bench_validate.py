"""Throughput of reference-validator flagging, as a ratio to decoding the same snapshots.

Baseline (measured in the same run): ``decode_vehicle_positions`` (C extension when built)
on the same bytes. Validation is timed on already-decoded snapshots. Figures:

- TfNSW (5 snapshots x ~5,000 buses): feed-only rules, rows/s and validate/decode ratio;
- Auckland (2019-08-13; every 4th snapshot of the day, or the first 60 with ``--quick``):
  feed-only rules, then with the static checker built from the June 2019 static subset.
  Realtime trip ids
  carry a later feed version, so for the static run each row whose route shares its
  prefix with a subset route is given that route's subset trip (real positions against
  real shapes, which makes E028/E029 do real geometry work); other rows stay unknown (E003).

Usage: ``.venv/bin/python benchmarks/bench_validate.py [--quick]``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import platform
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transitnet.gtfs.feeds import read_static_feed
from transitnet.gtfs.static_rules import StaticRuleChecker
from transitnet.realtime.decode import DecodedFeed, decode_vehicle_positions
from transitnet.realtime.decode_fast import load_extension
from transitnet.realtime.validate import FeedValidator

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
logger = logging.getLogger("bench_validate")


def machine_facts() -> str:
    engine = "C extension" if load_extension() is not None else "pure Python"
    return (
        f"{platform.platform()} | {platform.processor() or platform.machine()} | "
        f"python {sys.version.split()[0]} | cpus {os.cpu_count()} | "
        f"load {os.getloadavg()[0]:.1f} | numpy {np.__version__} | pyarrow {pa.__version__} | "
        f"decoder {engine}"
    )


def read_auckland(limit: int, stride: int) -> list[bytes]:
    """Every ``stride``-th snapshot of the day's archive, at most ``limit`` of them."""
    bodies = []
    with tarfile.open(DATA / "auckland-2019-08-13" / "vehicle_positions.tar.xz", "r:xz") as tar:
        members = (m for m in tar if m.isfile() and m.name.endswith(".pb"))
        for i, member in enumerate(members):
            handle = tar.extractfile(member) if i % stride == 0 else None
            if handle is not None:
                bodies.append(handle.read())
            if len(bodies) >= limit:
                break
    return bodies


def best_of(repeat: int, fn: Callable[[], int]) -> tuple[float, int]:
    """Best wall time of ``repeat`` runs of ``fn`` (which returns the rows it handled)."""
    best, rows = float("inf"), 0
    for _ in range(repeat):
        start = time.perf_counter()
        rows = fn()
        best = min(best, time.perf_counter() - start)
    return best, rows


def measure(name: str, bodies: list[bytes], repeat: int, checker: StaticRuleChecker | None = None,
            remap: Callable[[DecodedFeed], DecodedFeed] | None = None) -> None:  # fmt: skip
    shas = [hashlib.sha256(b).hexdigest() for b in bodies]

    def decode_all() -> int:
        return sum(decode_vehicle_positions(b, feed_id=name).positions.num_rows for b in bodies)

    decoded = [decode_vehicle_positions(b, feed_id=name) for b in bodies]
    if remap is not None:
        decoded = [remap(d) for d in decoded]
    nows = [datetime.fromtimestamp(d.header.timestamp_raw or 0, UTC) for d in decoded]

    def validate_all() -> int:
        validator = FeedValidator(name, checker)
        out = [
            validator.validate(d, now=t, sha256=s)
            for d, t, s in zip(decoded, nows, shas, strict=True)
        ]
        return sum(v.positions.num_rows for v in out)

    t_dec, rows = best_of(repeat, decode_all)
    t_val, _ = best_of(repeat, validate_all)
    print(
        f"{name:<28} rows {rows:>9,}  decode {rows / t_dec:>11,.0f} rows/s (baseline 1.00)  "
        f"validate {rows / t_val:>11,.0f} rows/s ({t_dec / t_val:5.1f}x decode)  "
        f"decode+validate {rows / (t_dec + t_val):>9,.0f} rows/s ({t_dec / (t_dec + t_val):.2f})"
    )


def auckland_remap(checker_feed: object) -> Callable[[DecodedFeed], DecodedFeed]:
    trips = checker_feed.trips  # type: ignore[attr-defined]
    prefix = trips["route_id"].str.split("-").str[0]
    first = trips.assign(prefix=prefix).drop_duplicates("prefix")
    lookup = dict(zip(first["prefix"], first["trip_id"], strict=True))

    def remap(decoded: DecodedFeed) -> DecodedFeed:
        table = decoded.positions
        routes = pc.fill_null(table.column("route_id"), "").to_pylist()
        trip_ids = table.column("trip_id").to_pylist()
        new = [lookup.get(r.split("-")[0], t) for r, t in zip(routes, trip_ids, strict=True)]
        index = table.schema.get_field_index("trip_id")
        table = table.set_column(index, "trip_id", pa.array(new, pa.string()))
        return replace(decoded, positions=table)

    return remap


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer snapshots and repeats")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    repeat = 2 if args.quick else 5
    print(machine_facts())
    tfnsw = [p.read_bytes() for p in sorted((DATA / "feeds" / "tfnsw-2020-09-01").glob("*.pb.gz"))]
    measure("tfnsw feed-only", tfnsw, repeat)
    auckland = read_auckland(60, 1) if args.quick else read_auckland(600, 4)
    measure("auckland feed-only", auckland, repeat)
    feed = read_static_feed(DATA / "auckland-2019-08-13" / "static_subset_2019-06")
    checker = StaticRuleChecker(feed)
    measure("auckland + static subset", auckland, repeat, checker, auckland_remap(feed))


if __name__ == "__main__":
    main()
