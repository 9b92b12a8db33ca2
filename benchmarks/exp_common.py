"""Shared plumbing for experiment scripts (``benchmarks/exp_*.py``).

Generic pieces only: preparing a store from recorded data (import + match, done once
and reused), machine facts, quiet Lightning, fitting a forecaster on windows already in
memory, cloning a DataModule around other windows, JSON/Markdown/PNG output.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from transitnet.datamodules.transit import TransitDataModule
from transitnet.datasets.windows import Windows
from transitnet.extend_holdout import trip_keys
from transitnet.metrics import compute_mae
from transitnet.report import save_figure
from transitnet.store.atomic import write_text_atomic
from transitnet.tasks.forecasting import ForecastingTask

logger = logging.getLogger("exp")

#: The shared recorded data, seen from the repository root.
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
PREPARED_MARK = ".exp_prepared.json"


def machine_facts() -> dict[str, Any]:
    """Machine and library facts to log beside every figure."""
    cpu = platform.processor() or "?"
    info = Path("/proc/cpuinfo")
    if info.exists():
        names = [
            ln.split(":", 1)[1].strip()
            for ln in info.read_text().splitlines()
            if ln.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return {
        "utc": f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}",
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "load1": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "lightning": version("pytorch-lightning"),
        "numpy": np.__version__,
    }


def quiet_lightning() -> None:
    """Silence Lightning's per-fit banners and known-harmless warnings."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*litlogger.*")
    warnings.filterwarnings("ignore", ".*exists and is not empty.*")


def prepare_store(
    store: Path, feed_id: str, inputs: Sequence[Path], static: str | None
) -> dict[str, Any]:
    """Import recorded positions into ``store`` once, then match them to shapes.

    The import is skipped when ``store`` holds a marker from an earlier complete import
    of the same inputs; matching skips partitions already matched (see ``match_store``).

    Returns:
        ``{"import": summary line, "import_s", "match_s", "matched_files"}``.

    Raises:
        RuntimeError: when the import reports failed inputs.
    """
    from transitnet.gtfs.match import match_store
    from transitnet.store.importers import import_paths

    mark = store / PREPARED_MARK
    wanted = sorted(str(p) for p in inputs)
    done = json.loads(mark.read_text()) if mark.is_file() else {}
    out: dict[str, Any] = {"import": done.get("import"), "import_s": 0.0}
    if done.get("inputs") != wanted:
        started = time.perf_counter()
        result = import_paths(store, feed_id, [Path(p) for p in inputs], progress=False)
        if not result.ok:
            raise RuntimeError(f"import into {store} failed: {result.summary()}")
        out = {"import": result.summary(), "import_s": round(time.perf_counter() - started, 2)}
        write_text_atomic(mark, json.dumps({"inputs": wanted, "import": result.summary()}))
    started = time.perf_counter()
    if static is not None:
        match_store(store, static, feed_id=feed_id)
    out["match_s"] = round(time.perf_counter() - started, 2)
    out["matched_files"] = len(list((store / "matched").glob("feed=*/date=*/*.parquet")))
    return out


def select_level(new: Windows, level: str, timezone: str, train_start: pd.Timestamp) -> Windows:
    """Windows of a few-shot level: ``trips:N``, ``until:HH:MM`` or ``all``.

    ``trips:N`` keeps the first N trips (vehicle + trip + service date) by start time,
    ``until:HH:MM`` the windows anchored before that local time on ``train_start``'s
    day, ``all`` everything. ``new`` holds the windows of the line(s) concerned.

    Raises:
        ValueError: on a malformed level.
    """
    kind, _, arg = level.partition(":")
    meta = new.meta
    if kind == "all" and not arg:
        return new
    if kind == "trips" and arg.isdigit() and int(arg) > 0:
        trip = trip_keys(meta)
        first = meta["anchor_time"].groupby(trip).min().sort_values()
        return new.subset(trip.isin(first.index[: int(arg)]).to_numpy())
    hour, _, minute = arg.partition(":")
    if kind == "until" and hour.isdigit() and minute.isdigit() and int(minute) < 60:
        day = train_start.tz_convert(timezone).normalize()
        cutoff = day + pd.Timedelta(hours=int(hour), minutes=int(minute))
        return new.subset((meta["anchor_time"] < cutoff).to_numpy())
    raise ValueError(f"bad level {level!r}: use trips:N, until:HH:MM or all")


