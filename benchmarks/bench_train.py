"""Training throughput of the forecaster on real Austin windows, and its data-loading share.

Data: the Austin CapMetro training day 2017-03-16 (about 34k windows of the last K=8
fixes, 61 lines), prepared like ``exp_forecast.py`` (import + match once, reused from
``--work``). Model: the experiment's (and ``forecast.yaml``'s) settings, ``exp_forecast.TASK``
(GRU 64 over the fixes, 2-layer trunk of 256, line embedding 32), batch size 256. Torch
runs on ``--threads`` CPU threads (default 2: the issue's "2 CPU cores"; on a machine
shared with other jobs, 1 thread can be faster, so compare both).

What is timed (same process, same data, same number of optimizer steps; every time is
the median over the steps, so batches that wait for a core on a shared machine do not
decide the figure):

- ``loader, per-sample``: the standard PyTorch path, a ``Dataset`` returning one window
  and ``default_collate`` stacking them (the baseline for the loader);
- ``loader, whole batch``: :class:`~transitnet.datasets.batches.WindowDataset`, whose
  ``__getitems__`` gathers a batch by fancy indexing (what the DataModule serves);
- ``plain loop``: batch fetch + forward + pinball loss + backward + AdamW step in a bare
  PyTorch loop (the baseline for Lightning);
- ``Lightning fit``: ``Trainer.fit`` of :class:`~transitnet.tasks.ForecastingTask` on
  the DataModule, with a callback timing each step: the data share is the time between
  the end of one training batch and the start of the next (where Lightning fetches the
  next batch) over the whole step time, summed over the steps (also given for the
  median step). Bar: < 20 %.

Usage: ``.venv/bin/python benchmarks/bench_train.py [--quick] [--work runs/exp_work]``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from bench_common import add_work_option, build_parser, machine_facts
from exp_common import prepare_store, quiet_lightning
from exp_forecast import DATASETS, TASK
from torch.utils.data import DataLoader, Dataset

from transitnet.datamodules.transit import TransitDataModule
from transitnet.datasets.batches import WindowDataset
from transitnet.models.embedding import dropout_ids
from transitnet.tasks.forecasting import ForecastingTask

logger = logging.getLogger("bench_train")
BAR_DATA_SHARE = 0.20
BATCH = 256


class PerSampleWindows(Dataset[tuple[torch.Tensor, ...]]):
    """The textbook dataset: one window per ``__getitem__`` (collated by PyTorch)."""

    def __init__(self, data: WindowDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        d = self.data
        return (d.past[i], d.lengths[i], d.context[i], d.line_ids[i], d.targets[i],
                d.target_mask[i])  # fmt: skip


def load_datamodule(work: Path) -> TransitDataModule:
    """The Austin training windows, as the experiment prepares them."""
    spec = DATASETS["austin"]
    store = work / "austin" / "store"
    prepare_store(store, spec["feed"], spec["inputs"], str(spec["static"]))
    dm = TransitDataModule(
        str(store),
        str(spec["static"]),
        feed_ids=[spec["feed"]],
        train_dates=spec["train"],
        timezone=spec["timezone"],
        exclude_lines=[spec["held_out"]],
        batch_size=BATCH,
    )
    dm.setup("fit")
    return dm


def time_loader(loader: DataLoader[Any], steps: int) -> float:
    """Median seconds per batch over ``steps`` batches (cycling over epochs).

    The median, not the mean: on a machine shared with other jobs a few batches wait for
    a core, and the median keeps them from deciding the figure.
    """
    times: list[float] = []
    while len(times) < steps:
        last = time.perf_counter()
        for _ in loader:
            now = time.perf_counter()
            times.append(now - last)
            last = now
            if len(times) >= steps:
                break
    return float(np.median(times))


def time_plain_loop(task: ForecastingTask, loader: DataLoader[Any], steps: int) -> float:
    """Median seconds per step (batch fetch + optimizer step) of a bare PyTorch loop."""
    opt = torch.optim.AdamW(task.parameter_groups())
    task.train()
    times: list[float] = []
    while len(times) < steps:
        last = time.perf_counter()
        for batch in loader:
            ids = dropout_ids(batch.line_ids, float(task.hparams["line_dropout"]))
            loss = task._loss(task(batch, ids, calibrated=False), batch)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            now = time.perf_counter()
            times.append(now - last)
            last = now
            if len(times) >= steps:
                break
    return float(np.median(times))


class StepTimer(pl.Callback):
    """Per training step: time fetching the batch, and time computing on it."""

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.data_s: list[float] = []
        self.compute_s: list[float] = []
        self._end: float | None = None
        self._start = 0.0
        self._data: float | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        """Close the data interval that began at the previous batch's end."""
        self._start = time.perf_counter()
        self._data = None
        if self._end is not None and trainer.global_step >= self.skip:
            self._data = self._start - self._end

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        """Close the compute interval; keep the step when its data interval was timed."""
        self._end = time.perf_counter()
        if self._data is not None:
            self.data_s.append(self._data)
            self.compute_s.append(self._end - self._start)

    def on_train_epoch_end(self, *args: Any) -> None:
        """An epoch boundary (validation, iterator reset) is not a data fetch: skip it."""
        self._end = None


