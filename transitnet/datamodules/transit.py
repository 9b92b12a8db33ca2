"""``TransitDataModule``: matched trajectories → forecasting windows → batches.

It reads the positions store (and static artefacts), places positions on their shapes
(reusing ``DIR/matched/`` when it is there), cuts windows, splits them by time with no
leakage, fits scalers on the training split only, and keeps the line vocabulary in its
``state_dict`` so a checkpoint carries both.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from transitnet.datamodules.base import SplitDataModule
from transitnet.datamodules.loading import load_windows, resolve_timetable
from transitnet.datasets.batches import ForecastBatch, WindowDataset, collate_batch, fit_scale
from transitnet.datasets.vocab import LineVocabulary
from transitnet.datasets.windows import CONTEXT_FEATURES, PAST_FEATURES, WindowConfig, Windows

logger = logging.getLogger(__name__)

STAGES = ("train", "val", "test", "predict")


class TransitDataModule(SplitDataModule[ForecastBatch]):
    """Forecasting windows from a transitnet store.

    Args:
        store: The store folder (``positions/``, optionally ``matched/``).
        static: Static GTFS (zip, folder or URL) used to match positions to shapes.
        feed_ids: Feeds to read (default: every feed in the store).
        train_dates: Training period: service dates ``YYYY-MM-DD``, ranges
            ``start..end``, or local-time ranges ``YYYY-MM-DDTHH:MM..YYYY-MM-DDTHH:MM``.
        val_dates: Validation period, same forms; must come after training.
        test_dates: Test period, same forms; must come after validation.
        predict_dates: Period to write predictions for (default: the test period).
        horizons_s: Forecast horizons in seconds.
        past_fixes: Fixes per window fed to the encoder (K).
        timezone: Agency timezone for service dates and time-of-day (default: the
            static feed's agency timezone, else UTC).
        line_key_mode: ``route`` or ``route_direction`` (see ``transitnet.gtfs.lines``).
        exclude_lines: Line keys left out of training (to add later as new lines).
        include_lines: When set, only these line keys are used (all splits).
        batch_size: Windows per batch.
        num_workers: DataLoader worker processes (0 = in the main process).
        max_train_windows: Subsample training windows to at most this many (seeded).
        seed: Seed for subsampling.
        timetable: A timetable file (Parquet of stop_times keyed by the realtime trip
            id, with each trip's ``shape_id``; see ``transitnet timetable`` and
            :func:`~transitnet.gtfs.timetable.write_timetable`) for the schedule context
            features; None uses the static feed's stop_times. The timetable is public
            and fixed in advance, so using it on test windows is no leakage. Saved in
            the checkpoint's hyperparameters, so evaluation and prediction rebuild it.
    """

    def __init__(
        self,
        store: str,
        static: str | None = None,
        feed_ids: list[str] | None = None,
        train_dates: list[str] | None = None,
        val_dates: list[str] | None = None,
        test_dates: list[str] | None = None,
        predict_dates: list[str] | None = None,
        horizons_s: list[int] | None = None,
        past_fixes: int = 8,
        timezone: str | None = None,
        line_key_mode: str = "route",
        exclude_lines: list[str] | None = None,
        include_lines: list[str] | None = None,
        batch_size: int = 512,
        num_workers: int = 0,
        max_train_windows: int | None = None,
        seed: int = 0,
        timetable: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.store = Path(store)
        self.static = static
        self.window_config = WindowConfig(
            past_fixes=past_fixes, horizons_s=tuple(horizons_s or (60, 120, 300, 600, 900))
        )
        self.vocab = LineVocabulary()
        self.past_scale: tuple[np.ndarray, np.ndarray] | None = None
        self.context_scale: tuple[np.ndarray, np.ndarray] | None = None
        self.windows: dict[str, Windows] = {}

    @property
    def horizons_s(self) -> tuple[int, ...]:
        """The forecast horizons in seconds."""
        return tuple(self.window_config.horizons_s)

    @property
    def n_features(self) -> int:
        """Features per past fix."""
        return len(PAST_FEATURES)

    @property
    def n_context(self) -> int:
        """Context features per window."""
        return len(CONTEXT_FEATURES)

    def setup(self, stage: str | None = None) -> None:
        """Load windows for the stage's splits; fit scalers and vocabulary on training data."""
        hp: Any = self.hparams
        periods = {
            "train": hp.train_dates,
            "val": hp.val_dates,
            "test": hp.test_dates,
            "predict": hp.predict_dates or hp.test_dates,
        }
        wanted = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("predict",),
        }.get(stage or "fit", STAGES)
        if stage in (None, "fit"):
            wanted = ("train", "val")
        todo = {s: periods[s] for s in wanted if periods[s] and s not in self.windows}
        if todo:
            self.windows.update(
                load_windows(
                    self.store,
                    self.static,
                    todo,
                    self.window_config,
                    feed_ids=hp.feed_ids,
                    timezone=hp.timezone,
                    line_key_mode=hp.line_key_mode,
                    include_lines=hp.include_lines,
                    exclude_lines=hp.exclude_lines,
                    timetable=resolve_timetable(self.store, self.static, hp.timetable),
                )
            )
        if "train" in self.windows:
            self._fit_train_state(self.windows["train"])

    def _fit_train_state(self, train: Windows) -> None:
        hp: Any = self.hparams
        keep = np.asarray(train.target_mask.any(axis=1), dtype=bool)
        if hp.max_train_windows and keep.sum() > hp.max_train_windows:
            rng = np.random.default_rng(hp.seed)
            chosen = rng.choice(np.flatnonzero(keep), hp.max_train_windows, replace=False)
            keep = np.zeros(len(keep), dtype=bool)
            keep[chosen] = True
        self.windows["train"] = train = train.subset(keep)
        if self.past_scale is None:
            valid = np.arange(train.past.shape[1])[None, :] < train.lengths[:, None]
            self.past_scale = fit_scale(train.past, valid)
            self.context_scale = fit_scale(train.context)
        if len(self.vocab) == 1:
            keys = sorted(set(train.meta["line_key"].dropna().astype(str)))
            self.vocab.add(keys)
            logger.info("line vocabulary: %d lines from the training split", len(keys))

    def dataset(self, split: str) -> WindowDataset:
        """The split's windows as a :class:`WindowDataset` (line ids from the vocabulary)."""
        if split not in self.windows:
            raise RuntimeError(f"no {split!r} windows: give the {split} dates and call setup()")
        if self.past_scale is None or self.context_scale is None:
            raise RuntimeError("scalers are not fitted: set up the training split first")
        windows = self.windows[split]
        line_ids = self.vocab.encode(windows.meta["line_key"].tolist())
        return WindowDataset(windows, line_ids, self.past_scale, self.context_scale)

    def with_windows(
        self, windows: Mapping[str, Windows], *, keep_state: bool = True
    ) -> TransitDataModule:
        """A DataModule with this one's arguments holding ``windows`` (no store reads).

        Periods of splits missing from ``windows`` are cleared, so ``setup`` never reads
        the store for them.

        Args:
            windows: Split name → windows for the copy.
            keep_state: Copy the vocabulary and scalers (the copy's vocabulary is its own:
                growing it leaves this one's untouched); otherwise ``setup`` fits them on
                the copy's ``train`` windows.
        """
        hp = {k: v for k, v in dict(self.hparams).items() if k != "_class_path"}
        hp |= {f"{split}_dates": None for split in ("train", "val", "test") if split not in windows}
        hp["predict_dates"] = None
        out = TransitDataModule(**hp)
        out.windows = dict(windows)
        if keep_state:
            out.vocab = LineVocabulary.from_state_dict(self.vocab.state_dict())
            out.past_scale, out.context_scale = self.past_scale, self.context_scale
        return out

    def collate(self, items: ForecastBatch) -> ForecastBatch:
        """Identity: :class:`WindowDataset` returns whole batches."""
        return collate_batch(items)

    def state_dict(self) -> dict[str, Any]:
        """Vocabulary and scalers, saved into the checkpoint by Lightning."""
        state: dict[str, Any] = {"vocab": self.vocab.state_dict()}
        if self.past_scale is not None and self.context_scale is not None:
            state["past_scale"] = [a.tolist() for a in self.past_scale]
            state["context_scale"] = [a.tolist() for a in self.context_scale]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore vocabulary and scalers from a checkpoint.

        Raises:
            ValueError: The saved context scaler is for another number of context
                features (a checkpoint from before :data:`CONTEXT_FEATURES` changed).
        """
        scale = state_dict.get("context_scale")
        if scale is not None and len(scale[0]) != self.n_context:
            raise ValueError(
                f"this checkpoint's DataModule scaled {len(scale[0])} context features, but this "
                f"version builds {self.n_context} (CONTEXT_FEATURES changed, e.g. the schedule "
                "features were added): retrain the model with this version"
            )
        self.vocab = LineVocabulary.from_state_dict(state_dict["vocab"])
        if "past_scale" in state_dict:
            self.past_scale = tuple(np.asarray(a) for a in state_dict["past_scale"])  # type: ignore[assignment]
            self.context_scale = tuple(np.asarray(a) for a in state_dict["context_scale"])  # type: ignore[assignment]
