"""Batched inference latency for 5,000 active vehicles, against a per-vehicle loop.

Inputs are real: each of the ``--vehicles`` active vehicles is the last K=8 matched fixes
of a real Austin trajectory on 2017-03-21 (anchors drawn at random, each relabelled as its
own vehicle, since Austin never runs 5,000 buses at once). The model is a checkpoint
(``--ckpt``, e.g. the experiment's ``best.ckpt``) or, without one, the experiment's
architecture (``exp_forecast.TASK``, as in ``forecast.yaml``) sized for Austin's lines
(weights do not change latency).

What is timed (median and p90 wall time of 30 calls, 5 with ``--quick``, and the median
and p90 CPU time of the process; torch on ``--threads`` threads; with 1 thread the CPU
time is close to what a call costs on an idle core even when other jobs share the machine
(shared caches still slow it somewhat), whereas with 2 threads on 2 busy cores every
parallel region waits for a descheduled thread, so compare both there; the 1-minute load
average is printed before and after):

- ``features``: from the matched rows of the latest fixes (``--vehicles`` × K rows) to a
  scaled :class:`~transitnet.datasets.batches.ForecastBatch`:
  ``build_windows(..., latest_only=True)`` (each vehicle's latest window, with the live
  traffic context read from every vehicle's fixes), line ids from the vocabulary, scaling
  (the dataset's tensors are the batch);
- ``forward, batched``: one forward pass of the task (calibrated P10/P50/P90 at 5
  horizons) over all vehicles at once, under ``torch.inference_mode``;
- ``forward, per-vehicle loop``: the same forward, one vehicle per call (the baseline);
- ``serving, batched``: features + batched forward (what a server does per feed poll).

Bar: batched inference (the forward pass, the figure compared with the per-vehicle loop)
for 5,000 vehicles < 100 ms on CPU; whether serving (features + forward) fits in 100 ms
is printed too.

Usage: ``.venv/bin/python benchmarks/bench_infer.py --threads 1 [--quick] [--ckpt PATH]``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from bench_common import add_work_option, build_parser, machine_facts
from exp_common import prepare_store, quiet_lightning
from exp_forecast import DATASETS, TASK

from transitnet.datamodules.loading import read_matched
from transitnet.datasets.batches import ForecastBatch, WindowDataset, fit_scale
from transitnet.datasets.vocab import LineVocabulary
from transitnet.datasets.windows import WindowConfig, build_windows, prepare_trajectories
from transitnet.tasks.forecasting import ForecastingTask

BAR_MS = 100.0
DAY = "2017-03-21"


def read_latest_fixes(work: Path, vehicles: int, k: int, seed: int) -> pd.DataFrame:
    """Matched rows of ``vehicles`` pseudo-vehicles: each the last ``k`` fixes of a real one."""
    spec = DATASETS["austin"]
    store = work / "austin" / "store"
    prepare_store(store, spec["feed"], spec["inputs"], str(spec["static"]))
    matched = read_matched(store, [spec["feed"]], {DAY})
    config = WindowConfig(past_fixes=k, timezone=spec["timezone"])
    fixes = prepare_trajectories(matched, config)
    traj = fixes["trajectory"].to_numpy()
    pos = np.arange(len(fixes)) - np.searchsorted(traj, traj, side="left")
    anchors = np.random.default_rng(seed).choice(np.flatnonzero(pos >= k - 1), vehicles)
    rows = (anchors[:, None] - np.arange(k)[::-1][None, :]).ravel()
    out = fixes.iloc[rows].drop(columns=["trajectory", "t_s"])
    out = out.assign(vehicle_id=np.repeat([f"v{i}" for i in range(vehicles)], k))
    return out.reset_index(drop=True)


def build_features(
    rows: pd.DataFrame, config: WindowConfig, vocab: LineVocabulary, scales: Any
) -> ForecastBatch:
    """Serving-side features: the latest window of every vehicle, scaled, as one batch.

    The dataset's tensors are the batch (no per-index gather: every window is served).
    """
    latest = build_windows(rows, config, latest_only=True)
    data = WindowDataset(latest, vocab.encode(latest.meta["line_key"].tolist()), *scales)
    return ForecastBatch(data.past, data.lengths, data.context, data.line_ids, data.targets,
                         data.target_mask, torch.arange(len(data)))  # fmt: skip


def load_task(
    ckpt: Path | None, vocab: LineVocabulary, n: tuple[int, int, tuple[int, ...]]
) -> ForecastingTask:
    """The checkpoint's task, or the shipped architecture (untrained) for ``vocab``."""
    if ckpt is not None:
        return ForecastingTask.load_from_checkpoint(ckpt, map_location="cpu").eval()
    task = ForecastingTask(**TASK)
    task.build_net(tuple(vocab.keys), *n)
    return task.eval()


def time_calls(fn: Callable[[], Any], repeats: int) -> tuple[float, float, float, float]:
    """Median and p90 wall milliseconds, then median and p90 CPU ms, of ``repeats`` calls.

    One warm-up call first. CPU time is the process's (all its threads): with one torch
    thread it is what a call costs on an idle core, however busy the machine is.
    """
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(1e3 * (time.perf_counter() - start))
        cpu.append(1e3 * (time.process_time() - start_cpu))
    return (float(np.median(wall)), float(np.percentile(wall, 90)),
            float(np.median(cpu)), float(np.percentile(cpu, 90)))  # fmt: skip


