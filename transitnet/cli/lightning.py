"""``transitnet fit|validate|test|predict``: LightningCLI over transitnet's tasks.

Configs are YAML files shipped in ``transitnet/configs/`` (see :func:`config_path`);
every init argument of the task and the DataModule can be overridden on the command
line, e.g. ``--data.store DIR --data.train_dates '[2017-03-16]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI

from transitnet.tasks.base import BaseTask


def config_path(name: str) -> Path:
    """Path of a config shipped with the package, e.g. ``forecast.yaml``."""
    return Path(str(resources.files("transitnet") / "configs" / name))


class TransitCLI(LightningCLI):
    """LightningCLI with transitnet's defaults (any task, any DataModule, by class path)."""


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
