"""Refit a forecaster on training + validation data for the epoch count chosen on validation.

Standard practice once settings are chosen: the first fit (early stopping on the
validation split) gives the number of epochs; a second fit from scratch, same seed and
settings, trains that many epochs on the training and validation periods together, so
the data nearest the test period is used too. Nothing is validated during the refit
(the validation period is training data now), so the P10/P90 calibration scales of the
first fit (split-conformal on the validation split, held out from that fit) are carried
over to the refitted network.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from transitnet.datamodules.transit import TransitDataModule
from transitnet.tasks.forecasting import CALIBRATION_KEY, ForecastingTask

logger = logging.getLogger("exp_refit")


def read_best_epochs(ckpt: Path) -> tuple[int, torch.Tensor]:
    """Epochs trained when ``ckpt`` was saved (1-based), and its calibration scales."""
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    return int(saved["epoch"]) + 1, saved["state_dict"][CALIBRATION_KEY]


def refit(
    dm: TransitDataModule,
    settings: dict[str, Any],
    first_ckpt: Path,
    out: Path,
    seed: int,
) -> dict[str, Any]:
    """Train from scratch on ``dm`` (train + val as its training period) and save it.

    Args:
        dm: A DataModule whose training period is the first fit's training and
            validation periods, with no validation period.
        settings: The task's settings (as the first fit, ``max_epochs_hint`` included,
            so the learning-rate schedule is the same over the epochs trained).
        first_ckpt: The first fit's best checkpoint: its epoch count and calibration.
        out: Where ``refit.ckpt`` is written.
        seed: The first fit's seed.

    Returns:
        ``ckpt`` (path), ``epochs``, ``steps``, ``fit_s``, ``train_windows``.
    """
    epochs, scales = read_best_epochs(first_ckpt)
    pl.seed_everything(seed, workers=True, verbose=False)
    task = ForecastingTask(**settings)
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_progress_bar=True,
        enable_model_summary=False,
        deterministic=True,
        default_root_dir=out,
    )
    started = time.perf_counter()
    trainer.fit(task, dm)
    if task.net is None:
        raise RuntimeError("the refit built no network")
    task.net.calibration.set_scales(scales)
    ckpt, partial = out / "refit.ckpt", out / "refit.ckpt.partial"
    trainer.save_checkpoint(partial)
    partial.replace(ckpt)  # atomic: a reader never sees half a checkpoint
    logger.info("refit on train+val for %d epochs: %s", epochs, ckpt)
    return {
        "ckpt": str(ckpt),
        "epochs": epochs,
        "steps": trainer.global_step,
        "fit_s": round(time.perf_counter() - started, 1),
        "train_windows": len(dm.windows["train"]),
    }
