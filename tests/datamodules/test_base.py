"""SplitDataModule: shuffled training, time-ordered other splits, no validation without a period."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from transitnet.datamodules.base import SplitDataModule


class Numbers(SplitDataModule[torch.Tensor]):
    """Each split is the numbers 0..n-1, batched by stacking."""

    def __init__(self, n: int = 50, val_dates: list[str] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.hparams.update(batch_size=8, num_workers=0)

    def dataset(self, split: str) -> Dataset[Any]:
        return TensorDataset(torch.arange(self.hparams["n"]))

    def collate(self, items: Any) -> torch.Tensor:
        return torch.stack([item[0] for item in items])


def test_training_is_shuffled_and_the_other_splits_keep_their_order() -> None:
    torch.manual_seed(0)
    dm = Numbers(val_dates=["2024-01-02"])
    train = torch.cat(list(dm.train_dataloader()))
    assert sorted(train.tolist()) == list(range(50)) and train.tolist() != list(range(50))
    for loader in (dm.val_dataloader(), dm.test_dataloader(), dm.predict_dataloader()):
        assert torch.cat(list(loader)).tolist() == list(range(50))  # type: ignore[arg-type]


def test_no_validation_period_means_no_validation_loader() -> None:
    assert Numbers().val_dataloader() == []
