"""Add lines to a trained forecasting checkpoint (name-keyed), warm-start, and report.

``extend_lines`` is the answer to "a new line opened": it loads the base checkpoint,
finds (or is told) the new line keys, grows the embedding by key with the chosen
initialisation, trains under the chosen tier (see :mod:`transitnet.tasks.extension`)
and writes ``model.ckpt`` with the grown vocabulary, plus ``report.json``/``report.md``.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from transitnet.datamodules.transit import TransitDataModule
from transitnet.datasets.windows import Windows, concat_windows, sample_per_line
from transitnet.evaluate import load_datamodule, predict_windows
from transitnet.extend_config import TIER_DEFAULTS, ExtensionConfig, config_for_tier
from transitnet.extend_holdout import (
    CURVE_POINTS,
    HeldOutCurve,
    choose_steps,
    count_trips,
    held_out_windows,
    is_few_trip,
    wants_early_stopping,
)
from transitnet.extend_inits import resolve_inits
from transitnet.metrics import compute_mae, summarise_by_horizon
from transitnet.models.forecaster import ForecastNet, add_lines
from transitnet.models.routed import RoutedForecastNet
from transitnet.tasks.extension import LineExtensionTask
from transitnet.tasks.forecasting import CKPT_KEY, ForecastingTask

__all__ = [
    "TIER_DEFAULTS",
    "ExtensionConfig",
    "ExtensionReport",
    "config_for_tier",
    "extend_lines",
    "report_dict",
    "train_extension",
]
logger = logging.getLogger(__name__)


@dataclass
class ExtensionReport:
    """What an extension did (``report.json``).

    ``replay_windows`` counts the old-line windows in the training set: the replay
    buffer (``replay``) or the distillation inputs (``partial`` with ``distill_per_line``).
    ``step_choice`` (with early stopping): the held-out trips and windows, the held-out
    MAE curve ``[[step, MAE m], …]``, the chosen steps and the first run's steps and wall
    seconds (``wall_seconds`` includes them; ``steps`` counts the final run's only).
    ``similar_lines`` (``similar:auto``): per new line, the known lines whose mean row it
    started from (best first), the share of its path the best drives the same way, and
    the top five with their shares.
    """

    lines_added: list[str]
    init: str
    tier: str
    steps: int
    wall_seconds: float
    tensors_touched: list[str]
    train_windows: int
    replay_windows: int
    evaluation: dict[str, Any] = field(default_factory=dict)
    step_choice: dict[str, Any] = field(default_factory=dict)
    similar_lines: dict[str, Any] = field(default_factory=dict)


def find_new_lines(dm: TransitDataModule, windows: Windows, min_windows: int) -> list[str]:
    """Line keys with at least ``min_windows`` windows that the vocabulary lacks."""
    counts = windows.meta["line_key"].dropna().astype(str).value_counts()
    eligible = counts[counts >= min_windows].index.tolist()
    return dm.vocab.missing(sorted(eligible))


def check_extendable(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's transitnet metadata; refuses a fork checkpoint (re-fork the base)."""
    meta: dict[str, Any] = ckpt[CKPT_KEY]
    if meta.get("routed_lines"):
        raise ValueError(
            f"this checkpoint is already a fork (routes {meta['routed_lines']}): extend the "
            "original base checkpoint with every new line so far instead (re-fork)"
        )
    return meta


def build_extension_task(
    base_ckpt: dict[str, Any], base: ForecastingTask, cfg: ExtensionConfig
) -> LineExtensionTask:
    """A :class:`LineExtensionTask` holding the base weights, not yet grown."""
    accepted = set(inspect.signature(ForecastingTask.__init__).parameters) - {"self", "new_row_lr"}
    hp = {k: v for k, v in base.hparams.items() if k in accepted}
    hp["line_dropout"] = 0.0  # the unknown row is not trained during an extension
    task = LineExtensionTask(
        tier=cfg.tier,
        new_row_lr=cfg.new_row_lr,
        layer_lr=cfg.layer_lr,
        distill_weight=cfg.distill_weight,
        anchor_weight=cfg.anchor_weight,
        lr_decay=cfg.lr_decay,
        tune_layers=None if cfg.tune_layers is None else list(cfg.tune_layers),
        **hp,
    )
    meta = check_extendable(base_ckpt)
    task.build_net_from_meta(meta, tuple(meta["line_keys"]))
    assert task.net is not None and base.net is not None
    task.net.load_state_dict(base.net.state_dict())
    return task


def evaluate_lines(
    task: ForecastingTask, dm: TransitDataModule, split: str, new_keys: list[str]
) -> dict[str, Any]:
    """MAE per horizon on old-line and new-line windows of ``split`` (and per line)."""
    windows = dm.windows[split]
    pred = predict_windows(task, dm, split)[..., len(task.quantiles) // 2]
    keys = windows.meta["line_key"].astype(str).to_numpy()
    is_new = np.isin(keys, new_keys)
    out: dict[str, Any] = {}
    for name, sel in (("old_lines", ~is_new), ("new_lines", is_new)):
        mae = compute_mae(pred[sel], windows.targets[sel], windows.target_mask[sel])
        out[name] = {"mae_m": summarise_by_horizon(mae, windows.horizons_s), "n": int(sel.sum())}
    out["per_line"] = {
        k: summarise_by_horizon(
            compute_mae(
                pred[keys == k], windows.targets[keys == k], windows.target_mask[keys == k]
            ),
            windows.horizons_s,
        )
        for k in np.unique(keys)
    }
    return out


def _touched(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[str]:
    return sorted(
        k
        for k in after
        if k not in before
        or before[k].shape != after[k].shape
        or not torch.equal(before[k], after[k])
    )


def _touched_by(before: dict[str, torch.Tensor], net: torch.nn.Module) -> list[str]:
    """State-dict keys that changed; a fork's per network (``base.…``, ``fork.…``)."""
    if not isinstance(net, RoutedForecastNet):
        return _touched(before, net.state_dict())
    return [
        f"{name}.{key}"
        for name in ("base", "fork")
        for key in _touched(before, getattr(net, name).state_dict())
    ]


def extend_lines(
    ckpt_path: Path,
    out_dir: Path,
    cfg: ExtensionConfig,
    *,
    data_overrides: dict[str, Any] | None = None,
    eval_dates: list[str] | None = None,
) -> ExtensionReport:
    """Grow a checkpoint by new lines and warm-start it; write ``out_dir/model.ckpt``.

    Args:
        ckpt_path: Base checkpoint (from ``transitnet fit``).
        out_dir: Output folder (``model.ckpt``, ``report.json``, ``report.md``).
        cfg: Extension settings.
        data_overrides: DataModule arguments for the new data (``train_dates`` = the new
            line's data; ``store``/``static`` when elsewhere).
        eval_dates: When given, old- and new-line MAE before and after are reported on
            these dates (which must come after the training period).
    """
    pl.seed_everything(cfg.seed, workers=True)
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    base = ForecastingTask.load_from_checkpoint(ckpt_path, map_location="cpu")
    overrides = {
        "exclude_lines": None,
        "include_lines": None,
        "val_dates": None,
        "test_dates": eval_dates,
        "batch_size": cfg.batch_size,
        **(data_overrides or {}),
    }
    dm = load_datamodule(ckpt, **overrides)
    dm.setup("fit")
    new_keys = (
        find_new_lines(dm, dm.windows["train"], cfg.min_windows)
        if cfg.new_lines == "auto"
        else list(cfg.new_lines)
    )
    if not new_keys:
        raise ValueError("no new lines to add: every line in the new data is already known")
    logger.info("adding %d line(s): %s", len(new_keys), ", ".join(new_keys))
    return _run_extension(ckpt, base, dm, new_keys, cfg, out_dir, eval_dates)


def _run_extension(
    ckpt: dict[str, Any],
    base: ForecastingTask,
    dm: TransitDataModule,
    new_keys: list[str],
    cfg: ExtensionConfig,
    out_dir: Path,
    eval_dates: list[str] | None,
) -> ExtensionReport:
    before: dict[str, Any] = {}
    if eval_dates:
        dm.setup("test")
        before = evaluate_lines(base, dm, "test", new_keys)
    task, report = train_extension(ckpt, base, dm, new_keys, cfg, out_dir=out_dir)
    if eval_dates:
        report.evaluation = {"before": before, "after": evaluate_lines(task, dm, "test", new_keys)}
    return report


def train_extension(
    ckpt: dict[str, Any],
    base: ForecastingTask,
    dm: TransitDataModule,
    new_keys: list[str],
    cfg: ExtensionConfig,
    *,
    out_dir: Path | None = None,
    progress_bar: bool = True,
) -> tuple[LineExtensionTask, ExtensionReport]:
    """Grow ``base`` by ``new_keys`` and train it under ``cfg.tier`` on ``dm``'s windows.

    The in-memory core of :func:`extend_lines`, for callers that already hold prepared
    windows (experiments run many init × tier combinations on the same data). ``dm`` is
    modified: its vocabulary gains ``new_keys`` and its ``train`` windows become the
    new lines' windows (plus the replay buffer for ``replay``). Give each call its own
    DataModule.

    Args:
        ckpt: The base checkpoint as loaded by ``torch.load`` (its row keys and shapes).
        base: The base task (weights to start from; not modified).
        dm: A set-up DataModule holding the base's vocabulary and scalers, with
            ``windows["train"]`` holding the new lines' windows (and old lines' windows,
            which only ``replay`` uses); ``zero-shot`` needs none.
        new_keys: Line keys to add (absent from the vocabulary).
        cfg: Extension settings.
        out_dir: When given, ``out_dir/model.ckpt`` is written.
        progress_bar: Show Lightning's progress bar.

    Returns:
        The trained task (grown vocabulary in ``task.line_keys``) and its report
        (``evaluation`` left empty).

    Raises:
        ValueError: A training tier without any window of the new lines.
    """
    check_extendable(ckpt)
    inits, similar = resolve_inits(cfg.init, dm, new_keys)
    train = dm.windows["train"]
    is_new = train.meta["line_key"].isin(new_keys).to_numpy()
    steps = 0 if cfg.tier == "zero-shot" else cfg.max_steps
    if steps and not is_new.any():
        raise ValueError(f"tier {cfg.tier!r} trains on the new lines' windows: none for {new_keys}")
    choice: dict[str, Any] = {}
    trips = count_trips(train.subset(is_new))
    if steps and cfg.tier == "fork" and is_few_trip(cfg.few_trips, trips):
        logger.info("fewer than %d trips of a new line: the fork tunes its new rows only",
                    cfg.few_trips)  # fmt: skip
        cfg = replace(cfg, tune_layers=[])
    if steps and wants_early_stopping(cfg.early_stopping, cfg.few_trips, trips):
        fit, held = held_out_windows(train, is_new)
        curve = HeldOutCurve("val", every=math.ceil(steps / CURVE_POINTS))
        first = _fit_tier(ckpt, base, dm.with_windows({"train": fit, "val": held}), new_keys,
                          cfg, steps, inits=inits, progress_bar=progress_bar,
                          callbacks=[curve])  # fmt: skip
        steps = choose_steps(curve.curve)
        choice = {
            "held_trips": count_trips(held),
            "held_windows": len(held),
            "curve": [[step, round(mae, 2)] for step, mae in curve.curve],
            "chosen_steps": steps,
            "first_run_steps": first.steps,
            "first_run_wall_seconds": round(first.wall, 3),
        }
        logger.info("early stopping on %d held-out trip(s): %d of %d steps (held-out MAE %.0f m)",
                    sum(choice["held_trips"].values()), steps, first.steps,
                    min(m for _, m in curve.curve))  # fmt: skip
    run = _fit_tier(ckpt, base, dm, new_keys, cfg, steps, inits=inits, progress_bar=progress_bar)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        run.trainer.save_checkpoint(out_dir / "model.ckpt")
    report = ExtensionReport(
        lines_added=new_keys,
        init=cfg.init,
        tier=cfg.tier,
        steps=run.steps,
        wall_seconds=round(run.wall + choice.get("first_run_wall_seconds", 0.0), 3),
        tensors_touched=run.touched,
        train_windows=int(is_new.sum()),
        replay_windows=run.n_replay,
        step_choice=choice,
        similar_lines=similar,
    )
    return run.task, report


@dataclass
class _TierFit:
    task: LineExtensionTask
    trainer: pl.Trainer
    steps: int
    wall: float
    touched: list[str]
    n_replay: int


def _fit_tier(
    ckpt: dict[str, Any],
    base: ForecastingTask,
    dm: TransitDataModule,
    new_keys: list[str],
    cfg: ExtensionConfig,
    steps: int,
    *,
    inits: dict[str, str],
    progress_bar: bool,
    callbacks: list[pl.Callback] | None = None,
) -> _TierFit:
    """Grow a copy of ``base`` by ``new_keys`` (in ``dm.vocab``) and train ``steps`` steps."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    task = build_extension_task(ckpt, base, cfg)
    assert isinstance(task.net, ForecastNet)
    n_old = len(dm.vocab)
    state_before = {k: v.clone() for k, v in task.net.state_dict().items()}
    generator = torch.Generator().manual_seed(cfg.seed)
    for key in new_keys:  # in order: each line its own init (similar:auto)
        add_lines(task.net, dm.vocab, [key], init=inits[key], generator=generator)
    task.line_keys = tuple(dm.vocab.keys)
    task.prepare_tier(n_old)
    train = dm.windows["train"]
    is_new = train.meta["line_key"].isin(new_keys).to_numpy()
    dm.windows["train"], n_replay = build_training_windows(train, is_new, cfg)
    started = time.perf_counter()
    trainer = pl.Trainer(
        max_steps=steps,
        max_epochs=-1 if steps else 0,
        limit_train_batches=1.0 if steps else 0,  # zero-shot needs no data at all
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        enable_progress_bar=progress_bar,
        callbacks=callbacks,
    )
    trainer.fit(task, datamodule=dm)
    wall = time.perf_counter() - started
    touched = _touched_by(state_before, task.net)
    return _TierFit(task, trainer, int(trainer.global_step), wall, touched, n_replay)


def build_training_windows(
    train: Windows, is_new: np.ndarray, cfg: ExtensionConfig
) -> tuple[Windows, int]:
    """The windows an extension trains on, and how many of them are old lines'.

    The new lines' windows, plus for ``replay`` a line-balanced buffer of
    ``replay_per_line`` old-line windows per line and for ``partial`` one of
    ``distill_per_line`` (inputs for distillation only). With a buffer, the new lines'
    windows are repeated up to ``replay_new_share`` of the set.

    Args:
        train: Windows with ``meta["line_key"]``; old lines' windows are sampled from.
        is_new: ``(N,)`` mask of the new lines' windows in ``train``.
        cfg: Extension settings (``tier``, ``replay_per_line``, ``distill_per_line``,
            ``replay_new_share``, ``seed``).
    """
    per_line = {"replay": cfg.replay_per_line, "partial": cfg.distill_per_line}.get(cfg.tier, 0)
    new = train.subset(is_new)
    if per_line <= 0:
        return new, 0
    old = sample_per_line(train.subset(~is_new), per_line, cfg.seed)
    copies = _repeats(len(new), len(old), cfg.replay_new_share)
    return concat_windows([new] * copies + [old]), len(old)


def _repeats(n_new: int, n_replay: int, share: float) -> int:
    """Copies of ``n_new`` windows that make them >= ``share`` of the set with the replay."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"replay_new_share must be in [0, 1), got {share}")
    if n_new == 0 or share == 0.0:
        return 1
    return max(1, math.ceil(share / (1.0 - share) * n_replay / n_new))


def report_dict(report: ExtensionReport) -> dict[str, Any]:
    """The report as JSON-ready data."""
    return asdict(report)
