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

import hashlib
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from itertools import islice

import pyarrow as pa
import pyarrow.compute as pc
from bench_common import (
    AUCKLAND_TAR,
    DATA,
    build_parser,
    iter_tar_files,
    machine_facts,
    time_best_of,
)

from transitnet.gtfs.feeds import read_static_feed
from transitnet.gtfs.static_rules import StaticRuleChecker
from transitnet.realtime.decode import DecodedFeed, decode_vehicle_positions
from transitnet.realtime.decode_fast import load_extension
from transitnet.realtime.validate import FeedValidator

logger = logging.getLogger("bench_validate")


def describe_machine() -> str:
    """One line of machine and library facts, and which decoder runs."""
    engine = "C extension" if load_extension() is not None else "pure Python"
    return f"{machine_facts('numpy', 'pyarrow')} | decoder {engine}"


def read_auckland(limit: int, stride: int) -> list[bytes]:
    """Every ``stride``-th snapshot of the day's archive, at most ``limit`` of them."""
    snapshots = (body for name, body in iter_tar_files(AUCKLAND_TAR) if name.endswith(".pb"))
    return list(islice(snapshots, 0, limit * stride, stride))


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

    t_dec, _, rows = time_best_of(decode_all, repeat)
    t_val = time_best_of(validate_all, repeat).wall_s
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
    args = build_parser(__doc__, "fewer snapshots and repeats").parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    repeat = 2 if args.quick else 5
    print(describe_machine())
    tfnsw = [p.read_bytes() for p in sorted((DATA / "feeds" / "tfnsw-2020-09-01").glob("*.pb.gz"))]
    measure("tfnsw feed-only", tfnsw, repeat)
    auckland = read_auckland(60, 1) if args.quick else read_auckland(600, 4)
    measure("auckland feed-only", auckland, repeat)
    feed = read_static_feed(DATA / "auckland-2019-08-13" / "static_subset_2019-06")
    checker = StaticRuleChecker(feed)
    measure("auckland + static subset", auckland, repeat, checker, auckland_remap(feed))


if __name__ == "__main__":
    main()
