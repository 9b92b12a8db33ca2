"""``SplitDataModule``: the dataloader plumbing the package's DataModules share.

A subclass builds one dataset per split (``train``, ``val``, ``test``, ``predict``) in
:meth:`SplitDataModule.dataset` and names its collate function; this class turns those
into Lightning's four dataloaders: training shuffled, the others in time order (so
predictions line up with the split's windows), none for validation without a period.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

BatchT = TypeVar("BatchT")


class SplitDataModule(pl.LightningDataModule, Generic[BatchT]):
    """Dataloaders over per-split datasets.

    Subclasses save ``batch_size``, ``num_workers`` and ``val_dates`` as hyperparameters
    and implement :meth:`dataset` and :meth:`collate`.
    """

    def dataset(self, split: str) -> Dataset[Any]:
        """The split's dataset."""
        raise NotImplementedError

    def collate(self, items: Any) -> BatchT:
        """Stack dataset items (or a ``__getitems__`` batch) into one batch."""
        raise NotImplementedError

    def _loader(self, split: str, shuffle: bool) -> DataLoader[BatchT]:
        hp: Any = self.hparams
        collate: Callable[[Any], BatchT] = self.collate
        return DataLoader(
            self.dataset(split),
            batch_size=hp.batch_size,
            shuffle=shuffle,
            collate_fn=collate,
            num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader[BatchT]:
        """Shuffled training batches."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader[BatchT] | list[DataLoader[BatchT]]:
        """Validation batches in time order (none without a validation period)."""
        if not self.hparams.get("val_dates"):
            return []
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader[BatchT]:
        """Test batches in time order."""
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader[BatchT]:
        """Prediction batches in time order."""
        return self._loader("predict", shuffle=False)
