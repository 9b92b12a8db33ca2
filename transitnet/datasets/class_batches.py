"""Selecting and sampling classification windows, and typed batches of them.

:func:`select_windows` cuts a period out of windows with no window straddling its
bounds; :func:`sample_trajectories` draws the few example trajectories of a new class,
:func:`sample_per_class` a class-balanced replay buffer and :func:`split_holdout` a
held-out set. :class:`ClassWindowDataset` serves whole :class:`ClassBatch` es by index
(no per-sample collate), like :class:`transitnet.datasets.batches.WindowDataset`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from transitnet.datasets.class_windows import ClassWindows


def select_windows(
    windows: ClassWindows,
    dates: Sequence[str] | None = None,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> ClassWindows:
    """Windows of one period: service ``dates``, or every fix within ``[start, end)`` (UTC)."""
    meta = windows.meta
    keep = np.ones(len(windows), dtype=bool)
    if dates:
        keep &= meta["service_date"].isin(list(dates)).to_numpy()
    if start is not None:
        keep &= (meta["start_time"] >= start).to_numpy()
    if end is not None:
        keep &= (meta["anchor_time"] < end).to_numpy()
    return windows.subset(keep)


def concat_class_windows(parts: Sequence[ClassWindows]) -> ClassWindows:
    """Concatenate windows cut with the same window length."""
    if not parts:
        raise ValueError("nothing to concatenate")
    if len({p.features.shape[1:] for p in parts}) != 1:
        raise ValueError("windows of different shapes cannot be concatenated")
    return ClassWindows(
        np.concatenate([p.features for p in parts]),
        np.concatenate([p.lengths for p in parts]),
        pd.concat([p.meta for p in parts], ignore_index=True),
        dict(parts[0].dropped),
    )


def split_holdout(
    windows: ClassWindows, per_class: int, seed: int, fraction: float
) -> tuple[ClassWindows, ClassWindows]:
    """Split off (seeded) at most ``per_class`` and ``fraction`` of each class's windows.

    Returns:
        The remaining windows and the held-out ones.
    """
    rng = np.random.default_rng(seed)
    keys, held = windows.labels, np.zeros(len(windows), dtype=bool)
    for name in sorted({k for k in keys if k is not None}):
        idx = np.flatnonzero(keys == name)
        take = min(per_class, int(len(idx) * fraction))
        held[rng.choice(idx, take, replace=False)] = True
    return windows.subset(~held), windows.subset(held)


def sample_trajectories(
    windows: ClassWindows, classes: Sequence[str], n: int, seed: int = 0
) -> ClassWindows:
    """All windows of ``n`` randomly chosen trajectories of each class (seeded).

    Raises:
        ValueError: ``n < 1``, or a class with no trajectory at all.
    """
    if n < 1:
        raise ValueError(f"need at least one example trajectory per class, got n={n}")
    rng = np.random.default_rng(seed)
    keys, traj = windows.labels, windows.meta["trajectory"].to_numpy()
    chosen: list[np.ndarray] = []
    for name in classes:
        have = np.unique(traj[keys == name])
        if not len(have):
            raise ValueError(f"class {name!r} has no trajectory in these windows")
        chosen.append(rng.choice(have, min(n, len(have)), replace=False))
    picked = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    in_classes = np.isin(keys.astype(str), list(classes))
    return windows.subset(np.isin(traj, picked) & in_classes)


def sample_per_class(
    windows: ClassWindows, per_class: int, seed: int = 0, classes: Sequence[str] | None = None
) -> ClassWindows:
    """At most ``per_class`` windows of each class (default: every labelled class), seeded."""
    rng = np.random.default_rng(seed)
    keys = windows.labels
    names = sorted({k for k in keys if k is not None}) if classes is None else list(classes)
    chosen = [
        rng.choice(idx, min(per_class, len(idx)), replace=False)
        for idx in (np.flatnonzero(keys == name) for name in names)
        if len(idx)
    ]
    return windows.subset(np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64))


@dataclass
class ClassBatch:
    """One batch of classification windows.

    Attributes:
        features: ``(B, K, F)`` float32 scaled features, left-aligned, padding 0.
        lengths: ``(B,)`` int64 valid fixes per window.
        labels: ``(B,)`` int64 class rows (-1: not a class of the model).
        index: ``(B,)`` int64 positions of the windows in their split.
    """

    features: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor

    def to(self, device: torch.device | str) -> ClassBatch:
        """Move every tensor to ``device``."""
        return ClassBatch(*(getattr(self, f.name).to(device) for f in fields(self)))

    def __len__(self) -> int:
        return int(self.lengths.shape[0])


class ClassWindowDataset(Dataset[ClassBatch]):
    """Windows as tensors; ``__getitems__`` returns a whole :class:`ClassBatch`.

    Args:
        windows: The windows.
        labels: ``(N,)`` class rows (-1 for none).
        scale: ``(mean, std)`` arrays ``(F,)`` applied to valid steps.
    """

    def __init__(
        self, windows: ClassWindows, labels: np.ndarray, scale: tuple[np.ndarray, np.ndarray]
    ) -> None:
        valid = np.arange(windows.features.shape[1])[None, :] < windows.lengths[:, None]
        scaled = (windows.features - scale[0]) / scale[1]
        scaled[~valid] = 0.0
        self.features = torch.from_numpy(scaled.astype(np.float32))
        self.lengths = torch.from_numpy(windows.lengths.astype(np.int64))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def __getitem__(self, index: int) -> ClassBatch:
        return self.__getitems__([index])

    def __getitems__(self, indices: Sequence[int]) -> ClassBatch:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ClassBatch(self.features[idx], self.lengths[idx], self.labels[idx], idx)


def collate_class_batch(batch: ClassBatch) -> ClassBatch:
    """Identity collate: :class:`ClassWindowDataset` already returns whole batches."""
    return batch