def describe(ms: tuple[float, float, float, float]) -> str:
    """``wall <median> ms (p90 …), CPU <median> ms (p90 …)``."""
    return f"wall {ms[0]:.1f} ms (p90 {ms[1]:.1f}), CPU {ms[2]:.1f} ms (p90 {ms[3]:.1f})"


def judge(ms: tuple[float, float, float, float]) -> str:
    """Whether the wall and CPU medians are under the bar."""
    return ", ".join(
        f"{what} {'met' if value < BAR_MS else 'NOT met'}"
        for what, value in (("wall", ms[0]), ("CPU", ms[2]))
    )


def per_vehicle(task: ForecastingTask, batch: ForecastBatch, count: int) -> Callable[[], None]:
    """A loop forecasting the first ``count`` vehicles one call each."""

    def loop() -> None:
        with torch.inference_mode():
            for i in range(count):
                task.net(batch.past[i : i + 1], batch.lengths[i : i + 1],  # type: ignore[misc]
                         batch.line_ids[i : i + 1], batch.context[i : i + 1])  # fmt: skip

    return loop


def run(args: Any) -> dict[str, Any]:
    """Measure everything; returns the figures."""
    torch.set_num_threads(args.threads)
    k = 8
    spec = DATASETS["austin"]
    config = WindowConfig(past_fixes=k, timezone=spec["timezone"])
    rows = read_latest_fixes(args.work, args.vehicles, k, seed=0)
    vocab = LineVocabulary(sorted(rows["line_key"].dropna().astype(str).unique()))
    if args.ckpt is not None:
        state = torch.load(args.ckpt, map_location="cpu", weights_only=False)["TransitDataModule"]
        vocab = LineVocabulary.from_state_dict(state["vocab"])
        scales = tuple(
            tuple(np.asarray(a) for a in state[key]) for key in ("past_scale", "context_scale")
        )
    else:
        w = build_windows(rows, config)
        valid = np.arange(k)[None, :] < w.lengths[:, None]
        scales = (fit_scale(w.past, valid), fit_scale(w.context))
    batch = build_features(rows, config, vocab, scales)
    task = load_task(
        args.ckpt, vocab, (batch.past.shape[2], batch.context.shape[1], config.horizons_s)
    )
    repeats = 5 if args.quick else 30
    loop_n = min(args.vehicles, 500 if args.quick else args.vehicles)

    def batched() -> None:
        with torch.inference_mode():
            task(batch)

    def serving() -> None:
        b = build_features(rows, config, vocab, scales)
        with torch.inference_mode():
            task(b)

    feat = time_calls(lambda: build_features(rows, config, vocab, scales), repeats)
    fwd = time_calls(batched, repeats)
    serve = time_calls(serving, repeats)
    loop_ms = time_calls(per_vehicle(task, batch, loop_n), 1 if args.quick else 3)[0]
    loop_ms *= args.vehicles / loop_n
    return {"vehicles": len(batch), "rows": len(rows), "threads": torch.get_num_threads(),
            "features_ms": feat, "forward_ms": fwd, "serving_ms": serve,
            "loop_ms": loop_ms, "loop_timed_vehicles": loop_n,
            "ckpt": str(args.ckpt) if args.ckpt else None}  # fmt: skip


def main() -> int:
    """Run the benchmark and print its figures."""
    parser = build_parser(__doc__, "5 repeats, per-vehicle loop timed on 500 vehicles and scaled")
    add_work_option(parser)
    parser.add_argument(
        "--ckpt",
        type=Path,
        default=None,
        help="A forecasting checkpoint (its vocabulary, scalers and weights); default: the "
        "exp_forecast.TASK architecture, untrained (weights do not change latency).",
    )
    parser.add_argument(
        "--vehicles",
        type=int,
        default=5000,
        help="Active vehicles forecast per call (default: %(default)s).",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch.set_num_threads for every measurement (default: %(default)s, the "
        "issue's 2 CPU cores).",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    quiet_lightning()
    facts = machine_facts("torch")
    r = run(args)
    fwd, serve, feat = r["forward_ms"], r["serving_ms"], r["features_ms"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"machine: {facts}",
        f"{r['vehicles']:,} vehicles ({r['rows']:,} matched rows of their latest fixes), "
        f"torch threads {r['threads']}, model {r['ckpt'] or 'exp_forecast.TASK, untrained'}",
        f"forward, per-vehicle loop: {r['loop_ms']:,.0f} ms wall (1.00x; timed on "
        f"{r['loop_timed_vehicles']:,} vehicles, scaled)",
        f"forward, batched: {describe(fwd)}; {r['loop_ms'] / fwd[0]:,.0f}x faster than the "
        f"loop (wall); bar < {BAR_MS:.0f} ms: {judge(fwd)}",
        f"features from latest fixes: {describe(feat)}",
        f"serving, batched (features + forward): {describe(serve)}; under {BAR_MS:.0f} ms: "
        f"{judge(serve)}",
        f"load1 after the run: {load:.2f} (wall times stretch on a loaded machine; CPU times "
        "much less)",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
