"""Add classes (lines) to a trained route classifier by name, train them, and report.

``extend_classes`` is the answer to "vehicles now run on a line the classifier has
never seen": it loads the base checkpoint, finds (or is told) the new line keys, picks
``shots`` example trajectories of each from the new data, grows the head by name with
the chosen init, trains under the chosen mode (see :mod:`transitnet.tasks.class_extension`;
``prototype`` adds class means and trains nothing), aligns (WA or BiC), gates the new
classes to windows the old ones are unsure of (:mod:`transitnet.models.claim_gate`), and writes
``DIR/model.ckpt`` (loadable by ``ClassificationTask.load_from_checkpoint``, with the
grown class registry), ``DIR/report.json`` and ``DIR/report.md``.

:func:`run_class_extension` does the same in memory, for experiments.
"""

from __future__ import annotations

import copy
import inspect
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning import __version__ as pl_version  # type: ignore[attr-defined]
from torch.utils.data import DataLoader

from transitnet.datamodules.classification import RouteClassDataModule, load_class_datamodule
from transitnet.datasets.class_batches import (
    ClassWindowDataset,
    collate_class_batch,
    concat_class_windows,
    sample_per_class,
    sample_trajectories,
    split_holdout,
)
from transitnet.datasets.class_windows import ClassWindows, is_member
from transitnet.evaluate_classes import (
    ClassExtensionReport,
    evaluate_windows,
    summarise,
    write_reports,
)
from transitnet.extend_classes_config import ClassExtensionConfig
from transitnet.models.claim_gate import gate_threshold
from transitnet.models.heads import fit_bic
from transitnet.store.atomic import write_bytes_atomic
from transitnet.tasks.class_extension import MODES, ClassExtensionTask
from transitnet.tasks.classification import ClassificationTask

logger = logging.getLogger(__name__)


@dataclass
class ExtensionData:
    """Windows an extension may use.

    Attributes:
        train: The new data: new classes' windows (examples are drawn from them) and,
            for ``replay``/BiC, old classes' windows.
        evaluation: Later windows to score old and new classes on (optional).
        scale: The feature scaler ``(mean, std)`` of the base model's DataModule.
    """

    train: ClassWindows
    evaluation: ClassWindows | None
    scale: tuple[np.ndarray, np.ndarray]


def find_new_classes(windows: ClassWindows, known: tuple[str, ...], min_windows: int) -> list[str]:
    """Line keys with at least ``min_windows`` windows that ``known`` lacks (sorted)."""
    counts = windows.meta["line_key"].dropna().astype(str).value_counts()
    return sorted(str(k) for k, n in counts.items() if n >= min_windows and k not in known)


def build_extension_task(base: ClassificationTask, cfg: ClassExtensionConfig) -> ClassExtensionTask:
    """A :class:`ClassExtensionTask` holding a copy of the base weights, not yet grown."""
    accepted = set(inspect.signature(ClassificationTask.__init__).parameters) - {"self"}
    hp = {k: v for k, v in base.hparams.items() if k in accepted}
    task = ClassExtensionTask(
        mode=cfg.mode if cfg.mode in MODES else "none",
        new_row_lr=cfg.new_row_lr,
        layer_lr=cfg.layer_lr,
        distill_weight=cfg.distill_weight,
        temperature=cfg.temperature,
        train_new_bias=cfg.train_new_bias,
        pseudo_ratio=cfg.pseudo_ratio,
        full_covariance=cfg.full_covariance,
        mixture=cfg.mixture,
        **hp,
    )
    encoder, head, _ = base.net()
    task.build_net(head.class_names, encoder.n_features)
    task.load_state_dict(base.state_dict())
    task.correction = base.correction
    task.class_stats = dict(base.class_stats)
    task.class_chol = dict(base.class_chol)
    task.class_mix = dict(base.class_mix)
    task.confidence_grid = list(base.confidence_grid)
    task.claim_gate = copy.deepcopy(base.claim_gate)
    return task