def level_label(level: str) -> str:
    """Short label of a few-shot level for tables and plots."""
    kind, _, arg = level.partition(":")
    return {"trips": f"{arg} trips", "until": f"until {arg}", "all": "day"}.get(kind, level)


def sample_windows(windows: Windows, limit: int | None, rng: np.random.Generator) -> Windows:
    """At most ``limit`` of ``windows`` (seeded, order kept); all when ``limit`` is None."""
    if not limit or len(windows) <= limit:
        return windows
    return windows.subset(np.sort(rng.choice(len(windows), limit, replace=False)))


class Stopwatch:
    """Wall and CPU seconds of a block (``with Stopwatch() as sw: …; sw.wall_s``).

    CPU seconds are this process's (``time.process_time``): on a machine shared with
    other jobs they stay comparable between runs when the wall clock does not.
    """

    def __enter__(self) -> Stopwatch:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        self.wall_s = self.cpu_s = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = round(time.perf_counter() - self._wall, 3)
        self.cpu_s = round(time.process_time() - self._cpu, 3)


@dataclass
class Fit:
    """A forecaster fitted on in-memory windows, with its compute.

    Attributes:
        task: The trained task (the best validation epoch's weights when validated).
        steps: Optimizer steps run (all epochs, also those after the best one).
        wall_s: Wall seconds of training (validation included).
        cpu_s: This process's CPU seconds of training.
        best_epoch: Epoch whose weights were kept (the last one without validation).
    """

    task: ForecastingTask
    steps: int
    wall_s: float
    cpu_s: float
    best_epoch: int


def fit_forecaster(
    dm: TransitDataModule,
    task_kwargs: Mapping[str, Any],
    *,
    epochs: int,
    seed: int,
    ckpt: Path,
    patience: int = 3,
    min_steps: int = 0,
) -> Fit:
    """Train a :class:`ForecastingTask` on ``dm``'s ``train`` windows.

    With ``val`` windows in ``dm``, training stops once the validation MAE has not
    improved for ``patience`` epochs (but not before ``min_steps``) and the best epoch's
    weights are kept; otherwise it runs ``epochs`` epochs. Scalers and vocabulary are
    fitted on the training windows unless ``dm`` already has them. The kept weights, with
    the DataModule's state, are written to ``ckpt``.
    """
    pl.seed_everything(seed, workers=True, verbose=False)
    validate = "val" in dm.windows
    callbacks: list[pl.Callback] = []
    best = pl.callbacks.ModelCheckpoint(
        dirpath=ckpt.parent, filename=ckpt.stem + "-best", monitor="val_mae", save_top_k=1
    )
    if validate:
        callbacks = [best, pl.callbacks.EarlyStopping("val_mae", patience=patience)]
    trainer = pl.Trainer(
        max_epochs=epochs,
        min_steps=min_steps,
        logger=False,
        callbacks=callbacks,
        enable_checkpointing=validate,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1.0 if validate else 0,
        num_sanity_val_steps=0,
        deterministic=True,
    )
    task = ForecastingTask(**{**task_kwargs, "max_epochs_hint": epochs})
    with Stopwatch() as sw:
        trainer.fit(task, datamodule=dm)
    best_epoch = trainer.current_epoch - 1
    if validate:
        best_path = Path(best.best_model_path)
        state = torch.load(best_path, map_location="cpu", weights_only=False)
        task.load_state_dict(state["state_dict"])
        best_epoch = int(state["epoch"])
        best_path.replace(ckpt)
    else:
        trainer.save_checkpoint(ckpt)
    return Fit(task, int(trainer.global_step), sw.wall_s, sw.cpu_s, best_epoch)


