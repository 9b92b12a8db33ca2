"""``ForecastingTask``: the LightningModule around :class:`~transitnet.models.ForecastNet`.

The network's size depends on the data (lines in the vocabulary, feature widths), so
it is built in :meth:`configure_model` from the attached DataModule, or in
:meth:`on_load_checkpoint` from what the checkpoint recorded. The checkpoint records
the line keys of the embedding rows, so a checkpoint can later be grown by key.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from pytorch_lightning.trainer.states import TrainerFn
from torch import nn

from transitnet.datasets.batches import ForecastBatch
from transitnet.datasets.schedule import SCHEDULE_FEATURES, SCHEDULE_OFFSETS_S
from transitnet.datasets.windows import CONTEXT_FEATURES
from transitnet.models.embedding import dropout_ids
from transitnet.models.forecaster import ForecastNet
from transitnet.models.heads import fit_quantile_calibration
from transitnet.models.losses import pinball_loss
from transitnet.models.routed import RoutedForecastNet, fork_network
from transitnet.models.schedule_skip import ScheduleSkip
from transitnet.tasks.base import BaseTask

logger = logging.getLogger(__name__)

CKPT_KEY = "transitnet_forecaster"
#: Context features left out of the input when no training window has a schedule.
SCHEDULE_NAMES: list[str] = list(SCHEDULE_FEATURES)
#: State-dict key of the quantile calibration scales.
CALIBRATION_KEY = "net.calibration.scales"


def context_positions(names: list[str], n_context: int) -> list[int]:
    """Positions of context feature ``names`` in :data:`CONTEXT_FEATURES`.

    Raises:
        ValueError: an unknown name, or a network whose context is not ``CONTEXT_FEATURES``.
    """
    if not names:
        return []
    unknown = sorted(set(names) - set(CONTEXT_FEATURES))
    if unknown:
        raise ValueError(f"unknown context features {unknown}: see CONTEXT_FEATURES")
    if n_context != len(CONTEXT_FEATURES):
        raise ValueError(
            f"ignore_context names CONTEXT_FEATURES ({len(CONTEXT_FEATURES)}), but this "
            f"network has {n_context} context features"
        )
    return [CONTEXT_FEATURES.index(n) for n in names]


def check_context_width(n_context: int) -> None:
    """Refuse a checkpoint whose network was trained on another context feature set.

    Raises:
        ValueError: ``n_context`` differs from ``len(CONTEXT_FEATURES)`` (e.g. a
            checkpoint written before the schedule features were added).
    """
    if n_context != len(CONTEXT_FEATURES):
        raise ValueError(
            f"this checkpoint's network takes {n_context} context features, but this version "
            f"of transitnet builds {len(CONTEXT_FEATURES)} (CONTEXT_FEATURES changed, e.g. the "
            "schedule features were added): retrain the model with this version"
        )


def has_any_schedule(context: np.ndarray) -> bool:
    """Whether any row of an unscaled ``(N, len(CONTEXT_FEATURES))`` context has a schedule."""
    if context.shape[1] != len(CONTEXT_FEATURES) or not len(context):
        return False
    return bool((context[:, CONTEXT_FEATURES.index("has_schedule")] > 0.5).any())


def add_identity_calibration(checkpoint: dict[str, Any], n_horizons: int, n_quantiles: int) -> None:
    """Give a checkpoint written before calibration existed identity scales (in place)."""
    state = checkpoint.get("state_dict")
    if isinstance(state, dict) and CALIBRATION_KEY not in state:
        state[CALIBRATION_KEY] = torch.ones(n_horizons, n_quantiles)


class ForecastingTask(BaseTask):
    """Multi-horizon quantile forecasts of along-route distance travelled.

    Args:
        line_dim: Line embedding size.
        hidden_dim: Trunk width (and encoder width unless ``encoder_dim`` is given).
        encoder: ``gru`` (default), ``transformer`` or ``tcn``.
        num_layers: Encoder layers.
        dropout: Dropout in encoder and trunk.
        quantiles: Quantile levels; the middle one is the point forecast.
        line_dropout: Probability a training window's line becomes the unknown row.
        loss_scale_m: Metres per loss unit (keeps the pinball loss near 1).
        lr: AdamW learning rate for the network.
        weight_decay: AdamW weight decay.
        new_row_lr: Learning rate of new embedding rows (default: ``lr``).
        max_epochs_hint: Epochs the cosine schedule spans (the trainer may stop earlier).
        speed_scale_mps: Typical along-route speed; the head's raw outputs are scaled so
            that 0 means about this speed at every horizon.
        balance_horizons: Divide each horizon's pinball loss by its typical distance
            (horizon × ``speed_scale_mps``) instead of ``loss_scale_m``, so short
            horizons are not drowned by the long ones.
        trunk_layers: Hidden layers between the encoder/line/context features and the head.
        encoder_dim: Width of the trajectory encoder (default: ``hidden_dim``).
        ignore_context: Names of context features (see
            :data:`~transitnet.datasets.windows.CONTEXT_FEATURES`) the network never sees.
        calibrate: Refit the quantile calibration (split-conformal, per horizon and
            level) on the validation split at the end of every validation epoch during
            ``fit``; it is stored in the network's buffers, so each checkpoint carries the
            calibration of its own weights. The median is never changed.
        schedule_residual: Where a window has a schedule, feed the schedule's forecast
            (``schedule_delay``) at the configured horizons to the head as a skip
            connection, so the network predicts a correction to it
            (:mod:`transitnet.models.schedule_skip`). Only when some training window
            has a schedule; when none has, the schedule features are also left out of
            the network's input (it is then the network without them).
    """

    def __init__(
        self,
        line_dim: int = 16,
        hidden_dim: int = 64,
        encoder: str = "gru",
        num_layers: int = 1,
        dropout: float = 0.1,
        quantiles: list[float] | None = None,
        line_dropout: float = 0.05,
        loss_scale_m: float = 500.0,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        new_row_lr: float | None = None,
        max_epochs_hint: int = 20,
        speed_scale_mps: float = 4.0,
        balance_horizons: bool = False,
        trunk_layers: int = 1,
        encoder_dim: int | None = None,
        ignore_context: list[str] | None = None,
        calibrate: bool = True,
        schedule_residual: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.quantiles = tuple(quantiles or (0.1, 0.5, 0.9))
        self.net: ForecastNet | RoutedForecastNet | None = None
        self.line_keys: tuple[str, ...] = ()
        self.horizons_s: tuple[int, ...] = ()
        self.trainable: list[nn.Parameter] | None = None
        self.schedule_inputs, self.schedule_residual = True, False
        self._held_out: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    # -- building ------------------------------------------------------------------
    def build_net(
        self,
        line_keys: tuple[str, ...],
        n_features: int,
        n_context: int,
        horizons_s: tuple[int, ...],
        *,
        schedule_inputs: bool = True,
        schedule_residual: bool | None = None,
        context_scale: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Create the network for a vocabulary of ``line_keys`` (row order).

        Args:
            line_keys: Line key of each embedding row.
            n_features: Features per past fix.
            n_context: Context features (``len(CONTEXT_FEATURES)``).
            horizons_s: Forecast horizons (s).
            schedule_inputs: False leaves the schedule features out of the input.
            schedule_residual: Add the schedule skip connection (default: the
                ``schedule_residual`` setting, if ``schedule_inputs``).
            context_scale: The DataModule's context scaler, for the skip (else it comes
                with the checkpoint's weights).
        """
        hp: Any = self.hparams
        self.line_keys, self.horizons_s = tuple(line_keys), tuple(int(h) for h in horizons_s)
        if schedule_residual is None:
            full = n_context == len(CONTEXT_FEATURES)  # else a test net without the schedule
            wanted = bool(hp.get("schedule_residual", False))
            schedule_residual = wanted and schedule_inputs and full
        self.schedule_inputs, self.schedule_residual = schedule_inputs, schedule_residual
        self.net = ForecastNet(
            num_lines=len(line_keys),
            line_dim=hp.line_dim,
            n_features=n_features,
            horizons=[float(h) for h in horizons_s],
            quantiles=self.quantiles,
            encoder=hp.encoder,  # type: ignore[arg-type]
            hidden_dim=hp.hidden_dim,
            n_context=n_context,
            num_layers=hp.num_layers,
            dropout=hp.dropout,
            output_scale=1.0,
            speed_scale=hp.speed_scale_mps,
            trunk_layers=hp.get("trunk_layers", 1),
            encoder_dim=hp.get("encoder_dim"),
            ignore_context=context_positions(hp.get("ignore_context") or [], n_context),
            drop_context=[] if schedule_inputs else context_positions(SCHEDULE_NAMES, n_context),
            schedule_skip=self._build_skip(n_context, context_scale) if schedule_residual else None,
        )

    def _build_skip(
        self, n_context: int, scale: tuple[np.ndarray, np.ndarray] | None
    ) -> ScheduleSkip:
        ahead = [f"sched_ahead_{h}s_m" for h in SCHEDULE_OFFSETS_S]
        skip = ScheduleSkip(
            [float(h) for h in self.horizons_s],
            [float(h) for h in SCHEDULE_OFFSETS_S],
            context_positions(ahead, n_context),
            context_positions(["has_schedule"], n_context)[0],
        )
        if scale is not None:
            skip.set_scale(*scale)
        return skip

    def build_net_from_meta(self, meta: dict[str, Any], line_keys: tuple[str, ...]) -> None:
        """Create the network a checkpoint's ``meta`` (:data:`CKPT_KEY`) describes.

        Checkpoints written before the schedule skip existed had the schedule inputs
        and no skip. A ``fork`` extension's checkpoint (``routed_lines`` in ``meta``)
        gets a :class:`RoutedForecastNet`: base and fork, the routed lines to the fork.
        """
        self.build_net(
            line_keys,
            int(meta["n_features"]),
            int(meta["n_context"]),
            tuple(meta["horizons_s"]),
            schedule_inputs=bool(meta.get("schedule_inputs", True)),
            schedule_residual=bool(meta.get("schedule_residual", False)),
        )
        routed = list(meta.get("routed_lines") or [])
        if routed and isinstance(self.net, ForecastNet):
            missing = sorted(set(routed) - set(line_keys))
            if missing:
                raise ValueError(f"routed lines {missing} are not in the vocabulary")
            self.net = fork_network(self.net, [line_keys.index(k) for k in routed])

    def configure_model(self) -> None:
        """Build the network from the attached DataModule (after its setup).

        Without a trainer (``load_from_checkpoint``), :meth:`on_load_checkpoint` builds it;
        so it does when the trainer restores a checkpoint into a DataModule whose vocabulary
        is not fitted yet (``trainer.predict(task, dm, ckpt_path=…)`` on a predict period:
        the vocabulary comes from the checkpoint after this hook). Evaluation without
        either fails in :meth:`on_validation_start` / ``on_test_start`` / ``on_predict_start``.
        """
        if self.net is not None or self._trainer is None:
            return
        dm: Any = getattr(self.trainer, "datamodule", None)
        if dm is None:
            raise RuntimeError("ForecastingTask needs a TransitDataModule to size its network")
        if len(dm.vocab) <= 1 and "train" not in dm.windows:
            return  # no fitted vocabulary yet: on_load_checkpoint builds the network
        train = dm.windows.get("train")
        self.build_net(
            tuple(dm.vocab.keys),
            dm.n_features,
            dm.n_context,
            dm.horizons_s,
            schedule_inputs=train is None or has_any_schedule(train.context),
            context_scale=dm.context_scale,
        )

    def _require_net(self) -> None:
        if self.net is None:
            raise RuntimeError(
                "the network was never built: give a checkpoint (ckpt_path / --ckpt_path) "
                "or a training period to size it"
            )

    def on_validation_start(self) -> None:
        """Refuse to evaluate a network that was never built."""
        self._require_net()

    def on_test_start(self) -> None:
        """Refuse to test a network that was never built."""
        self._require_net()

    def on_predict_start(self) -> None:
        """Refuse to predict with a network that was never built."""
        self._require_net()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the row keys and shapes the weights belong to."""
        if self.net is None:
            raise RuntimeError("cannot checkpoint a task whose network was never built")
        checkpoint[CKPT_KEY] = {
            "line_keys": list(self.line_keys),
            "n_features": self.net.encoder.n_features,
            "n_context": self.net.n_context,
            "horizons_s": list(self.horizons_s),
            "schedule_inputs": self.schedule_inputs,
            "schedule_residual": self.schedule_residual,
        }
        if isinstance(self.net, RoutedForecastNet):
            rows = self.net.routed_rows()
            checkpoint[CKPT_KEY]["routed_lines"] = [self.line_keys[i] for i in rows]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Build the network at the checkpoint's size, or migrate the checkpoint by key.

        When this task already has a network for more lines (a grown vocabulary), the
        checkpoint's embedding rows are moved to this network's rows by line key: old
        lines keep their trained rows, new lines keep this network's initialised rows,
        and a checkpoint whose keys would be dropped or re-ordered is refused. The
        optimizer state is then deliberately reset (a warm start, not a resume: the
        parameter groups differ once new rows exist), with a warning.
        """
        meta = checkpoint.get(CKPT_KEY)
        if meta is None:
            raise ValueError("this checkpoint was not written by transitnet's ForecastingTask")
        check_context_width(int(meta["n_context"]))
        saved = tuple(meta["line_keys"])
        if not meta.get("routed_lines"):  # fork checkpoints postdate calibration
            add_identity_calibration(checkpoint, len(meta["horizons_s"]), len(self.quantiles))
        flags = (meta.get("schedule_inputs", True), meta.get("schedule_residual", False))
        routed = bool(meta.get("routed_lines")) != isinstance(self.net, RoutedForecastNet)
        if self.net is None or routed or flags != (self.schedule_inputs, self.schedule_residual):
            self.build_net_from_meta(meta, saved if self.net is None else self.line_keys)
        if self.net is None or saved == self.line_keys:
            return
        if saved == self.line_keys:
            return
        if meta.get("routed_lines") or isinstance(self.net, RoutedForecastNet):
            raise ValueError(
                "a fork checkpoint (base + fork) cannot be grown by key: extend the original "
                "base checkpoint with every new line so far (re-fork) instead"
            )
        self.net.line_embedding.migrate_state_dict(
            checkpoint["state_dict"], "net.line_embedding.", saved, self.line_keys
        )
        if checkpoint.get("optimizer_states"):
            logger.warning(
                "checkpoint has %d lines, this model %d: optimizer state reset (warm start)",
                len(saved),
                len(self.line_keys),
            )
            fresh = torch.optim.AdamW(self.parameter_groups())
            checkpoint["optimizer_states"] = [fresh.state_dict()]
            checkpoint["lr_schedulers"] = []

    # -- steps ---------------------------------------------------------------------
    def forward(
        self,
        batch: ForecastBatch,
        line_ids: torch.Tensor | None = None,
        *,
        calibrated: bool = True,
    ) -> torch.Tensor:
        """``(B, H, Q)`` forecasts of metres travelled.

        Args:
            batch: The windows.
            line_ids: Embedding rows to use instead of ``batch.line_ids``.
            calibrated: Apply the fitted quantile calibration (what predictions use);
                training fits the raw quantiles, so the loss never sees it.
        """
        if self.net is None:
            raise RuntimeError("the network is not built: attach a datamodule or load a checkpoint")
        ids = batch.line_ids if line_ids is None else line_ids
        out: torch.Tensor = self.net(
            batch.past, batch.lengths, ids, batch.context, calibrated=calibrated
        )
        return out

    def loss_scales(self) -> torch.Tensor:
        """``(H,)`` metres per loss unit of each horizon (see ``balance_horizons``)."""
        hp: Any = self.hparams
        h = torch.tensor(self.horizons_s, dtype=torch.float32, device=self.device)
        if hp.get("balance_horizons", False):
            return (h * float(hp.speed_scale_mps)).clamp_min(1.0)
        return torch.full_like(h, float(hp.loss_scale_m))

    def _loss(self, pred: torch.Tensor, batch: ForecastBatch) -> torch.Tensor:
        scale = self.loss_scales().view(1, -1)
        target = torch.where(batch.target_mask, batch.targets, 0.0)
        return pinball_loss(
            pred / scale.unsqueeze(-1), target / scale, batch.target_mask, self.quantiles
        )

    def training_step(self, batch: ForecastBatch, batch_idx: int) -> torch.Tensor:
        """Pinball loss of the raw (uncalibrated) quantiles, with line-id dropout.

        The calibration is refitted from the raw quantiles after training epochs; a loss
        on calibrated outputs would feed it back (the raw band shrinking as the scales
        grow).
        """
        ids = dropout_ids(batch.line_ids, float(self.hparams["line_dropout"]))
        loss = self._loss(self(batch, ids, calibrated=False), batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def _eval_step(self, batch: ForecastBatch, split: str) -> None:
        pred = self(batch)
        self.log(f"{split}_loss", self._loss(pred, batch), batch_size=len(batch), prog_bar=True)
        self.update_metrics(split, pred, batch)

    def _refits_calibration(self) -> bool:
        trainer = self._trainer
        return bool(
            self.hparams.get("calibrate", True)
            and len(self.quantiles) > 1
            and trainer is not None
            and trainer.state.fn == TrainerFn.FITTING
            and not trainer.sanity_checking
        )

    def validation_step(self, batch: ForecastBatch, batch_idx: int) -> None:
        """Loss and MAE per horizon on the validation split (raw forecasts kept for calibration)."""
        if not self._refits_calibration():
            self._eval_step(batch, "val")
            return
        if self.net is None:
            raise RuntimeError("the network is not built")
        raw = self(batch, calibrated=False)
        self.log("val_loss", self._loss(raw, batch), batch_size=len(batch), prog_bar=True)
        self._held_out.append((raw.detach(), batch.targets, batch.target_mask))

    def on_validation_epoch_end(self) -> None:
        """Refit the calibration on this epoch's raw validation forecasts, then log metrics."""
        if self._held_out and self.net is not None:
            raw, targets, mask = (torch.cat(parts) for parts in zip(*self._held_out, strict=True))
            self._held_out = []
            self.net.calibration.set_scales(
                fit_quantile_calibration(raw, targets, mask, self.quantiles)
            )
            self.update_forecast_metrics("val", self.net.calibration(raw), targets, mask)
        super().on_validation_epoch_end()

    def test_step(self, batch: ForecastBatch, batch_idx: int) -> None:
        """Loss and MAE per horizon on the test split."""
        self._eval_step(batch, "test")

    def predict_step(self, batch: ForecastBatch, batch_idx: int) -> dict[str, torch.Tensor]:
        """Quantile forecasts (calibrated ``pred`` and ``raw``) with their window positions.

        ``raw`` lets the prediction writer recalibrate the band online.
        """
        if self.net is None:
            raise RuntimeError("the network is not built")
        raw = self(batch, calibrated=False)
        return {"index": batch.index, "pred": self.net.calibration(raw), "raw": raw}

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups: network weights, and new embedding rows at ``new_row_lr``.

        When :attr:`trainable` is set (row-only or partial extension), only those
        parameters enter the optimizer; frozen ones are in no group at all. A fork
        (:class:`RoutedForecastNet`) trains its fork only: the base, which serves the old
        lines, is in no group.
        """
        if self.net is None:
            raise RuntimeError("the network is not built")
        hp: Any = self.hparams
        new_rows = {id(p) for p in self.net.line_embedding.new_parameters()}
        net = self.net.fork if isinstance(self.net, RoutedForecastNet) else self.net
        params = self.trainable if self.trainable is not None else list(net.parameters())
        base = [p for p in params if id(p) not in new_rows and p.requires_grad]
        new = [p for p in params if id(p) in new_rows and p.requires_grad and p.numel()]
        groups = [{"params": base, "lr": hp.lr, "weight_decay": hp.weight_decay}] if base else []
        if new:
            groups.append({"params": new, "lr": hp.new_row_lr or hp.lr, "weight_decay": 0.0})
        return groups
