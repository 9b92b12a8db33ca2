"""Forecast outputs (next stops, ETAs, positions) for many windows, against a per-window loop.

Inputs: the real Auckland static subset (``static_subset_2019-06``: 15 shapes with their
stop patterns), and ``--windows`` anchors drawn at random along those shapes (uniform
distance, the trips of the shape, 10 % with a trip id absent from the feed), each with
random monotone P10/P50/P90 forecasts at 60, 120, 300, 600 and 900 s.

What is timed (best wall and CPU time of 3 calls, 1 with ``--quick``; one core):

- ``next stops + ETAs, vectorised``: :func:`~transitnet.forecast_outputs.find_next_stops`
  (3 stops) and :func:`~transitnet.forecast_outputs.compute_arrival_offsets` at P50;
- ``next stops + ETAs, per-window loop`` (the baseline): a Python loop over windows,
  each looking its (shape, pattern) up in a dict of stop arrays, ``np.searchsorted`` for
  the next stops and ``np.interp`` on the forecast curve, on the first ``--loop-windows``
  windows, scaled per window;
- ``lat/lon on the shape``: :func:`~transitnet.forecast_outputs.compute_forecast_lonlat`
  for every horizon and quantile;
- ``whole table``: :func:`~transitnet.forecast_table.build_forecast_table` (what the
  prediction writer writes), without the Parquet write.

The loop's results are checked equal to the vectorised ones before anything is printed.

Usage: ``.venv/bin/python benchmarks/bench_forecast_outputs.py [--quick]``.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from bench_common import DATA, build_parser, machine_facts, pin_to_one_core, time_best_of

from transitnet.forecast_outputs import (
    compute_arrival_offsets,
    compute_forecast_lonlat,
    find_next_stops,
)
from transitnet.forecast_table import build_forecast_table
from transitnet.gtfs.artefacts import StaticArtefacts, load_or_build_artefacts

HORIZONS = (60, 120, 300, 600, 900)
QUANTILES = (0.1, 0.5, 0.9)
N_STOPS = 3


def draw_windows(art: StaticArtefacts, n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """``n`` anchors along the feed's shapes and ``(n, H, Q)`` monotone forecasts."""
    rng = np.random.default_rng(seed)
    trips = art.trips.dropna(subset=["shape_id", "pattern_id"]).reset_index(drop=True)
    pick = rng.integers(0, len(trips), n)
    length = pd.Series(art.shapes.length_m(), index=art.shapes.shape_ids)
    shape = trips["shape_id"].to_numpy()[pick]
    trip = trips["trip_id"].to_numpy(object)[pick]
    trip[rng.random(n) < 0.1] = "not-in-feed"
    meta = pd.DataFrame(
        {
            "trip_id": trip,
            "shape_id": shape,
            "dist_along_m": rng.uniform(0, 1, n) * length.reindex(shape).to_numpy(),
            "anchor_time": pd.Timestamp("2019-08-12T19:00Z")
            + pd.to_timedelta(rng.integers(0, 3600, n), unit="s"),
        }
    )
    speed = rng.uniform(0, 12, (n, 1, 1)) * np.array([0.6, 1.0, 1.4])
    pred = speed * np.array(HORIZONS, dtype=float)[None, :, None]
    return meta, pred


def vectorised(meta: pd.DataFrame, art: StaticArtefacts, pred: np.ndarray) -> np.ndarray:
    """``(N, S)`` P50 arrival offsets of the next stops, vectorised."""
    ahead = find_next_stops(meta, art, N_STOPS)["ahead_m"].to_numpy().reshape(-1, N_STOPS)
    return compute_arrival_offsets(HORIZONS, pred[:, :, 1], ahead)


