"""Map-matching throughput, as ratios to baselines measured in the same run.

Datasets (all real): the Austin CapMetro day 2017-03-21 (45k fixes, 310 shapes, median
328 vertices) against ``gtfs_2017-01``, and the Auckland 2019-08-13 positions of routes 70,
75, 25B, 25L, 27H, 27W (the whole day; ``--quick``: the first 300 snapshots) against
``static_subset_2019-06`` through the route-variant fallback.

Every row starts from the same inputs: metric (UTM) points, each with its shape, in
trajectory order (what map matching proper works on). Points/s is the best of N passes in
one process pinned to one core, by wall clock and by CPU time (the machine may be shared;
CPU time is what one core spends, and the ratios use it):

- ``per-point loop``: a Python loop calling shapely ``line.project`` and
  ``line.distance`` per point (timed on a sample, scaled);
- ``shapely vectorised``: ``shapely.line_locate_point`` + ``shapely.distance`` on aligned
  arrays of lines and points (the globally nearest point: wrong leg on loops);
- ``transitnet core``: :func:`~transitnet.gtfs.project.find_candidates` +
  :func:`~transitnet.gtfs.trajectory.select_candidates` (+ the whole-shape projection of
  the few fixes with no candidate), i.e. distance along and offset with the trajectory
  logic;
- ``match_positions``: the whole public function from decoded rows (lon/lat): trip
  resolution, projection, statuses, speeds, dwells, delays, output frame.

Bars: transitnet core >= 500k points/s on one core and >= 10x the per-point loop.

Usage: ``.venv/bin/python benchmarks/bench_match.py [--quick]``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
from bench_common import (
    AUCKLAND_TAR,
    DATA,
    build_parser,
    iter_tar_files,
    machine_facts,
    pin_to_one_core,
    time_best_of,
)

from transitnet.gtfs.artefacts import StaticArtefacts, load_or_build_artefacts
from transitnet.gtfs.lines import strip_version_suffix
from transitnet.gtfs.match import MatchIndex, build_match_index, match_positions
from transitnet.gtfs.project import find_candidates, project_whole_shapes
from transitnet.gtfs.shapes import project_lonlat
from transitnet.gtfs.trajectory import TrajectoryPoints, compute_headings, select_candidates
from transitnet.realtime.decode import decode_vehicle_positions

BAR_POINTS_PER_S = 500_000
BAR_VS_LOOP = 10.0


@dataclass(frozen=True)
class Workload:
    """One dataset, prepared: the rows, and metric points in trajectory order."""

    name: str
    rows: pd.DataFrame
    index: MatchIndex
    px: np.ndarray
    py: np.ndarray
    shape_idx: np.ndarray
    points: TrajectoryPoints


def prepare(name: str, rows: pd.DataFrame, art: StaticArtefacts) -> Workload:
    """Resolve and project once (outside the timings) to get each dataset's points."""
    index = build_match_index(art)
    matched = match_positions(rows, art, index=index)
    keep = matched["shape_id"].notna() & (matched["match_status"] != "invalid_position")
    keep &= ~matched["is_stale"]
    order = matched[keep].sort_values(["trajectory_id", "vehicle_timestamp"], kind="stable")
    x, y = project_lonlat(art.shapes.crs, order["longitude"].to_numpy(),
                          order["latitude"].to_numpy())  # fmt: skip
    traj = pd.factorize(order["trajectory_id"])[0]
    starts = np.flatnonzero(np.diff(traj, prepend=-1) != 0)
    lengths = np.diff(np.append(starts, len(traj)))
    t = order["vehicle_timestamp"].to_numpy(dtype="datetime64[us]").astype(np.int64) / 1e6
    hx, hy = compute_headings(np.full(len(x), np.nan))
    shape_idx = art.shapes.index_of(order["shape_id"])
    return Workload(name, rows, index, x, y, shape_idx,
                    TrajectoryPoints(t, hx, hy, starts, lengths))  # fmt: skip


def run_core(w: Workload) -> None:
    """Distance along and offset for every point, with the trajectory logic."""
    geom = w.index.geometry
    cands = find_candidates(geom, w.px, w.py, w.shape_idx)
    picked = select_candidates(cands, w.points)
    miss = np.isnan(picked.dist_m)
    project_whole_shapes(geom, w.px[miss], w.py[miss], w.shape_idx[miss])


def shapely_lines(art: StaticArtefacts) -> np.ndarray:
    t = art.shapes
    pairs = zip(t.offsets[:-1], t.offsets[1:], strict=True)
    return np.array([shapely.LineString(np.c_[t.x[a:b], t.y[a:b]]) for a, b in pairs], dtype=object)


