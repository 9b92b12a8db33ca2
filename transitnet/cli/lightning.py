"""``transitnet fit|validate|test|predict``: LightningCLI over transitnet's tasks.

Configs are YAML files shipped in ``transitnet/configs/`` (see :func:`config_path`);
every init argument of the task and the DataModule can be overridden on the command
line, e.g. ``--data.store DIR --data.train_dates '[2017-03-16]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LightningCLI

from transitnet.tasks.base import BaseTask


def config_path(name: str) -> Path:
    """Path of a config shipped with the package, e.g. ``forecast.yaml``."""
    return Path(str(resources.files("transitnet") / "configs" / name))


def check_checkpoint_windows(datamodule: Any, ckpt_path: str | Path | None) -> None:
    """Refuse a checkpoint whose horizons or past fixes differ from the DataModule's.

    Run before validate/test/predict, so the mismatch is one clear message rather than
    a shape error deep in the network. The vocabulary and scalers themselves are
    restored by Lightning (the task builds its network from the checkpoint when the
    DataModule has none fitted yet: ``ForecastingTask.configure_model``).

    Raises:
        ValueError: When the checkpoint was trained with other horizons or past fixes.
    """
    from transitnet.datamodules.transit import TransitDataModule
    from transitnet.tasks.forecasting import CKPT_KEY

    if not ckpt_path or not isinstance(datamodule, TransitDataModule):
        return
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    meta = ckpt.get(CKPT_KEY) or {}
    saved = ckpt.get("datamodule_hyper_parameters") or {}
    wanted = {"horizons_s": meta.get("horizons_s"), "past_fixes": saved.get("past_fixes")}
    have = {
        "horizons_s": list(datamodule.horizons_s),
        "past_fixes": datamodule.window_config.past_fixes,
    }
    for name, value in wanted.items():
        if value is not None and value != have[name]:
            raise ValueError(
                f"the checkpoint was trained with {name}={value} but the DataModule has "
                f"{have[name]}: pass --data.{name} '{value}'"
            )


#: Checkpoint key each task writes → the task's class path.
TASK_CLASS_PATHS: dict[str, str] = {
    "transitnet_forecaster": "transitnet.tasks.ForecastingTask",
    "transitnet_classifier": "transitnet.tasks.ClassificationTask",
}


def infer_model_config(ckpt_path: str | Path) -> dict[str, Any] | None:
    """``{"class_path", "init_args"}`` of a checkpoint written outside LightningCLI.

    Checkpoints saved by a plain ``Trainer`` (``transitnet extend``, scripts) record their
    hyperparameters without LightningCLI's ``_class_path``; the task is recognised by the
    key it writes. None when the checkpoint has a class path or is not a transitnet task.
    """
    ckpt = torch.load(ckpt_path, weights_only=True, map_location="cpu")
    hparams = ckpt.get("hyper_parameters") or {}
    if not hparams or "_class_path" in hparams:
        return None
    for key, class_path in TASK_CLASS_PATHS.items():
        if key in ckpt:
            init_args = {k: v for k, v in hparams.items() if not k.startswith("_")}
            return {"class_path": class_path, "init_args": init_args}
    return None


class TransitCLI(LightningCLI):
    """LightningCLI with transitnet's defaults (any task, any DataModule, by class path)."""

    def _parse_ckpt_path(self) -> None:
        """Take the model's settings from ``--ckpt_path``, whoever wrote the checkpoint.

        LightningCLI does this for checkpoints it wrote itself; for others (see
        :func:`infer_model_config`) the task class is inferred from the checkpoint.
        """
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        model = infer_model_config(ckpt_path) if ckpt_path and Path(ckpt_path).is_file() else None
        if model is None:
            super()._parse_ckpt_path()
            return
        self.config = self.parser.parse_object({subcommand: {"model": model}}, self.config)

    def _check_checkpoint(self) -> None:
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        check_checkpoint_windows(self.datamodule, ckpt_path)

    def before_validate(self) -> None:
        """Check ``--ckpt_path`` against the DataModule (:func:`check_checkpoint_windows`)."""
        self._check_checkpoint()

    def before_test(self) -> None:
        """Check ``--ckpt_path`` against the DataModule (:func:`check_checkpoint_windows`)."""
        self._check_checkpoint()

    def before_predict(self) -> None:
        """Check ``--ckpt_path`` against the DataModule (:func:`check_checkpoint_windows`)."""
        self._check_checkpoint()


def run_lightning_cli(args: Sequence[str]) -> TransitCLI:
    """Run LightningCLI on ``args`` (``fit --config …`` and so on)."""
    return TransitCLI(
        BaseTask,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=list(args),
        save_config_kwargs={"overwrite": True},
    )
