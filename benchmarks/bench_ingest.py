"""Cost of a whole ingest tick and of compaction, as ratios to baselines from the same run.

Data: real Auckland VehiclePositions snapshots of 2019-08-13 (the whole day, 2,280
snapshots; ``--quick``: 120 rush-hour ones from 08:00), served in order from a loopback
HTTP server in this process.

Rows (times per snapshot, best of one pass over the set):

- ``decode``: ``decode_vehicle_positions`` on the in-memory bytes (baseline);
- ``decode + validate``: plus ``FeedValidator.validate`` (feed-only rules);
- ``HTTP GET``: a plain ``requests`` GET of the same bodies from the loopback server;
- ``ingest tick``: :func:`transitnet.ingest.ingest_feed`, i.e. fetch → archive (``.pb`` and
  ``.meta.json``, fsynced) → decode → validate → row dedup → Parquet part → fetch-log part →
  state file. Printed as ``x decode+validate`` and ``x (GET + decode+validate)``: the
  second ratio is the storage overhead on top of the unavoidable work.

Then ``compact``: the day's per-tick parts merged, deduplicated and sorted into one file
(in a fresh process, whose peak RSS is reported), against reading the same parts one by
one (``pyarrow.parquet.read_table``) as the baseline.

Machine facts (incl. the load average: the machine may be shared) are logged first.

Usage: ``.venv/bin/python benchmarks/bench_ingest.py [--quick]``.
"""

from __future__ import annotations

import logging
import multiprocessing
import resource
import shutil
import tempfile
import threading
import time
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from pathlib import Path

import pyarrow.parquet as pq
import requests
from bench_common import AUCKLAND_TAR, build_parser, iter_tar_files, machine_facts

from transitnet.ingest import ingest_feed
from transitnet.realtime.decode import decode_vehicle_positions
from transitnet.realtime.fetch import FeedEndpoint
from transitnet.realtime.validate import FeedValidator
from transitnet.store.compact import compact_store

logger = logging.getLogger("bench_ingest")


def read_snapshots(quick: bool) -> list[bytes]:
    """The day's snapshots in order (``quick``: 120 from 08:00)."""
    skip, limit = (360, 120) if quick else (0, 10**9)
    return [body for _, body in islice(iter_tar_files(AUCKLAND_TAR), skip, skip + limit)]


def serve(bodies: list[bytes]) -> tuple[ThreadingHTTPServer, str]:
    """Serve ``bodies`` in order on /vp (the last repeats)."""
    counter = iter(range(10**9))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = bodies[min(next(counter), len(bodies) - 1)]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/vp"


def time_decode(bodies: list[bytes], validate: bool) -> float:
    validator = FeedValidator("akl")
    t0 = time.perf_counter()
    for n, body in enumerate(bodies):
        decoded = decode_vehicle_positions(body, feed_id="akl")
        if validate:
            validator.validate(decoded, now=datetime(2019, 8, 13, tzinfo=UTC), sha256=str(n))
    return time.perf_counter() - t0


def time_get(bodies: list[bytes]) -> float:
    server, url = serve(bodies)
    try:
        with requests.Session() as session:
            t0 = time.perf_counter()
            for _ in bodies:
                session.get(url, timeout=10).content  # noqa: B018 - the read is the work
            return time.perf_counter() - t0
    finally:
        server.shutdown()


def time_ingest(bodies: list[bytes], store: Path) -> tuple[float, int]:
    server, url = serve(bodies)
    endpoint = FeedEndpoint("akl", url)
    start = datetime(2019, 8, 13, 5, tzinfo=UTC)
    rows = 0
    try:
        with requests.Session() as session:
            t0 = time.perf_counter()
            for n in range(len(bodies)):
                now = start + timedelta(seconds=30 * n)
                result = ingest_feed(store, endpoint, session=session, clock=lambda now=now: now)
                if not result.ok:
                    raise RuntimeError(f"tick {n} failed: {result.outcome} {result.error_class}")
                rows += result.rows_written
            return time.perf_counter() - t0, rows
    finally:
        server.shutdown()


def compact_in_child(store: str) -> tuple[float, int, int, float]:
    """Compact ``store`` (run in a fresh process so its peak RSS is its own)."""
    t0 = time.perf_counter()
    results = compact_store(Path(store), before=date(2100, 1, 1), kinds=["positions"])
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return secs, sum(r.rows_in for r in results), sum(r.rows_out for r in results), peak


def time_compaction(store: Path) -> tuple[float, float, int, int, float]:
    parts = sorted((store / "positions").rglob("part-*.parquet"))
    t0 = time.perf_counter()
    for part in parts:
        pq.read_table(part)
    read_s = time.perf_counter() - t0
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        compact_s, rows_in, rows_out, peak = pool.apply(compact_in_child, (str(store),))
    return read_s, compact_s, rows_in, rows_out, peak


def main() -> None:
    args = build_parser(__doc__, "120 snapshots instead of 2,280").parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("transitnet").setLevel(logging.WARNING)
    logger.info("machine: %s", machine_facts("pyarrow", "requests"))
    bodies = read_snapshots(args.quick)
    n = len(bodies)
    logger.info("snapshots: %d (%.1f MB)", n, sum(map(len, bodies)) / 1e6)
    dec, val, get = time_decode(bodies, False), time_decode(bodies, True), time_get(bodies)
    store = Path(tempfile.mkdtemp(prefix="bench_ingest-"))
    try:
        ing, rows = time_ingest(bodies, store)
        read_s, compact_s, rows_in, rows_out, compact_peak = time_compaction(store)
    finally:
        shutil.rmtree(store, ignore_errors=True)
    for name, secs in (("decode", dec), ("decode + validate", val), ("HTTP GET", get)):
        logger.info("%-18s %7.2f ms/snapshot", name, 1000 * secs / n)
    logger.info("%-18s %7.2f ms/snapshot  %.2fx decode+validate  %.2fx (GET + decode+validate)"
                "  %d rows stored", "ingest tick", 1000 * ing / n, ing / val, ing / (get + val),
                rows)  # fmt: skip
    logger.info("compact: %d -> %d rows in %.2f s (%.0f rows/s), %.2fx reading the parts one "
                "by one; peak RSS of the compacting process %.0f MiB", rows_in, rows_out,
                compact_s, rows_in / compact_s, compact_s / read_s, compact_peak)  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    logger.info("peak RSS of the benchmark process (holds every body in memory): %.0f MiB", peak)


if __name__ == "__main__":
    main()