def _example_features(
    task: ClassificationTask, examples: ClassWindows, names: list[str], scale: Any
) -> dict[str, torch.Tensor]:
    feats = task.encode_dataset(ClassWindowDataset(examples, np.full(len(examples), -1), scale))
    labels = examples.labels
    return {n: feats[torch.from_numpy(labels == n)] for n in names}


def _train(
    task: ClassExtensionTask, windows: ClassWindows, scale: Any, cfg: ClassExtensionConfig
) -> int:
    rows = {n: i for i, n in enumerate(task.class_names)}
    labels = np.asarray([rows[k] for k in windows.labels], dtype=np.int64)
    loader = DataLoader(
        ClassWindowDataset(windows, labels, scale),
        batch_size=cfg.batch_size,
        shuffle=True,
        collate_fn=collate_class_batch,  # type: ignore[arg-type]
    )
    trainer = pl.Trainer(
        max_steps=cfg.max_steps,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        enable_progress_bar=cfg.progress,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(task, train_dataloaders=loader)
    return int(trainer.global_step)


@dataclass
class ExtensionWindows:
    """What an extension trains and calibrates on (drawn from :attr:`ExtensionData.train`).

    Attributes:
        examples: Windows of the ``shots`` example trajectories per new class.
        replay: Class-balanced old windows (``replay`` mode).
        bic_old: Held-out old windows for BiC (empty unless ``align="bic"``).
        bic_new: Held-out new windows for BiC (taken from the examples' trajectories).
    """

    examples: ClassWindows
    replay: ClassWindows
    bic_old: ClassWindows
    bic_new: ClassWindows


def draw_extension_windows(
    train: ClassWindows, old: list[str], new: list[str], cfg: ClassExtensionConfig
) -> ExtensionWindows:
    """Sample examples, replay buffer and BiC hold-outs from the new data (seeded).

    Raises:
        ValueError: A new class without trajectories, or BiC without held-out windows.
    """
    labels = train.labels
    pool = train.subset(is_member(labels, new))
    examples = sample_trajectories(pool, new, cfg.shots or 10**9, cfg.seed)
    old_pool = train.subset(is_member(labels, old))
    bic_old = bic_new = examples.subset(np.zeros(len(examples), dtype=bool))
    if cfg.align == "bic":
        examples, bic_new = split_holdout(examples, cfg.bic_per_class, cfg.seed, 0.25)
        old_pool, bic_old = split_holdout(old_pool, cfg.bic_per_class, cfg.seed, 0.5)
        if len(bic_new) == 0 or len(bic_old) == 0:
            raise ValueError("BiC needs held-out windows of old and new classes: give more shots")
    replay = sample_per_class(old_pool, cfg.replay_per_class, cfg.seed)
    if cfg.mode != "replay" and not (cfg.mode == "frozen" and cfg.old_negatives):
        replay = replay.subset(np.zeros(len(replay), dtype=bool))
    return ExtensionWindows(examples, replay, bic_old, bic_new)


def grow_task(
    task: ClassExtensionTask,
    windows: ExtensionWindows,
    new: list[str],
    cfg: ClassExtensionConfig,
    scale: tuple[np.ndarray, np.ndarray],
) -> None:
    """Add the new classes to the head (init from the examples' features for imprint)."""
    feats = _example_features(task, windows.examples, new, scale)
    task.net()[1].add_classes(
        new,
        cfg.init,
        feats if cfg.init == "imprint" else None,
        mask=cfg.mask or cfg.mode == "prototype",
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def train_task(
    task: ClassExtensionTask,
    windows: ExtensionWindows,
    new: list[str],
    cfg: ClassExtensionConfig,
    scale: tuple[np.ndarray, np.ndarray],
) -> int:
    """Train per mode, then add the new classes' prototypes; return the optimizer steps."""
    head, steps = task.net()[1], 0
    task.prepare_mode(len(head.class_names) - len(new))
    if cfg.mode in ("frozen", "replay", "naive"):
        head.set_active(new)  # masked classes are masked until trained
        steps = _train(task, concat_class_windows([windows.examples, windows.replay]), scale, cfg)
    for name, f in _example_features(task, windows.examples, new, scale).items():
        task.add_class_features(name, f)
    if cfg.mode == "prototype":
        task.hparams["predict_with"] = "prototype"
    return steps


def run_class_extension(
    base: ClassificationTask, data: ExtensionData, new_classes: list[str], cfg: ClassExtensionConfig
) -> tuple[ClassExtensionTask, ClassExtensionReport]:
    """Grow ``base`` by ``new_classes`` and train them under ``cfg`` (base is not modified).

    Returns:
        The grown task and the report (``evaluation`` holds ``before``, ``after_add`` and
        ``after`` scores when ``data.evaluation`` is given).

    Raises:
        ValueError: Bad settings, no new classes, a class already known or without windows.
    """
    cfg.check()
    old, groups = list(base.class_names), (new_classes, list(base.class_names))
    if not new_classes or set(new_classes) & set(old):
        raise ValueError(f"new classes {new_classes} are empty or already known")
    pl.seed_everything(cfg.seed, workers=True)
    windows = draw_extension_windows(data.train, old, new_classes, cfg)
    before, base_pred, feats_eval = evaluate_windows(base, data.evaluation, data.scale, groups)
    started = time.perf_counter()
    task = build_extension_task(base, cfg)
    grow_task(task, windows, new_classes, cfg, data.scale)
    after_add, add_pred, _ = evaluate_windows(
        task, data.evaluation, data.scale, groups, feats_eval
    )  # same encoder
    steps = train_task(task, windows, new_classes, cfg, data.scale)
    wa, offset, bic = _align(task, cfg, windows, data.scale, new_classes)
    gate = set_claim_gate(task, new_classes, 0.0 if cfg.mode == "prototype" else cfg.claim_gate)
    wall = time.perf_counter() - started
    frozen = cfg.mode in ("none", "frozen", "prototype")  # encoder and neck untouched
    after, _, _ = evaluate_windows(
        task, data.evaluation, data.scale, groups, feats_eval if frozen else None
    )
    report = ClassExtensionReport(
        classes_added=list(new_classes),
        init=cfg.init,
        mode=cfg.mode,
        align=cfg.align,
        shots=cfg.shots,
        masked=cfg.mask or cfg.mode == "prototype",
        steps=steps,
        wall_seconds=round(wall, 3),
        example_windows=len(windows.examples),
        replay_windows=len(windows.replay),
        bic_windows=len(windows.bic_old) + len(windows.bic_new),
        wa_factor=wa,
        wa_offset=offset,
        bic=bic,
        claim_gate=gate,
        evaluation={"before": before, "after_add": after_add, "after": after} if before else {},
    )
    report.summary = summarise(report.evaluation, base_pred, add_pred, data.evaluation, old)
    return task, report


def set_claim_gate(
    task: ClassificationTask, new_classes: list[str], q: float
) -> dict[str, float] | None:
    """Gate the new classes (and any gated before) at the base model's confidence ``q``-quantile.

    See :mod:`transitnet.models.claim_gate`. ``q`` = 0 leaves the task as it is.

    Returns:
        ``{"q", "threshold"}``, or None when off or (with a warning) when the checkpoint
        recorded no confidences (written before the gate existed).
    """
    if q <= 0.0:
        return None
    if not task.confidence_grid:
        logger.warning("the checkpoint recorded no confidences: claim gate skipped")
        return None
    threshold = gate_threshold(task.confidence_grid, q)
    before = task.claim_gate["classes"] if task.claim_gate else []
    classes = list(before) + [n for n in new_classes if n not in before]
    task.claim_gate = {"classes": classes, "q": q, "threshold": threshold}
    return {"q": q, "threshold": round(threshold, 6)}


def _align(
    task: ClassExtensionTask,
    cfg: ClassExtensionConfig,
    windows: ExtensionWindows,
    scale: Any,
    new_classes: list[str],
) -> tuple[float | None, float | None, dict[str, float] | None]:
    """Align after training: ``(WA factor, WA bias offset, BiC alpha and beta)``.

    WA gives its factor on a linear head, its bias offset on a cosine one; BiC's
    alpha and beta are also recorded on the task.
    """
    head = task.net()[1]
    if cfg.align == "wa" and head.cosine and cfg.mode not in ("none", "frozen"):
        logger.warning("statistical WA needs the base encoder (the statistics' own): skipped")
        return None, None, None
    if cfg.align == "wa" and head.cosine:
        offset = task.align_by_claim_rate(
            cfg.wa_claim_rate, seed=cfg.seed, per_class=cfg.wa_per_class
        )
        return None, None if offset is None else round(offset, 6), None
    if cfg.align == "wa":
        return round(head.weight_align(), 6), None, None
    if cfg.align != "bic":
        return None, None, None
    held = concat_class_windows([windows.bic_old, windows.bic_new])
    rows = {n: i for i, n in enumerate(task.class_names)}
    targets = torch.as_tensor([rows[k] for k in held.labels], dtype=torch.long)
    feats = task.encode_dataset(ClassWindowDataset(held, targets.numpy(), scale))
    with torch.no_grad():
        logits = task.logits(feats, "classifier")
    new_mask = torch.tensor([n in new_classes for n in task.class_names])
    fitted = fit_bic(logits, targets, new_mask)
    alpha, beta = fitted.alpha.item(), fitted.beta.item()
    task.correction = {"classes": list(new_classes), "alpha": alpha, "beta": beta}
    return None, None, {"alpha": round(alpha, 6), "beta": round(beta, 6)}


def write_class_checkpoint(task: ClassificationTask, dm: RouteClassDataModule, path: Path) -> Path:
    """Write a checkpoint loadable by ``ClassificationTask.load_from_checkpoint``, atomically.

    It holds the weights, the task's hyperparameters, the class names and the DataModule's
    hyperparameters and state (grown registry); no optimizer state (a warm start).
    """
    accepted = set(inspect.signature(ClassificationTask.__init__).parameters) - {"self"}
    ckpt: dict[str, Any] = {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": pl_version,
        "state_dict": task.state_dict(),
        "hyper_parameters": {k: v for k, v in task.hparams.items() if k in accepted},
        "datamodule_hyper_parameters": dict(dm.hparams),
        RouteClassDataModule.__qualname__: dm.state_dict(),
    }
    task.on_save_checkpoint(ckpt)
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    write_bytes_atomic(path, buf.getvalue())
    return path


def extend_classes(
    ckpt_path: Path,
    out_dir: Path,
    cfg: ClassExtensionConfig,
    *,
    data_overrides: dict[str, Any] | None = None,
    eval_dates: list[str] | None = None,
) -> ClassExtensionReport:
    """Grow a classifier checkpoint by new classes; write ``out_dir/model.ckpt`` and reports.

    Args:
        ckpt_path: Base checkpoint (from ``transitnet fit``).
        out_dir: Output folder (``model.ckpt``, ``report.json``, ``report.md``).
        cfg: Extension settings.
        data_overrides: DataModule arguments for the new data (``train_dates`` = the new
            data; ``store`` when elsewhere).
        eval_dates: When given, old- and new-class accuracy before and after are reported
            on these dates (which must come after the new data).
    """
    cfg.check()
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    base = ClassificationTask.load_from_checkpoint(ckpt_path, map_location="cpu")
    overrides = {
        "exclude_classes": None,
        "classes": None,
        "max_classes": None,
        "val_dates": None,
        "test_dates": eval_dates,
        **(data_overrides or {}),
    }
    dm = load_class_datamodule(ckpt, **overrides)
    dm.setup("fit")
    if eval_dates:
        dm.setup("test")
    new = (
        find_new_classes(dm.windows["train"], base.class_names, cfg.min_windows)
        if cfg.new_classes == "auto"
        else list(cfg.new_classes)
    )
    if not new:
        raise ValueError("no new classes to add: every line in the new data is already known")
    logger.info("adding %d class(es): %s", len(new), ", ".join(new))
    data = ExtensionData(dm.windows["train"], dm.windows.get("test"), dm.scale)  # type: ignore[arg-type]
    task, report = run_class_extension(base, data, new, cfg)
    dm.add_classes(new)
    write_class_checkpoint(task, dm, out_dir / "model.ckpt")
    write_reports(report, out_dir)
    return report