def time_lightning(dm: TransitDataModule, steps: int, skip: int) -> StepTimer:
    """Fit ``steps`` optimizer steps through Lightning, timing each."""
    timer = StepTimer(skip)
    task = ForecastingTask(**TASK)
    trainer = pl.Trainer(
        max_steps=steps + skip, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        num_sanity_val_steps=0, callbacks=[timer],
    )  # fmt: skip
    trainer.fit(task, dm)
    return timer


def run(args: Any) -> dict[str, Any]:
    """Measure everything; returns the figures."""
    torch.set_num_threads(args.threads)
    dm = load_datamodule(args.work)
    data = dm.dataset("train")
    steps = 40 if args.quick else 300
    ours = DataLoader(data, batch_size=BATCH, shuffle=True, collate_fn=lambda b: b)
    textbook = DataLoader(PerSampleWindows(data), batch_size=BATCH, shuffle=True)
    per_sample_s = time_loader(textbook, max(steps // 4, 10))
    batch_s = time_loader(ours, steps)
    pl.seed_everything(0, verbose=False)
    task = ForecastingTask(**TASK)
    task.build_net(tuple(dm.vocab.keys), dm.n_features, dm.n_context, dm.horizons_s)
    plain_s = time_plain_loop(task, ours, steps)
    timer = time_lightning(dm, steps, skip=5)
    data_s, compute_s = np.asarray(timer.data_s), np.asarray(timer.compute_s)
    step_s = float(np.median(data_s + compute_s))
    return {
        "windows": len(data),
        "steps": steps,
        "batch_size": BATCH,
        "threads": torch.get_num_threads(),
        "loader_per_sample_ms": 1e3 * per_sample_s,
        "loader_whole_batch_ms": 1e3 * batch_s,
        "loader_speedup": per_sample_s / batch_s,
        "plain_loop_samples_per_s": BATCH / plain_s,
        "lightning_samples_per_s": BATCH / step_s,
        "lightning_vs_plain": plain_s / step_s,
        "timed_lightning_steps": len(data_s),
        "data_share": float(data_s.sum() / (data_s.sum() + compute_s.sum())),
        "data_share_median_step": float(np.median(data_s / (data_s + compute_s))),
        # the same Lightning steps with the per-sample loader's fetch in place of ours
        "data_share_with_per_sample_loader": float(
            (data_s.mean() - batch_s + per_sample_s)
            / ((data_s + compute_s).mean() - batch_s + per_sample_s)
        ),
        "bar_data_share": BAR_DATA_SHARE,
    }


def main() -> int:
    """Run the benchmark and print its figures."""
    parser = build_parser(__doc__, "40 steps instead of 300")
    add_work_option(parser)
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch.set_num_threads for every measurement (default: %(default)s, the "
        "issue's 2 CPU cores).",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="Also write the figures as JSON to this file."
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    quiet_lightning()
    facts = machine_facts("torch", "pytorch-lightning")
    r = run(args)
    lines = [
        f"machine: {facts}",
        f"data: Austin 2017-03-16, {r['windows']:,} training windows, batch {r['batch_size']}, "
        f"{r['steps']} steps, torch threads {r['threads']}",
        f"loader, per-sample + default_collate: {r['loader_per_sample_ms']:.2f} ms/batch (1.00x)",
        f"loader, whole batch (WindowDataset):  {r['loader_whole_batch_ms']:.2f} ms/batch "
        f"({r['loader_speedup']:.1f}x faster)",
        f"plain PyTorch loop: {r['plain_loop_samples_per_s']:,.0f} samples/s (1.00x)",
        f"Lightning fit:      {r['lightning_samples_per_s']:,.0f} samples/s "
        f"({r['lightning_vs_plain']:.2f}x the plain loop)",
        f"data loading share of step time: {r['data_share']:.1%} (median step "
        f"{r['data_share_median_step']:.1%}, {r['timed_lightning_steps']} steps) "
        f"(bar < {BAR_DATA_SHARE:.0%}: {'met' if r['data_share'] < BAR_DATA_SHARE else 'NOT met'});"
        f" with the per-sample loader it would be {r['data_share_with_per_sample_loader']:.1%}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    if args.out is not None:
        from transitnet.store.atomic import write_text_atomic

        write_text_atomic(args.out, json.dumps({"machine": facts, **r}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