def per_window_loop(meta: pd.DataFrame, art: StaticArtefacts, pred: np.ndarray) -> np.ndarray:
    """The same, one window at a time (the baseline)."""
    sd = art.stop_dist.sort_values("stop_index")
    stops = {key: g["dist_m"].to_numpy() for key, g in sd.groupby(["shape_id", "pattern_id"])}
    pattern = dict(zip(art.trips["trip_id"], art.trips["pattern_id"], strict=True))
    by_shape = art.trips.dropna(subset=["pattern_id"]).groupby("shape_id")["pattern_id"]
    common = by_shape.agg(lambda p: sorted(p.value_counts().loc[lambda c: c == c.max()].index)[0])
    knots_t = np.concatenate([[0.0], HORIZONS])
    out = np.full((len(meta), N_STOPS), np.nan)
    rows = zip(meta["trip_id"], meta["shape_id"], meta["dist_along_m"], strict=True)
    for i, (trip, shape, dist) in enumerate(rows):
        dists = stops.get((shape, pattern.get(trip)))
        if dists is None:
            dists = stops.get((shape, common.get(shape)))
        if dists is None:
            continue
        j = np.searchsorted(dists, dist, side="right")
        ahead = dists[j : j + N_STOPS] - dist
        knots_d = np.maximum.accumulate(np.concatenate([[0.0], pred[i, :, 1]]))
        out[i, : len(ahead)] = np.interp(ahead, knots_d, knots_t, right=np.nan)
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the figures (windows per second and the ratio to the loop)."""
    parser = build_parser(__doc__, "5,000 windows, 500 in the loop, one repeat")
    parser.add_argument(
        "--windows", type=int, default=50_000, help="Windows to convert (default 50,000)."
    )
    parser.add_argument(
        "--loop-windows",
        type=int,
        default=2_000,
        help="Windows timed in the per-window loop baseline, scaled up (default 2,000).",
    )
    args = parser.parse_args(argv)
    n, n_loop, repeats = (5_000, 500, 1) if args.quick else (args.windows, args.loop_windows, 3)
    logging.basicConfig(level=logging.WARNING)
    print(machine_facts("numpy", "pandas", "pyproj"), "|", pin_to_one_core())
    with tempfile.TemporaryDirectory() as tmp:
        static = DATA / "auckland-2019-08-13" / "static_subset_2019-06"
        art = load_or_build_artefacts(static, Path(tmp))
    meta, pred = draw_windows(art, n, seed=0)
    fast = time_best_of(lambda: vectorised(meta, art, pred), repeats)
    loop = time_best_of(lambda: per_window_loop(meta[:n_loop], art, pred[:n_loop]), repeats)
    np.testing.assert_allclose(fast.value[:n_loop], loop.value, rtol=1e-9, atol=1e-6)
    lonlat = time_best_of(
        lambda: compute_forecast_lonlat(art.shapes, meta["shape_id"], meta["dist_along_m"], pred),
        repeats,
    )
    table = time_best_of(
        lambda: build_forecast_table(meta, pred, HORIZONS, QUANTILES, art, N_STOPS), repeats
    )
    scale = n / n_loop  # the loop ran on n_loop windows
    print(f"{n:,} windows ({n_loop:,} in the loop), {len(HORIZONS)} horizons, {N_STOPS} stops; "
          "ratios: the loop's next stops + ETAs time over this one (CPU, then wall)")  # fmt: skip
    rows = [("next stops + ETAs, per-window loop", loop.wall_s * scale, loop.cpu_s * scale),
            ("next stops + ETAs, vectorised", fast.wall_s, fast.cpu_s),
            ("lat/lon on the shape", lonlat.wall_s, lonlat.cpu_s),
            ("whole table", table.wall_s, table.cpu_s)]  # fmt: skip
    for name, wall, cpu in rows:
        print(f"  {name:36s} {wall * 1e3:8.1f} ms wall {cpu * 1e3:8.1f} ms CPU "
              f"{n / cpu:10,.0f} windows/CPU-s  x{rows[0][2] / cpu:5.1f} CPU  "
              f"x{rows[0][1] / wall:5.1f} wall")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
