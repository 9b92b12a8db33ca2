"""Per-class window and hit counts of a classification task, logged as accuracies."""

from __future__ import annotations

import pytorch_lightning as pl
import torch


class ClassCountsMixin(pl.LightningModule):
    """``{split}_acc`` and ``{split}_bacc`` (mean per-class recall), and the prototype ones.

    The evaluation steps call :meth:`update_counts` per batch; the epoch ends log them.
    """

    def __init__(self) -> None:
        super().__init__()
        self._counts: dict[str, dict[str, torch.Tensor]] = {}

    def update_counts(
        self, split: str, logits: torch.Tensor, labels: torch.Tensor, prefix: str
    ) -> None:
        """Accumulate per-class window and hit counts (labels -1 are skipped)."""
        n_classes = logits.shape[1]
        known = labels >= 0
        hits = (logits.argmax(dim=1) == labels) & known
        sums = self._counts.setdefault(split, {})
        for name, rows in ((prefix + "n", labels[known]), (prefix + "hit", labels[hits])):
            counts = torch.bincount(rows, minlength=n_classes).double()
            sums[name] = sums.get(name, torch.zeros_like(counts)) + counts

    def log_counts(self, split: str) -> None:
        """Log ``{split}_acc``, ``_bacc`` (mean per-class recall) and the prototype ones."""
        sums = self._counts.pop(split, {})
        for prefix in ("", "proto_"):
            if prefix + "n" not in sums:
                continue
            n, hit = sums[prefix + "n"], sums[prefix + "hit"]
            seen = n > 0
            acc = hit.sum() / n.sum().clamp(min=1)
            bacc = (hit[seen] / n[seen]).mean() if bool(seen.any()) else acc * 0
            self.log(f"{split}_{prefix}acc", acc.float(), prog_bar=not prefix, sync_dist=True)
            self.log(f"{split}_{prefix}bacc", bacc.float(), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        """Log the validation metrics of the epoch."""
        self.log_counts("val")

    def on_test_epoch_end(self) -> None:
        """Log the test metrics."""
        self.log_counts("test")
