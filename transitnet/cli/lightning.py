"""``transitnet fit|validate|test|predict``: LightningCLI over transitnet's tasks.

Configs are YAML files shipped in ``transitnet/configs/`` (see :func:`config_path`);
every init argument of the task and the DataModule can be overridden on the command
line, e.g. ``--data.store DIR --data.train_dates '[2017-03-16]'``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LightningCLI

from transitnet.tasks.base import BaseTask

logger = logging.getLogger(__name__)


def config_path(name: str) -> Path:
    """Path of a config shipped with the package, e.g. ``forecast.yaml``."""
    return Path(str(resources.files("transitnet") / "configs" / name))


def restore_datamodule_state(datamodule: Any, ckpt_path: str | Path | None) -> None:
    """Give a ``TransitDataModule`` its checkpoint's vocabulary and scalers before a run.

    Lightning restores the DataModule's state only after the model is configured, so a
    forecaster sized from the DataModule would otherwise be built for an empty
    vocabulary. Also refuses a checkpoint whose horizons or past fixes per window
    differ from the DataModule's.

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
    state = ckpt.get(type(datamodule).__qualname__)
    if state is not None:
        datamodule.load_state_dict(state)
        logger.info("DataModule state (%d lines) restored from %s", len(datamodule.vocab),
                    ckpt_path)  # fmt: skip


class TransitCLI(LightningCLI):
    """LightningCLI with transitnet's defaults (any task, any DataModule, by class path)."""

    def _restore_datamodule(self) -> None:
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        restore_datamodule_state(self.datamodule, ckpt_path)

    def before_validate(self) -> None:
        """Restore the DataModule state from ``--ckpt_path`` (:func:`restore_datamodule_state`)."""
        self._restore_datamodule()

    def before_test(self) -> None:
        """Restore the DataModule state from ``--ckpt_path`` (:func:`restore_datamodule_state`)."""
        self._restore_datamodule()

    def before_predict(self) -> None:
        """Restore the DataModule state from ``--ckpt_path`` (:func:`restore_datamodule_state`)."""
        self._restore_datamodule()


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