def measure(w: Workload, repeats: int, loop_sample: int) -> dict[str, tuple[float, float]]:
    """(wall, CPU) points/s of each method on one workload."""
    lines = shapely_lines(w.index.art)[w.shape_idx]
    points = shapely.points(w.px, w.py)
    n = len(w.px)
    sample = np.linspace(0, n - 1, min(loop_sample, n)).astype(np.int64)

    def loop() -> None:
        for i in sample:
            line, point = lines[i], points[i]
            line.project(point)
            line.distance(point)

    def vectorised() -> None:
        shapely.line_locate_point(lines, points)
        shapely.distance(lines, points)

    def rate(count: int, fn: Callable[[], object]) -> tuple[float, float]:
        timing = time_best_of(fn, repeats)
        return count / timing.wall_s, count / timing.cpu_s

    def full() -> None:
        match_positions(w.rows, w.index.art, index=w.index)

    return {
        "per-point loop": rate(len(sample), loop),
        "shapely vectorised": rate(n, vectorised),
        "transitnet core": rate(n, lambda: run_core(w)),
        "match_positions": rate(len(w.rows), full),
    }


def read_austin(day: str) -> pd.DataFrame:
    ids = {c: str for c in ("vehicle_id", "route_id", "trip_id", "trip_headsign")}
    path = DATA / "austin-capmetro" / "vehicle_positions" / f"{day}.csv"
    rows = pd.read_csv(path, dtype=ids)  # type: ignore[arg-type]
    stamps = pd.to_datetime(rows["timestamp"], utc=True)
    return rows.drop(columns=["timestamp", "speed"]).assign(vehicle_timestamp=stamps)


def read_auckland(art: StaticArtefacts, limit: int | None) -> pd.DataFrame:
    variants = set(strip_version_suffix(art.trips["route_id"]).dropna())
    frames = []
    for _, body in islice(iter_tar_files(AUCKLAND_TAR), limit):
        rows = decode_vehicle_positions(body, feed_id="akl").positions.to_pandas()
        keep = strip_version_suffix(rows["route_id"]).isin(variants).fillna(False)
        frames.append(rows[keep.to_numpy(dtype=bool)])
    return pd.concat(frames, ignore_index=True)


def report_workload(w: Workload, rates: dict[str, tuple[float, float]]) -> bool:
    """Print one workload's rows; returns whether the core meets the bars."""
    loop, vec = rates["per-point loop"], rates["shapely vectorised"]
    print(
        f"\n{w.name}: {len(w.px):,} points on shapes ({len(w.rows):,} rows), "
        f"{len(w.points.starts):,} trajectories; load1 now {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'method':<20} {'points/s wall':>14} {'points/s CPU':>13} {'x loop':>7} "
        f"{'x vectorised':>13}   (ratios on CPU time; wall in brackets)"
    )
    for name, (wall, cpu) in rates.items():
        print(
            f"{name:<20} {wall:>14,.0f} {cpu:>13,.0f} {cpu / loop[1]:>7.1f} "
            f"{cpu / vec[1]:>13.1f}   ({wall / loop[0]:.1f}x, {wall / vec[0]:.1f}x)"
        )
    core = rates["transitnet core"][1]
    return core >= BAR_POINTS_PER_S and core / loop[1] >= BAR_VS_LOOP


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(__doc__, "fewer passes, 300 Auckland polls")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/transitnet-bench-static"),
                        help="static artefact cache folder")  # fmt: skip
    args = parser.parse_args(argv)
    repeats, loop_sample = (3, 1000) if args.quick else (7, 5000)
    print(f"# {pin_to_one_core()}")
    print(f"# {machine_facts('numpy', 'shapely', 'pandas', 'pyarrow')}")
    austin = load_or_build_artefacts(DATA / "austin-capmetro" / "gtfs_2017-01", args.cache)
    akl = load_or_build_artefacts(DATA / "auckland-2019-08-13" / "static_subset_2019-06",
                                  args.cache)  # fmt: skip
    workloads = [
        prepare("austin 2017-03-21", read_austin("2017-03-21"), austin),
        prepare("auckland subset", read_auckland(akl, 300 if args.quick else None), akl),
    ]
    ok = True
    for w in workloads:
        ok &= report_workload(w, measure(w, repeats, loop_sample))
    verdict = "met" if ok else "NOT met"
    if args.quick:
        verdict += " (--quick: 300 Auckland polls are too few trajectories to amortise the loop "
        verdict += "over k; judge the bars on a full run)"
    print(f"\nbars (core >= {BAR_POINTS_PER_S:,} points/s CPU on one core and >= "
          f"{BAR_VS_LOOP:.0f}x the loop): {verdict}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
