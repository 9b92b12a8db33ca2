"""Typed batches and a dataset that serves whole batches by index (no per-sample collate)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch.utils.data import Dataset

from transitnet.datasets.windows import Windows


@dataclass
class ForecastBatch:
    """One batch of forecasting windows.

    Attributes:
        past: ``(B, K, F)`` float32 past-fix features (scaled), left-aligned.
        lengths: ``(B,)`` int64 valid fixes per window.
        context: ``(B, C)`` float32 context features (scaled).
        line_ids: ``(B,)`` int64 embedding rows (0 = unknown line).
        targets: ``(B, H)`` float32 metres travelled at each horizon.
        target_mask: ``(B, H)`` bool, True where the target is observed.
        index: ``(B,)`` int64 positions of the windows in their split (for writers).
    """

    past: torch.Tensor
    lengths: torch.Tensor
    context: torch.Tensor
    line_ids: torch.Tensor
    targets: torch.Tensor
    target_mask: torch.Tensor
    index: torch.Tensor

    def to(self, device: torch.device | str) -> ForecastBatch:
        """Move every tensor to ``device``."""
        return ForecastBatch(*(getattr(self, f.name).to(device) for f in fields(self)))

    def __len__(self) -> int:
        return int(self.lengths.shape[0])


class WindowDataset(Dataset[ForecastBatch]):
    """Windows as tensors; ``__getitems__`` returns a whole :class:`ForecastBatch`.

    Args:
        windows: The split's windows.
        line_ids: ``(N,)`` embedding rows, from the line vocabulary.
        past_scale: ``(mean, std)`` arrays of shape ``(F,)`` for the past features.
        context_scale: ``(mean, std)`` arrays of shape ``(C,)`` for the context.
    """

    def __init__(
        self,
        windows: Windows,
        line_ids: np.ndarray,
        past_scale: tuple[np.ndarray, np.ndarray],
        context_scale: tuple[np.ndarray, np.ndarray],
    ) -> None:
        valid = np.arange(windows.past.shape[1])[None, :] < windows.lengths[:, None]
        past = (windows.past - past_scale[0]) / past_scale[1]
        past[~valid] = 0.0
        self.past = torch.from_numpy(past.astype(np.float32))
        self.lengths = torch.from_numpy(windows.lengths.astype(np.int64))
        context = (windows.context - context_scale[0]) / context_scale[1]
        self.context = torch.from_numpy(context.astype(np.float32))
        self.line_ids = torch.from_numpy(np.asarray(line_ids, dtype=np.int64))
        self.targets = torch.from_numpy(windows.targets.astype(np.float32))
        self.target_mask = torch.from_numpy(windows.target_mask.astype(bool))

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def __getitem__(self, index: int) -> ForecastBatch:
        return self.__getitems__([index])

    def __getitems__(self, indices: Sequence[int]) -> ForecastBatch:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ForecastBatch(
            self.past[idx],
            self.lengths[idx],
            self.context[idx],
            self.line_ids[idx],
            self.targets[idx],
            self.target_mask[idx],
            idx,
        )


def collate_batch(batch: ForecastBatch) -> ForecastBatch:
    """Identity collate: :class:`WindowDataset` already returns whole batches."""
    return batch


def fit_scale(values: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature ``(mean, std)`` over the last axis, on valid rows only.

    A feature (nearly) constant in the training data (std < 1e-3, e.g. day of week when
    training on one day) is only centred (std 1): dividing by a tiny std would blow up
    the same feature on other days.

    Args:
        values: ``(..., F)`` features.
        valid: Boolean array of ``values.shape[:-1]``; None means all rows.
    """
    flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
    if valid is not None:
        flat = flat[valid.reshape(-1)]
    if len(flat) == 0:
        return np.zeros(values.shape[-1]), np.ones(values.shape[-1])
    mean = flat.mean(axis=0)
    std = flat.std(axis=0)
    std = np.where(std < 1e-3, 1.0, std)
    return mean, std
