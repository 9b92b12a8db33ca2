"""Few-trip extensions: choose the number of steps on the new line's own last trips.

With a handful of trips of a new line, training its row (or a fork) for a fixed number
of steps can end worse than the row it started from: the few trips over-fit, and they
often come from one part of the day. :func:`split_last_trips` holds out each new line's
last trips (time-ordered, so no window of a held trip is ever trained on), and
:class:`HeldOutCurve` scores the new-line MAE on them at step 0 (the initialisation) and
every few steps. :func:`choose_steps` picks the step count with the lowest held-out MAE
(0 keeps the initialisation); the extension then retrains on every trip for that many
steps (:func:`transitnet.extend.train_extension`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from transitnet.datamodules.transit import TransitDataModule
from transitnet.datasets.windows import Windows, concat_windows
from transitnet.evaluate import predict_windows
from transitnet.metrics import compute_mae

logger = logging.getLogger(__name__)

#: Share of each new line's trips held out (at least one, and one left to train on).
HELD_SHARE = 0.25
#: Held-out scores per run (step 0 included).
CURVE_POINTS = 20


def trip_keys(meta: pd.DataFrame) -> pd.Series:
    """One key per trip run: ``vehicle_id|trip_id|service_date`` of each window's row."""
    return (
        meta["vehicle_id"].astype(str)
        + "|"
        + meta["trip_id"].astype(str)
        + "|"
        + meta["service_date"].astype(str)
    )


def count_trips(windows: Windows) -> dict[str, int]:
    """Trips per line key in ``windows`` (``meta``: ``line_key`` and the trip key columns)."""
    trips = trip_keys(windows.meta)
    return {
        str(k): int(v)
        for k, v in trips.groupby(windows.meta["line_key"].astype(str).to_numpy()).nunique().items()
    }


def split_last_trips(windows: Windows, share: float = HELD_SHARE) -> tuple[Windows, Windows]:
    """Split windows by trip: each line's last ``share`` of trips by start time held out.

    Args:
        windows: Windows with ``meta`` columns ``line_key``, ``vehicle_id``, ``trip_id``,
            ``service_date``, ``anchor_time``.
        share: Share of each line's trips held out (at least one; one always stays).

    Returns:
        ``(fit, held)``: windows of the earlier trips and of the held-out last trips.

    Raises:
        ValueError: a line with fewer than two trips (nothing to hold out).
    """
    meta = windows.meta
    trip = trip_keys(meta)
    starts = meta["anchor_time"].groupby([meta["line_key"].astype(str), trip]).min()
    held: set[str] = set()
    for line, per_line in starts.groupby(level=0):
        if len(per_line) < 2:
            raise ValueError(f"need at least 2 trips of line {line} to hold one out")
        n_held = min(len(per_line) - 1, max(1, round(share * len(per_line))))
        held |= set(per_line.sort_values().index.get_level_values(1)[-n_held:])
    is_held = trip.isin(held).to_numpy()
    return windows.subset(~is_held), windows.subset(is_held)


def compute_held_mae(task: Any, dm: TransitDataModule, split: str) -> float:
    """Mean over horizons of the median forecast's MAE (m) on ``dm.windows[split]``.

    The task's training mode is restored afterwards (this runs inside training).
    """
    was_training = task.training
    with torch.no_grad():
        pred = predict_windows(task, dm, split, calibrated=False)
    task.train(was_training)
    w = dm.windows[split]
    median = pred[..., len(task.quantiles) // 2]
    return float(np.nanmean(compute_mae(median, w.targets, w.target_mask)))


class HeldOutCurve(pl.Callback):
    """Held-out new-line MAE at step 0 and every ``every`` optimizer steps.

    Args:
        split: The DataModule split holding the held-out windows (their scalers are the
            base model's, like every split of the DataModule).
        every: Steps between scores.
    """

    def __init__(self, split: str, every: int) -> None:
        self.split, self.every = split, max(1, every)
        self.curve: list[tuple[int, float]] = []

    def _score(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        dm = trainer.datamodule  # type: ignore[attr-defined]
        self.curve.append((int(trainer.global_step), compute_held_mae(module, dm, self.split)))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Score the initialisation (step 0)."""
        self._score(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        """Score every ``every`` steps and at the last step."""
        step = int(trainer.global_step)
        if step % self.every == 0 or step >= int(trainer.max_steps):
            self._score(trainer, pl_module)


def choose_steps(curve: list[tuple[int, float]]) -> int:
    """The step count with the lowest held-out MAE (the earliest on ties; 0 = the init)."""
    if not curve:
        raise ValueError("no held-out scores to choose from")
    best = min(range(len(curve)), key=lambda i: (curve[i][1], curve[i][0]))
    return curve[best][0]


EARLY_STOPPING = ("auto", "on", "off")


def wants_early_stopping(mode: str, below_trips: int, trips: dict[str, int]) -> bool:
    """Whether an extension chooses its steps on held-out trips (see ``ExtensionConfig``).

    Args:
        mode: ``on``, ``off`` or ``auto`` (on when every new line has at least two trips
            and some new line fewer than ``below_trips``: :func:`is_few_trip`).
        below_trips: ``auto``'s threshold.
        trips: Trips per new line in the training windows (:func:`count_trips`).

    Raises:
        ValueError: an unknown mode, or ``on`` with a new line of a single trip.
    """
    if mode not in EARLY_STOPPING:
        raise ValueError(f"early_stopping must be one of {', '.join(EARLY_STOPPING)}, got {mode!r}")
    fewest = min(trips.values(), default=0)
    if mode == "on" and fewest < 2:
        raise ValueError(f"early stopping holds out a trip per new line; trips: {trips}")
    if mode != "auto":
        return mode == "on"
    if fewest < 2 and trips:
        logger.warning("early stopping off: a new line has a single trip (%s)", trips)
    return fewest >= 2 and is_few_trip(below_trips, trips)


def is_few_trip(below_trips: int, trips: dict[str, int]) -> bool:
    """Whether some new line has fewer than ``below_trips`` trips (``trips``: per line)."""
    return min(trips.values(), default=0) < below_trips


def held_out_windows(train: Windows, is_new: np.ndarray) -> tuple[Windows, Windows]:
    """``(fit, held)``: every old-line window plus the new lines' earlier trips, and the held.

    Args:
        train: The extension's training windows (old lines' too, for replay buffers).
        is_new: ``(N,)`` mask of the new lines' windows in ``train``.
    """
    fit_new, held = split_last_trips(train.subset(is_new))
    return concat_windows([train.subset(~is_new), fit_new]), held
