"""Refitting on train+val for the epoch count chosen on validation (benchmarks/exp_refit.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch

from tests.synthetic import make_matched, write_matched_store
from transitnet.datamodules import TransitDataModule
from transitnet.tasks import ForecastingTask
from transitnet.tasks.forecasting import CALIBRATION_KEY

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from exp_refit import read_best_epochs, refit

SETTINGS = {"hidden_dim": 16, "line_dim": 4, "max_epochs_hint": 4}


def _dm(store: Path, train: list[str], val: list[str] | None) -> TransitDataModule:
    return TransitDataModule(
        str(store),
        train_dates=train,
        val_dates=val,
        test_dates=["2024-05-08"],
        horizons_s=[60, 120],
        past_fixes=4,
        batch_size=32,
    )


def test_refit_trains_on_train_and_val_and_keeps_the_first_calibration(tmp_path: Path) -> None:
    days = ("2024-05-06", "2024-05-07", "2024-05-08")
    matched = pd.concat([make_matched(day=d, seed=i) for i, d in enumerate(days)])
    store = write_matched_store(tmp_path / "store", matched)
    pl.seed_everything(0)
    first = ForecastingTask(**SETTINGS)
    best = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, monitor="val_mae", filename="best")
    trainer = pl.Trainer(max_epochs=3, logger=False, callbacks=[best], enable_progress_bar=False)
    trainer.fit(first, _dm(store, [days[0]], [days[1]]))
    first_ckpt = Path(best.best_model_path)
    epochs, scales = read_best_epochs(first_ckpt)
    # the best epoch's index is in its name (epoch 0 is one epoch of training)
    saved_first = torch.load(first_ckpt, weights_only=False)
    assert epochs == int(saved_first["epoch"]) + 1 and 1 <= epochs <= 3
    per_epoch = trainer.num_training_batches
    assert saved_first["global_step"] == epochs * per_epoch  # that many epochs were trained
    assert not bool((scales == 1.0).all())  # calibrated on val
    both = _dm(store, list(days[:2]), None)
    out = refit(both, SETTINGS, first_ckpt, tmp_path, seed=0)
    assert out["epochs"] == epochs and out["train_windows"] > len(
        first.trainer.datamodule.windows["train"]
    )
    saved = torch.load(out["ckpt"], weights_only=False)
    assert torch.equal(saved["state_dict"][CALIBRATION_KEY], scales)
    assert saved["TransitDataModule"]["vocab"] and saved["epoch"] == epochs
    loaded = ForecastingTask.load_from_checkpoint(out["ckpt"])
    assert torch.equal(loaded.net.calibration.scales, scales)
