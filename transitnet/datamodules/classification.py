"""``RouteClassDataModule``: stored positions → route-classification windows → batches.

It reads the positions store (``transitnet.store.parquet.read_positions``), cuts
labelled windows (:mod:`transitnet.datasets.class_windows`), splits them by time with
no leakage (periods as in :mod:`transitnet.datamodules.loading`), fits the city origin
and the feature scaler on the training split only, and keeps the name-keyed class
registry in its ``state_dict``, so a checkpoint carries classes, origin and scaler.

The registry is append-only: classes keep their rows when :meth:`add_classes` grows it.
Windows of lines outside the registry stay in :attr:`windows` (so new lines can be
found) but get label -1 and are left out of every dataset except ``predict``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from transitnet.datamodules.base import SplitDataModule
from transitnet.datamodules.loading import Period, check_order, parse_period
from transitnet.datasets.batches import fit_scale
from transitnet.datasets.class_batches import (
    ClassBatch,
    ClassWindowDataset,
    collate_class_batch,
    select_windows,
)
from transitnet.datasets.class_windows import (
    CLASS_FEATURES,
    POSITION_INPUTS,
    ClassWindowConfig,
    ClassWindows,
    build_class_windows,
    compute_origin,
)
from transitnet.store.parquet import read_positions

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "predict")
#: Features whose training std is below this are centred but not scaled.
MIN_STD = 1e-3


class RouteClassDataModule(SplitDataModule[ClassBatch]):
    """Which line is this vehicle on? Windows of fixes labelled by line key.

    Args:
        store: The store folder (``positions/feed=…/date=…/``).
        feed_ids: Feeds to read (default: every feed in the store).
        train_dates: Training period: service dates ``YYYY-MM-DD``, ranges ``start..end``,
            or one local-time range ``YYYY-MM-DDTHH:MM..YYYY-MM-DDTHH:MM``.
        val_dates: Validation period, same forms; must come after training.
        test_dates: Test period, same forms; must come after validation.
        predict_dates: Period to classify (unlabelled vehicles included).
        window_fixes: Most fixes per window (K). Longer windows separate lines better:
            Austin, 2-minute fixes, 17 lines (``benchmarks/exp_route_classifier.py --quick``):
            82 % test accuracy with K=8, 92 % with K=16.
        min_fixes: Fewest fixes per window.
        stride: Fixes between two windows of a trajectory.
        max_gap_s: A longer gap between fixes starts a new trajectory.
        timezone: Agency timezone, for service dates and time of day (default UTC).
        line_key_mode: ``route`` or ``route_direction``.
        classes: When set, exactly these line keys are the classes, in this order.
        exclude_classes: Line keys kept out of the classes (to add later).
        max_classes: Keep only the most frequent lines of the training split.
        min_windows_per_class: Lines with fewer training windows are not classes.
        batch_size: Windows per batch.
        num_workers: DataLoader worker processes.
        max_train_windows: Subsample the training windows to at most this many (seeded).
        seed: Seed for subsampling.
    """

    def __init__(
        self,
        store: str,
        feed_ids: list[str] | None = None,
        train_dates: list[str] | None = None,
        val_dates: list[str] | None = None,
        test_dates: list[str] | None = None,
        predict_dates: list[str] | None = None,
        window_fixes: int = 16,
        min_fixes: int = 4,
        stride: int = 4,
        max_gap_s: float = 600.0,
        timezone: str | None = None,
        line_key_mode: str = "route",
        classes: list[str] | None = None,
        exclude_classes: list[str] | None = None,
        max_classes: int | None = None,
        min_windows_per_class: int = 20,
        batch_size: int = 256,
        num_workers: int = 0,
        max_train_windows: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.store = Path(store)
        self.config = ClassWindowConfig(
            window_fixes=window_fixes,
            min_fixes=min_fixes,
            stride=stride,
            max_gap_s=max_gap_s,
            line_key_mode=line_key_mode,
            timezone=timezone or "UTC",
        )
        self.classes: list[str] = []
        self.origin: tuple[float, float] | None = None
        self.scale: tuple[np.ndarray, np.ndarray] | None = None
        self.windows: dict[str, ClassWindows] = {}

    @property
    def n_features(self) -> int:
        """Features per fix."""
        return len(CLASS_FEATURES)

    # -- loading -------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Load the windows of the stage's splits; fit origin, scaler and classes on train."""
        hp: Any = self.hparams
        specs = {
            "train": hp.train_dates,
            "val": hp.val_dates,
            "test": hp.test_dates,
            "predict": hp.predict_dates,
        }
        wanted = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("predict",),
        }.get(stage or "fit", SPLITS)
        # str(): YAML overrides read 2017-03-16 as a date.
        todo = {s: [str(d) for d in specs[s]] for s in wanted if specs[s] and s not in self.windows}
        if todo:
            self.windows.update(self._load(todo))
        if "train" in self.windows:
            self._fit_train_state(self.windows["train"])

    def _load(self, specs: dict[str, list[str]]) -> dict[str, ClassWindows]:
        tz = self.config.timezone
        periods = {name: parse_period(spec, tz) for name, spec in specs.items()}
        check_order({k: v for k, v in periods.items() if k != "predict"})
        utc_dates = sorted(set().union(*(p.utc_dates() for p in periods.values())))
        positions = read_positions(
            self.store, self.hparams["feed_ids"], utc_dates, columns=list(POSITION_INPUTS)
        )
        if positions.empty:
            raise ValueError(
                f"no positions in {self.store} for UTC dates {utc_dates} (feeds "
                f"{self.hparams['feed_ids'] or 'all'}); import or ingest them first"
            )
        if self.origin is None:
            train = _restrict(positions, periods.get("train"), tz)
            if train.empty:
                raise ValueError(
                    "the city origin is fitted on the training period: give train_dates, "
                    "or load the DataModule state from a checkpoint"
                )
            self.origin = compute_origin(train)
        windows = build_class_windows(positions, self.config, self.origin)
        out = {}
        for name, period in periods.items():
            out[name] = select_windows(windows, period.dates or None, period.start, period.end)
            logger.info(
                "%s: %d windows, %d lines",
                name,
                len(out[name]),
                out[name].meta["line_key"].nunique(),
            )
        return out

    def _fit_train_state(self, train: ClassWindows) -> None:
        if not self.classes:
            self.classes = self._choose_classes(train)
            logger.info("classes: %d lines from the training split", len(self.classes))
        if self.scale is None:
            labelled = train.subset(self.encode(train.labels) >= 0)
            if len(labelled) == 0:
                raise ValueError("no training windows belong to a class")
            valid = np.arange(labelled.features.shape[1])[None, :] < labelled.lengths[:, None]
            mean, std = fit_scale(labelled.features, valid)
            constant = std < MIN_STD
            if constant.any():
                # A feature constant in training (no bearings, one hour of the day) would
                # be divided by ~0 and explode on other data: centre it only.
                logger.info(
                    "features constant in training, not scaled: %s",
                    [CLASS_FEATURES[i] for i in np.flatnonzero(constant)],
                )
            self.scale = (mean, np.where(constant, 1.0, std))

    def _choose_classes(self, train: ClassWindows) -> list[str]:
        hp: Any = self.hparams
        counts = pd.Series(train.labels).dropna().value_counts()
        excluded = set(hp.exclude_classes or ())
        if hp.classes:
            absent = [c for c in hp.classes if counts.get(c, 0) == 0]
            if absent:
                raise ValueError(f"classes {absent} have no training windows")
            return [c for c in hp.classes if c not in excluded]
        eligible = counts[(counts >= hp.min_windows_per_class) & ~counts.index.isin(excluded)]
        rare = int(((counts < hp.min_windows_per_class) & ~counts.index.isin(excluded)).sum())
        if rare:
            logger.info(
                "%d lines have fewer than %d training windows: not classes",
                rare,
                hp.min_windows_per_class,
            )
        ranked = sorted(eligible.items(), key=lambda kv: (-kv[1], kv[0]))
        chosen = sorted(k for k, _ in ranked[: hp.max_classes or None])
        if not chosen:
            raise ValueError("no line has enough training windows to be a class")
        return chosen

    # -- classes -------------------------------------------------------------------
    def add_classes(self, names: Sequence[str]) -> None:
        """Append classes to the registry (existing classes keep their rows).

        Raises:
            ValueError: A name already registered, repeated or empty.
        """
        clash = set(names) & set(self.classes)
        if clash or len(set(names)) != len(names) or not all(names):
            raise ValueError(f"cannot add classes {list(names)}: duplicates or empty names")
        self.classes.extend(names)

    def encode(self, keys: Sequence[Any] | np.ndarray) -> np.ndarray:
        """Class rows ``(N,)`` for line keys; -1 for keys that are not classes."""
        rows = {name: i for i, name in enumerate(self.classes)}
        return np.asarray([rows.get(k, -1) for k in keys], dtype=np.int64)

    def dataset(self, split: str) -> ClassWindowDataset:
        """The split's windows of known classes (all windows for ``predict``)."""
        if split not in self.windows:
            raise RuntimeError(f"no {split!r} windows: give the {split} dates and call setup()")
        if self.scale is None or not self.classes:
            raise RuntimeError("classes and scaler are not fitted: set up the training split")
        windows = self.windows[split]
        labels = self.encode(windows.labels)
        if split != "predict":
            windows, labels = windows.subset(labels >= 0), labels[labels >= 0]
        cap = self.hparams["max_train_windows"]
        if split == "train" and cap and len(windows) > cap:
            rng = np.random.default_rng(self.hparams["seed"])
            keep = np.sort(rng.choice(len(windows), cap, replace=False))
            windows, labels = windows.subset(keep), labels[keep]
        return ClassWindowDataset(windows, labels, self.scale)

    def collate(self, items: ClassBatch) -> ClassBatch:
        """Identity: :class:`ClassWindowDataset` returns whole batches."""
        return collate_class_batch(items)

    # -- checkpoint state ----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Class registry, origin and scaler, saved into the checkpoint by Lightning."""
        state: dict[str, Any] = {"classes": list(self.classes), "features": list(CLASS_FEATURES)}
        if self.origin is not None:
            state["origin"] = list(self.origin)
        if self.scale is not None:
            state["scale"] = [a.tolist() for a in self.scale]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore registry, origin and scaler.

        Raises:
            ValueError: The checkpoint was made with other features.
        """
        if list(state_dict.get("features", [])) != list(CLASS_FEATURES):
            raise ValueError(
                f"checkpoint features {state_dict.get('features')} differ from "
                f"this version's {list(CLASS_FEATURES)}"
            )
        self.classes = [str(c) for c in state_dict["classes"]]
        if "origin" in state_dict:
            lat, lon = state_dict["origin"]
            self.origin = (float(lat), float(lon))
        if "scale" in state_dict:
            mean, std = (np.asarray(a, dtype=np.float64) for a in state_dict["scale"])
            self.scale = (mean, std)


def _restrict(positions: pd.DataFrame, period: Period | None, tz: str) -> pd.DataFrame:
    """Rows of ``positions`` inside ``period`` (by local date or UTC time range)."""
    if period is None:
        return positions.iloc[:0]
    ts = positions["vehicle_timestamp"]
    if period.start is not None and period.end is not None:
        keep = (ts >= period.start) & (ts < period.end)
    else:
        keep = ts.dt.tz_convert(tz).dt.strftime("%Y-%m-%d").isin(list(period.dates))
    out: pd.DataFrame = positions.loc[keep]
    return out


def load_class_datamodule(ckpt: dict[str, Any], **overrides: Any) -> RouteClassDataModule:
    """Rebuild a checkpoint's DataModule with ``overrides`` and restore its state.

    Every override given is applied, ``None`` included (to clear a period). Entries
    LightningCLI adds (``_class_path``, ``_instantiator``) are ignored.

    Raises:
        ValueError: No RouteClassDataModule state in the checkpoint, or unknown arguments.
    """
    state = ckpt.get(RouteClassDataModule.__qualname__)
    if state is None:
        raise ValueError("the checkpoint holds no RouteClassDataModule state (classes, scaler)")
    hparams = dict(ckpt.get("datamodule_hyper_parameters", {}))
    hparams.update(overrides)
    accepted = set(inspect.signature(RouteClassDataModule.__init__).parameters) - {"self"}
    unknown = sorted(k for k in hparams if k not in accepted and not k.startswith("_"))
    if unknown:
        raise ValueError(f"unknown DataModule arguments {unknown}")
    dm = RouteClassDataModule(**{k: v for k, v in hparams.items() if k in accepted})
    dm.load_state_dict(state)
    return dm
