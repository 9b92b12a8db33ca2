"""``LineExtensionTask``: warm-start a trained forecaster on new lines, by tier.

Tiers and what each guarantees:

- ``zero-shot``: the new rows are initialised and nothing trains. Old lines' outputs
  are bit-identical to the base model's.
- ``row-only``: only the new embedding rows are in the optimizer; every other weight
  (old rows included) is in no optimizer group, so AdamW's weight decay and momentum
  cannot move it. Old lines' outputs stay bit-identical: forgetting is exactly 0.
- ``partial``: the new rows plus the chosen later layers (``trunk``, ``head`` by
  default) train, at discriminative learning rates; the outputs for old lines on the
  new data are distilled towards the frozen base model, optionally with an L2 anchor
  to the base weights. Old-line windows in the training set (see
  ``ExtensionConfig.distill_per_line``) are distilled on with their own rows and never
  enter the forecast loss: only their inputs are used. Forgetting is measured, not
  guaranteed.
- ``replay``: ``partial`` plus a line-balanced buffer of old-line windows trained with
  the ordinary loss (and distilled on).

The learning rates decay to 0 along a cosine over the run's steps when ``lr_decay`` is
set (``max_steps`` of the trainer), else stay constant.
- ``naive``: everything trains on the new data with no protection (the lower bound for
  forgetting, for experiments only).
- ``fork``: a copy of the grown base network (the fork) fine-tunes on the new lines'
  windows (its new rows at ``new_row_lr``, the ``tune_layers`` at ``layer_lr``; default
  every layer), and the task serves through a
  :class:`~transitnet.models.routed.RoutedForecastNet`: windows of the new lines go to
  the fork, every other line to the untouched base. Old lines' outputs are bit-identical
  to the base model's: forgetting is exactly 0 by construction, at the price of two
  networks in memory and a second (partial) forward per batch. The checkpoint holds both
  networks and the routed line keys (``ForecastingTask.load_from_checkpoint`` rebuilds
  it). A later extension re-forks from the original base with every new line so far: a
  fork checkpoint is not grown further.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from transitnet.datasets.batches import ForecastBatch
from transitnet.models.forecaster import ForecastNet
from transitnet.models.routed import RoutedForecastNet, fork_network
from transitnet.tasks.forecasting import ForecastingTask

TIERS = ("zero-shot", "row-only", "partial", "replay", "naive", "fork")


class LineExtensionTask(ForecastingTask):
    """A :class:`ForecastingTask` trained under one extension tier.

    Args:
        tier: One of :data:`TIERS`.
        new_row_lr: Learning rate of the new embedding rows.
        layer_lr: Learning rate of fine-tuned layers (``partial``/``replay``/``naive``).
        tune_layers: Attribute names of ``ForecastNet`` submodules fine-tuned by
            ``partial`` and ``replay`` (default ``trunk``, ``head``) and by ``fork``
            (default every parameter outside the line embedding; ``[]``: its new rows
            only).
        distill_weight: Weight of the distillation loss towards the frozen base model.
        anchor_weight: Weight of the L2 anchor to the base weights of fine-tuned layers.
        lr_decay: Cosine decay of every learning rate to 0 over the trainer's ``max_steps``.
        **kwargs: Passed to :class:`ForecastingTask`.
    """

    def __init__(
        self,
        tier: str = "row-only",
        new_row_lr: float = 3e-2,
        layer_lr: float = 3e-4,
        tune_layers: list[str] | None = None,
        distill_weight: float = 1.0,
        anchor_weight: float = 0.0,
        lr_decay: bool = False,
        **kwargs: Any,
    ) -> None:
        if tier not in TIERS:
            raise ValueError(f"unknown tier {tier!r}: choose one of {', '.join(TIERS)}")
        super().__init__(new_row_lr=new_row_lr, **kwargs)
        self.save_hyperparameters()
        self.tier = tier
        self.base_net: nn.Module | None = None
        self.n_old_rows = 0

    def prepare_tier(self, n_old_rows: int) -> None:
        """Freeze per tier, after new rows were added; keep a frozen copy of the base.

        Args:
            n_old_rows: Rows the base model had (unknown row included).
        """
        if not isinstance(self.net, ForecastNet):
            raise RuntimeError("build or load the (unrouted) network before preparing a tier")
        self.n_old_rows = n_old_rows
        if self.tier == "fork":
            self._prepare_fork(self.net, n_old_rows)
            return
        base = copy.deepcopy(self.net).eval()
        for p in base.parameters():
            p.requires_grad_(False)
        object.__setattr__(self, "base_net", base)  # not a submodule: not saved, not trained
        new_rows = self.net.freeze_except_new_rows()
        tuned: list[nn.Parameter] = []
        if self.tier in ("partial", "replay"):
            for name in self.hparams.get("tune_layers") or ["trunk", "head"]:
                tuned += list(getattr(self.net, name).parameters())
        elif self.tier == "naive":
            tuned = [p for p in self.net.parameters() if all(p is not q for q in new_rows)]
        for p in tuned:
            p.requires_grad_(True)
        self.trainable = [*new_rows, *tuned]

    def _prepare_fork(self, net: ForecastNet, n_old_rows: int) -> None:
        """Route the new rows to a trainable copy of ``net``; freeze ``net`` (the base)."""
        for p in net.parameters():
            p.requires_grad_(False)
        routed = fork_network(net, range(n_old_rows, net.line_embedding.num_lines))
        new_rows = routed.fork.freeze_except_new_rows()
        names = self.hparams.get("tune_layers")
        if names is not None:  # [] tunes the fork's new rows only
            tuned = [p for name in names for p in getattr(routed.fork, name).parameters()]
        else:
            tuned = [
                p
                for name, p in routed.fork.named_parameters()
                if not name.startswith("line_embedding.")
            ]
        for p in tuned:
            p.requires_grad_(True)
        self.net, self.trainable = routed, [*new_rows, *tuned]

    def parameter_groups(self) -> list[dict[str, Any]]:
        """New rows at ``new_row_lr`` (no weight decay); tuned layers at ``layer_lr``."""
        if self.net is None or self.trainable is None:
            raise RuntimeError("call prepare_tier() before training")
        hp: Any = self.hparams
        new_ids = {id(p) for p in self.net.line_embedding.new_parameters()}
        new = [p for p in self.trainable if id(p) in new_ids and p.numel()]
        tuned = [p for p in self.trainable if id(p) not in new_ids]
        groups: list[dict[str, Any]] = [{"params": new, "lr": hp.new_row_lr, "weight_decay": 0.0}]
        if tuned:
            groups.append({"params": tuned, "lr": hp.layer_lr, "weight_decay": hp.weight_decay})
        return groups

    def configure_optimizers(self) -> Any:
        """AdamW over the tier's groups; cosine decay over ``max_steps`` with ``lr_decay``."""
        optimizer = torch.optim.AdamW(self.parameter_groups())
        steps = int(getattr(self._trainer, "max_steps", -1) or -1) if self._trainer else -1
        if not self.hparams.get("lr_decay") or steps <= 0:
            return optimizer
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def training_step(self, batch: ForecastBatch, batch_idx: int) -> torch.Tensor:
        """Forecast loss, plus distillation and anchoring for ``partial``/``replay``.

        Under ``partial`` only the new lines' windows (rows >= ``n_old_rows``) enter the
        forecast loss; old-line windows are there for distillation only. Under ``fork``
        only the fork runs (on the routed windows; the base is not needed to train it).
        """
        if isinstance(self.net, RoutedForecastNet):
            return self._fork_step(batch)
        if self.tier != "partial" or self.base_net is None:
            forecast_batch = batch
        else:
            is_new = batch.line_ids >= self.n_old_rows
            forecast_batch = replace(batch, target_mask=batch.target_mask & is_new[:, None])
        loss = super().training_step(forecast_batch, batch_idx)
        if self.tier in ("partial", "replay") and self.base_net is not None:
            loss = loss + self.hparams["distill_weight"] * self._distill(batch)
            if self.hparams["anchor_weight"]:
                loss = loss + self.hparams["anchor_weight"] * self._anchor()
        return loss

    def _fork_step(self, batch: ForecastBatch) -> torch.Tensor:
        """Pinball loss of the fork's raw forecasts on the batch's routed windows."""
        assert isinstance(self.net, RoutedForecastNet)
        routed = self.net.routed[batch.line_ids.view(-1)]
        pred = self.net.fork(
            batch.past, batch.lengths, batch.line_ids, batch.context, calibrated=False
        )
        loss = self._loss(pred, replace(batch, target_mask=batch.target_mask & routed[:, None]))
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def _distill(self, batch: ForecastBatch) -> torch.Tensor:
        """Match the frozen base model's outputs on this batch's inputs.

        Old-line windows are run on their own rows, new-line (and unknown) windows as if
        they came from random old lines.
        """
        random_ids = torch.randint(
            1, max(self.n_old_rows, 2), batch.line_ids.shape, device=batch.line_ids.device
        )
        is_new = (batch.line_ids >= self.n_old_rows) | (batch.line_ids == 0)
        old_ids = torch.where(is_new, random_ids, batch.line_ids)
        with torch.no_grad():
            teacher = self.base_net(batch.past, batch.lengths, old_ids, batch.context)  # type: ignore[misc]
        student = self(batch, old_ids)
        scale = float(self.hparams["loss_scale_m"])
        return torch.nn.functional.smooth_l1_loss(student / scale, teacher / scale)

    def _anchor(self) -> torch.Tensor:
        assert self.net is not None and self.base_net is not None
        total = torch.zeros((), device=self.device)
        base = dict(self.base_net.named_parameters())
        for name, p in self.net.named_parameters():
            if p.requires_grad and "line_embedding" not in name:
                total = total + (p - base[name]).pow(2).sum()
        return total