def compute_relative_change(
    after: np.ndarray,
    before: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray,
    groups: np.ndarray,
    min_n: int,
) -> tuple[dict[str, float], np.ndarray]:
    """Relative MAE change per group, ``MAE_after / MAE_before - 1``.

    Args:
        after: ``(N, H)`` point forecasts after the change.
        before: ``(N, H)`` point forecasts before it (same windows).
        targets: ``(N, H)`` observed values.
        mask: ``(N, H)`` True where observed.
        groups: ``(N,)`` group of each window (e.g. line key).
        min_n: Groups with fewer windows are left out.

    Returns:
        Group → change of the MAE averaged over horizons, and the ``(G, H)`` changes per
        horizon of the same groups (in the dict's order).
    """
    out: dict[str, float] = {}
    by_h = []
    for key in np.unique(groups):
        sel = groups == key
        if sel.sum() < min_n:
            continue
        a = compute_mae(after[sel], targets[sel], mask[sel])
        b = compute_mae(before[sel], targets[sel], mask[sel])
        out[str(key)] = float(np.nanmean(a) / np.nanmean(b) - 1.0)
        by_h.append(a / b - 1.0)
    return out, np.asarray(by_h, dtype=np.float64).reshape(len(by_h), after.shape[1])


def batches_per_epoch(n_windows: int, batch_size: int) -> int:
    """Optimizer steps in one epoch over ``n_windows``."""
    return max(1, math.ceil(n_windows / batch_size))


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically, non-finite floats as ``null``."""
    write_text_atomic(path, json.dumps(_finite(data), indent=2, sort_keys=False) + "\n")
    return path


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; floats get thousands separators and no decimals unless < 10."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            if not math.isfinite(v):
                return "–"
            return f"{v:,.0f}" if abs(v) >= 10 else f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_curves(
    path: Path,
    panels: Mapping[str, Mapping[str, Sequence[float]]],
    x_labels: Sequence[str],
    references: Mapping[str, float | Sequence[float]],
    *,
    ylabel: str,
    title: str,
) -> Path:
    """One panel per key of ``panels``: a line per series over ``x_labels``.

    ``references`` are drawn on every panel: a float as a horizontal line, a sequence
    (one value per x) as a dashed curve.
    """
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.8), sharey=True, squeeze=False)
    xs = np.arange(len(x_labels))
    for ax, (name, series) in zip(axes[0], panels.items(), strict=True):
        for label, ys in series.items():
            ax.plot(xs, [np.nan if y is None else y for y in ys], marker="o", label=label)
        for j, (label, ref) in enumerate(references.items()):
            style = {"color": f"C{7 + j % 3}", "lw": 1.5, "label": label}
            if isinstance(ref, int | float):
                ax.axhline(float(ref), ls=":", **style)  # type: ignore[arg-type]
            else:
                ax.plot(xs, [np.nan if v is None else v for v in ref], ls="--", **style)  # type: ignore[arg-type]
        ax.set_xticks(xs, list(x_labels), rotation=20, fontsize=8)
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_bars(
    path: Path, groups: Mapping[str, Mapping[str, float]], *, ylabel: str, title: str
) -> Path:
    """Grouped bars: one group per key of ``groups``, one bar per inner key."""
    names = list(groups)
    inner = sorted(
        {k for g in groups.values() for k in g},
        key=lambda k: list(dict.fromkeys(k2 for g in groups.values() for k2 in g)).index(k),
    )
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names) * max(len(inner), 1) / 2), 4))
    width = 0.8 / max(len(inner), 1)
    for j, key in enumerate(inner):
        vals = [groups[g].get(key, np.nan) for g in names]
        ax.bar(np.arange(len(names)) + (j - (len(inner) - 1) / 2) * width, vals, width, label=key)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` atomically (a trailing newline is added)."""
    write_text_atomic(path, text.rstrip("\n") + "\n")
    return path
