"""Shared LightningModule plumbing: optimizers, schedules and per-split metrics.

Metrics are kept per split with ``train_``/``val_``/``test_`` prefixes (torchgeo style)
and accumulated as sums, so an epoch's MAE is exact, not a mean of batch means.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from transitnet.datasets.batches import ForecastBatch


class BaseTask(pl.LightningModule):
    """Optimizer set-up and masked forecast metrics for transitnet tasks."""

    horizons_s: tuple[int, ...]
    quantiles: tuple[float, ...]

    def __init__(self) -> None:
        super().__init__()
        self._sums: dict[str, dict[str, torch.Tensor]] = {}

    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW parameter groups; subclasses decide what trains."""
        raise NotImplementedError

    def configure_optimizers(self) -> Any:
        """AdamW over :meth:`parameter_groups` with a cosine decay over the epochs."""
        optimizer = torch.optim.AdamW(self.parameter_groups())
        epochs = max(int(self.hparams.get("max_epochs_hint", 20)), 1)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler}}

    def update_metrics(self, split: str, pred: torch.Tensor, batch: ForecastBatch) -> None:
        """Accumulate |error| of the median and P10–P90 coverage per horizon."""
        self.update_forecast_metrics(split, pred, batch.targets, batch.target_mask)

    def update_forecast_metrics(
        self, split: str, pred: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
    ) -> None:
        """As :meth:`update_metrics`, from ``(B, H, Q)`` forecasts and ``(B, H)`` targets/mask."""
        mid = pred[..., len(self.quantiles) // 2]
        err = torch.where(mask, (mid - targets).abs(), 0.0).sum(0).detach()
        inside = (targets >= pred[..., 0]) & (targets <= pred[..., -1]) & mask
        sums = self._sums.setdefault(split, {})
        for name, value in (("abs", err), ("n", mask.sum(0)), ("inside", inside.sum(0))):
            sums[name] = sums.get(name, torch.zeros_like(value, dtype=torch.float64)) + value

    def _log_metrics(self, split: str) -> None:
        sums = self._sums.pop(split, None)
        if not sums:
            return
        n = sums["n"].clamp(min=1)
        mae, cover = sums["abs"] / n, sums["inside"] / n
        for j, h in enumerate(self.horizons_s):
            self.log(f"{split}_mae_{h}s", mae[j].float(), sync_dist=True)
            self.log(f"{split}_coverage_{h}s", cover[j].float(), sync_dist=True)
        self.log(f"{split}_mae", mae.mean().float(), prog_bar=True, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        """Log the validation metrics of the epoch."""
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        """Log the test metrics."""
        self._log_metrics("test")
