"""``ClassificationTask``: which line is this vehicle on, from a short window of fixes.

The network is the shared :class:`~transitnet.models.encoder.TrajectoryEncoder`
followed by an :class:`~transitnet.models.classifier.ExtensibleClassifier` (linear or
cosine) and a :class:`~transitnet.models.prototype.PrototypeHead` (cosine nearest class
mean over the same features, refitted from the training split at every validation, so
it never needs training of its own). ``predict_with`` chooses which head answers.

Its size depends on the data (classes, features), so it is built in
:meth:`configure_model` from the attached DataModule, or in :meth:`on_load_checkpoint`
from what the checkpoint recorded. The checkpoint records the class names; loading a
checkpoint with fewer classes into a grown head moves rows by name.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from pytorch_lightning.trainer.states import TrainerFn
from torch import nn

from transitnet.datasets.class_batches import ClassBatch, ClassWindowDataset
from transitnet.datasets.class_windows import CLASS_FEATURES
from transitnet.models.claim_gate import apply_gate, confidence_quantiles
from transitnet.models.classifier import MASKED_LOGIT, ExtensibleClassifier
from transitnet.models.descriptor import WindowDescriptor
from transitnet.models.encoder import TrajectoryEncoder
from transitnet.models.feature_mixture import fit_feature_mixture
from transitnet.models.place_targets import PlaceTargets
from transitnet.models.prototype import PrototypeHead, compute_covariance_factor
from transitnet.tasks.base import BaseTask
from transitnet.tasks.class_counts import ClassCountsMixin

logger = logging.getLogger(__name__)

CKPT_KEY = "transitnet_classifier"
HEADS = ("linear", "cosine")
NECKS = ("batchnorm", "none")
ANSWERS = ("classifier", "prototype")
#: Windows encoded per forward pass outside training.
CHUNK = 4096


class ClassificationTask(ClassCountsMixin, BaseTask):
    """Route classification on a shared trajectory encoder with a growable head.

    Args:
        hidden_dim: Encoder output (feature) size.
        encoder: ``gru`` (default), ``transformer`` or ``tcn``.
        neck: ``batchnorm`` (centre and whiten the features with running training
            statistics, no affine part) or ``none``. Centred features are what make an
            imprinted row or a class mean discriminative instead of the direction every
            window shares.
        num_layers: Encoder layers.
        dropout: Dropout inside the encoder.
        head: ``cosine`` (logits ``s·cos + b``, learnable ``s``) or ``linear``.
        scale: Initial cosine scale; also the scale of prototype similarities.
        label_smoothing: Cross-entropy label smoothing.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        max_epochs_hint: Epochs the cosine learning-rate schedule spans.
        prototype_per_class: Training windows per class the prototypes are fitted on.
        predict_with: ``classifier`` or ``prototype`` (nearest class mean).
        max_len: Longest window the transformer encoder accepts.
        aux_cells: When > 0, an auxiliary head on the features predicts the window's
            place × heading cell (:class:`~transitnet.models.place_targets.PlaceTargets`,
            this many k-means cells of the training windows) jointly with the line: a
            line-free objective that keeps unseen lines apart from the old ones.
        aux_weight: Weight of the auxiliary cross-entropy.
        aux_path: The cells also tell where the window started (the stretch covered).
        margin: Additive cosine margin (CosFace) subtracted from the true class's cosine
            in training (cosine head only): tighter classes.
        geo_dim: When > 0, the heads see the encoder's features concatenated with a
            fixed :class:`~transitnet.models.descriptor.WindowDescriptor` of this size
            (random Fourier features of the fixes' positions and headings, never
            trained): geography the line-trained encoder may discard, kept for lines
            added later.
        geo_length: Its kernel width on the scaled position (relative to the city's spread).
        geo_heading: Its kernel width on the scaled heading.
        geo_weight: Its norm relative to the encoder features' (both ~unit variance a dim).
        geo_seed: Seed of its random frequencies.
        stat_components: Sub-centres of each class's stored feature statistics
            (:func:`~transitnet.models.feature_mixture.fit_feature_mixture`; 0: none).
        blind_features: Per-fix features (of ``CLASS_FEATURES``) the encoder does not see
            (set to their training mean), e.g. ``[tod_sin, tod_cos]``: a classifier that
            must not lean on the hours it was trained on.
    """

    feature_mean: torch.Tensor

    def __init__(
        self,
        hidden_dim: int = 64,
        encoder: str = "gru",
        neck: str = "batchnorm",
        num_layers: int = 1,
        dropout: float = 0.1,
        head: str = "cosine",
        scale: float = 16.0,
        label_smoothing: float = 0.0,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        max_epochs_hint: int = 20,
        prototype_per_class: int = 256,
        predict_with: str = "classifier",
        max_len: int = 64,
        aux_cells: int = 0,
        aux_weight: float = 0.5,
        aux_path: bool = False,
        margin: float = 0.0,
        geo_dim: int = 0,
        geo_length: float = 0.05,
        geo_heading: float = 0.5,
        geo_weight: float = 1.0,
        geo_seed: int = 0,
        stat_components: int = 8,
        blind_features: list[str] | None = None,
    ) -> None:
        super().__init__()
        unknown = sorted(set(blind_features or []) - set(CLASS_FEATURES))
        if unknown:
            raise ValueError(f"blind_features {unknown} are not among {CLASS_FEATURES}")
        if head not in HEADS or predict_with not in ANSWERS or neck not in NECKS:
            raise ValueError(
                f"head must be one of {HEADS}, neck one of {NECKS} and predict_with one of "
                f"{ANSWERS}; got {head!r}, {neck!r}, {predict_with!r}"
            )
        self.save_hyperparameters()
        self.encoder: TrajectoryEncoder | None = None
        self.neck: nn.Module = nn.Identity()
        self.head: ExtensibleClassifier | None = None
        self.prototypes: PrototypeHead | None = None
        self.places: PlaceTargets | None = None
        self.aux_head: nn.Module | None = None
        self.geo: WindowDescriptor | None = None
        self.correction: dict[str, Any] | None = None
        self.class_stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.class_chol: dict[str, torch.Tensor] = {}
        self.class_mix: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        #: Base model's confidence on its correct training windows, at claim_gate.QUANTILE_GRID.
        self.confidence_grid: list[float] = []
        #: ``{"classes", "q", "threshold"}``: classes that only take unsure windows.
        self.claim_gate: dict[str, Any] | None = None
        self.trainable: list[nn.Parameter] | None = None

    # -- building ------------------------------------------------------------------
    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names in row order."""
        return self.net()[1].class_names

    @property
    def feature_dim(self) -> int:
        """Size of the features the heads see: encoder output plus any descriptor."""
        return int(self.hparams["hidden_dim"]) + int(self.hparams.get("geo_dim", 0))

    def net(self) -> tuple[TrajectoryEncoder, ExtensibleClassifier, PrototypeHead]:
        """Encoder, classifier and prototype head (RuntimeError before they are built)."""
        if self.encoder is None or self.head is None or self.prototypes is None:
            raise RuntimeError("the network is not built: attach a datamodule or load a checkpoint")
        return self.encoder, self.head, self.prototypes

    def build_net(self, class_names: tuple[str, ...] | list[str], n_features: int) -> None:
        """Create encoder and heads for ``class_names`` (row order) and ``n_features``."""
        hp: Any = self.hparams
        self.encoder = TrajectoryEncoder(
            n_features,
            hp.hidden_dim,
            kind=hp.encoder,
            num_layers=hp.num_layers,
            dropout=hp.dropout,
            max_len=hp.max_len,
        )
        if hp.neck == "batchnorm":
            self.neck = nn.BatchNorm1d(hp.hidden_dim, affine=False)
        dim = self.feature_dim
        self.head = ExtensibleClassifier(
            dim, list(class_names), cosine=hp.head == "cosine", scale=hp.scale
        )
        self.prototypes = PrototypeHead(dim)
        self.register_buffer("feature_mean", torch.zeros(dim))
        cols = [CLASS_FEATURES.index(c) for c in ("x_km", "y_km", "heading_sin", "heading_cos")]
        columns = (cols[0], cols[1], cols[2], cols[3])
        if hp.aux_cells > 0:
            self.places = PlaceTargets(hp.aux_cells, columns, path=hp.aux_path)
            self.aux_head = nn.Linear(hp.hidden_dim, hp.aux_cells)  # encoder's part only
        if hp.get("geo_dim", 0) > 0:
            weight = hp.geo_weight * (hp.hidden_dim / hp.geo_dim) ** 0.5
            self.geo = WindowDescriptor(
                hp.geo_dim, columns, length=hp.geo_length, heading_length=hp.geo_heading,
                weight=weight, seed=hp.geo_seed,
            )  # fmt: skip

    def configure_model(self) -> None:
        """Build the network from the attached DataModule's classes (after its setup)."""
        if self.encoder is not None or self._trainer is None:
            return
        dm: Any = getattr(self.trainer, "datamodule", None)
        if dm is None or not getattr(dm, "classes", None):
            raise RuntimeError("ClassificationTask needs a set-up RouteClassDataModule")
        self.build_net(tuple(dm.classes), dm.n_features)
        fitted = [m for m in (self.places, self.geo) if m is not None]
        if fitted:
            data = dm.dataset("train")
            for module in fitted:
                module.fit(data.features, data.lengths)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the class names, feature count and any logit correction."""
        encoder, head, _ = self.net()
        checkpoint[CKPT_KEY] = {
            "class_names": list(head.class_names),
            "n_features": encoder.n_features,
            "correction": self.correction,
            "class_stats": {k: [m.tolist(), s.tolist()] for k, (m, s) in self.class_stats.items()},
            # tensors, not lists: H² numbers per class (lists in checkpoints before geo_dim)
            "class_chol": {k: v.detach().cpu().clone() for k, v in self.class_chol.items()},
            "class_mix": {
                k: [t.detach().cpu().clone() for t in v] for k, v in self.class_mix.items()
            },
            "confidence_grid": self.confidence_grid,
            "claim_gate": self.claim_gate,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Build the network at the checkpoint's size, or migrate the head by class name.

        When this task already holds a head with more classes, the checkpoint's rows are
        moved to this head's rows by name (old classes keep their trained rows, the
        others keep this head's rows; dropping or re-ordering classes is refused) and
        the optimizer state is reset, with a warning (a warm start, not a resume).
        """
        meta = checkpoint.get(CKPT_KEY)
        if meta is None:
            raise ValueError("this checkpoint was not written by transitnet's ClassificationTask")
        self.correction = meta.get("correction")
        self.confidence_grid = list(meta.get("confidence_grid", []))  # absent before the gate
        self.claim_gate = meta.get("claim_gate")
        self.class_stats = {
            k: (torch.tensor(m), torch.tensor(s))
            for k, (m, s) in meta.get("class_stats", {}).items()
        }
        chol = meta.get("class_chol", {})
        self.class_chol = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in chol.items()}
        mix = meta.get("class_mix", {})  # absent before stat_components
        self.class_mix = {k: (v[0].float(), v[1].float(), v[2].float()) for k, v in mix.items()}
        saved = tuple(meta["class_names"])
        if self.head is None:
            self.build_net(saved, int(meta["n_features"]))
            return
        if saved == self.head.class_names:
            return
        self.head.migrate_state_dict(checkpoint["state_dict"], "head.")
        if checkpoint.get("optimizer_states"):
            logger.warning(
                "checkpoint has %d classes, this model %d: optimizer state reset",
                len(saved),
                len(self.head.class_names),
            )
            fresh = torch.optim.AdamW(self.parameter_groups())
            checkpoint["optimizer_states"] = [fresh.state_dict()]
            checkpoint["lr_schedulers"] = []

    # -- inference -----------------------------------------------------------------
    def encode(self, batch: ClassBatch) -> torch.Tensor:
        """Window features ``(B, feature_dim)``: the encoder's output through the neck.

        With ``geo_dim``, the window's fixed descriptor is appended.
        """
        return self.join_geo(
            self.neck(self.net()[0](self.encoder_input(batch), batch.lengths)), batch
        )

    def encoder_input(self, batch: ClassBatch) -> torch.Tensor:
        """The batch's scaled per-fix features, ``blind_features`` set to 0 (their mean)."""
        blind = self.hparams.get("blind_features") or []
        if not blind:
            return batch.features
        features = batch.features.clone()
        features[..., [CLASS_FEATURES.index(n) for n in blind]] = 0.0
        return features

    def join_geo(self, features: torch.Tensor, batch: ClassBatch) -> torch.Tensor:
        """Append the batch's window descriptors to encoder features (when configured)."""
        if self.geo is None:
            return features
        return torch.cat([features, self.geo(batch.features, batch.lengths)], dim=1)

    def center(self, features: torch.Tensor) -> torch.Tensor:
        """Features minus the mean training feature: what the prototype head compares.

        Centring (as in SimpleShot) removes the direction every window shares, which
        otherwise dominates the cosine between a window and a class mean.
        """
        return features - self.feature_mean.to(features)

    def prototype_logits(self, features: torch.Tensor) -> torch.Tensor:
        """``scale · cos`` to each class's prototype ``(B, C)``; -1e4 for classes without one."""
        _, head, protos = self.net()
        out = features.new_full((features.shape[0], len(head.class_names)), MASKED_LOGIT)
        if protos.class_names:
            rows = [head.index(name) for name in protos.class_names]
            out[:, rows] = float(self.hparams["scale"]) * protos(self.center(features))
        return out

    def logits(self, features: torch.Tensor, answer: str | None = None) -> torch.Tensor:
        """Class logits ``(B, C)`` of features, by the chosen head, with any correction."""
        answer = answer or str(self.hparams["predict_with"])
        z = self.prototype_logits(features) if answer == "prototype" else self.net()[1](features)
        return self.apply_correction(z, gate=answer == "classifier")

    def apply_correction(self, logits: torch.Tensor, gate: bool = True) -> torch.Tensor:
        """Apply a recorded BiC correction ``alpha·z + beta``, then any claim gate.

        ``gate``: apply the claim gate (its threshold is a confidence of the classifier
        head, so prototype answers are not gated).
        """
        head = self.net()[1]
        if self.correction:
            mask = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
            mask[[head.index(n) for n in self.correction["classes"]]] = True
            alpha, beta = float(self.correction["alpha"]), float(self.correction["beta"])
            logits = torch.where(mask, alpha * logits + beta, logits)
        if self.claim_gate and gate:
            gated = torch.zeros(logits.shape[1], dtype=torch.bool)
            gated[[head.index(n) for n in self.claim_gate["classes"]]] = True
            logits = apply_gate(logits, gated, float(self.claim_gate["threshold"]))
        return logits

    def forward(self, batch: ClassBatch) -> torch.Tensor:
        """Logits ``(B, C)`` from the head chosen by ``predict_with``."""
        return self.logits(self.encode(batch))

    @torch.no_grad()
    def encode_dataset(self, dataset: ClassWindowDataset) -> torch.Tensor:
        """Features ``(N, feature_dim)`` of every window, in eval mode."""
        was_training = self.training
        self.eval()
        out = [
            self.encode(dataset.__getitems__(range(i, min(i + CHUNK, len(dataset)))))
            for i in range(0, len(dataset), CHUNK)
        ]
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, self.feature_dim)

    def fit_prototypes(self, dataset: ClassWindowDataset, per_class: int | None = None) -> None:
        """Refit every class prototype from at most ``per_class`` labelled windows each."""
        _, head, _ = self.net()
        per_class = per_class or int(self.hparams["prototype_per_class"])
        gen = torch.Generator().manual_seed(0)
        order = torch.randperm(len(dataset), generator=gen)
        labels = dataset.labels[order]
        picks = [order[labels == c][:per_class] for c in range(len(head.class_names))]
        chosen = torch.cat(picks).sort().values if picks else torch.zeros(0, dtype=torch.long)
        feats = self.encode_dataset(_subset(dataset, chosen))
        if len(feats):
            self.feature_mean = feats.mean(0)
            with torch.no_grad():
                raw = head(feats)
            self.confidence_grid = confidence_quantiles(raw, dataset.labels[chosen])
        protos = PrototypeHead(feats.shape[1]).to(feats.device)
        for c, name in enumerate(head.class_names):
            rows = dataset.labels[chosen] == c
            if bool(rows.any()):
                self.add_class_features(name, feats[rows], protos)
        self.prototypes = protos

    def add_class_features(
        self, name: str, features: torch.Tensor, protos: PrototypeHead | None = None
    ) -> None:
        """Record a class's prototype and feature statistics from its features ``(n, H)``.

        The statistics (per-dimension mean and std, ``2·H`` numbers per class, the
        Cholesky factor of the shrunk covariance, ``H²``, and ``stat_components``
        sub-centres with their stds and weights) travel in the checkpoint;
        frozen-encoder extension samples pseudo-features of old classes from them
        instead of needing old data.
        """
        (protos or self.net()[2]).add_class(name, self.center(features))
        std = (
            features.std(0, unbiased=False) if len(features) > 1 else torch.zeros_like(features[0])
        )
        self.class_stats[name] = (features.mean(0).detach(), std.detach())
        self.class_chol[name] = compute_covariance_factor(features)
        if int(self.hparams.get("stat_components", 0)) > 0:
            self.class_mix[name] = fit_feature_mixture(
                features, int(self.hparams["stat_components"])
            )

    # -- steps ---------------------------------------------------------------------
    def training_step(self, batch: ClassBatch, batch_idx: int) -> torch.Tensor:
        """Line cross-entropy (with any margin) plus the auxiliary place loss.

        Logs ``train_loss``, ``train_acc`` and, with ``aux_cells``, ``train_aux_loss``.
        """
        head = self.net()[1]
        feats = self.encode(batch)
        logits = head(feats)
        margin = float(self.hparams["margin"])
        target = logits
        if margin > 0 and head.cosine:
            shift = nn.functional.one_hot(batch.labels, logits.shape[1]) * margin
            target = logits - head.log_scale.exp() * shift
        loss = nn.functional.cross_entropy(
            target, batch.labels, label_smoothing=float(self.hparams["label_smoothing"])
        )
        if self.places is not None and self.aux_head is not None:
            aux = nn.functional.cross_entropy(
                self.aux_head(feats[:, : int(self.hparams["hidden_dim"])]),
                self.places(batch.features, batch.lengths),
            )
            self.log("train_aux_loss", aux, batch_size=len(batch))
            loss = loss + float(self.hparams["aux_weight"]) * aux
        acc = (logits.argmax(dim=1) == batch.labels).float().mean()
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch))
        self.log("train_acc", acc, on_step=False, on_epoch=True, batch_size=len(batch))
        return loss

    def _eval_step(self, batch: ClassBatch, split: str) -> None:
        feats = self.encode(batch)
        logits = self.logits(feats, "classifier")
        loss = nn.functional.cross_entropy(logits, batch.labels, ignore_index=-1)
        self.log(f"{split}_loss", loss, batch_size=len(batch))
        self.update_counts(split, logits, batch.labels, "")
        if self.net()[2].class_names:
            self.update_counts(split, self.logits(feats, "prototype"), batch.labels, "proto_")

    def validation_step(self, batch: ClassBatch, batch_idx: int) -> None:
        """Loss and accuracy on the validation split."""
        self._eval_step(batch, "val")

    def test_step(self, batch: ClassBatch, batch_idx: int) -> None:
        """Loss and accuracy on the test split."""
        self._eval_step(batch, "test")

    def predict_step(self, batch: ClassBatch, batch_idx: int) -> dict[str, torch.Tensor]:
        """Predicted class row and its softmax probability per window."""
        prob = self(batch).softmax(dim=1)
        best = prob.max(dim=1)
        return {"index": batch.index, "pred": best.indices, "prob": best.values}

    def on_validation_epoch_start(self) -> None:
        """Refit the prototypes from the training split, so they follow the encoder."""
        if self._trainer is None or self.trainer.state.fn != TrainerFn.FITTING:
            return
        dm: Any = getattr(self.trainer, "datamodule", None)
        if dm is not None and "train" in getattr(dm, "windows", {}):
            self.fit_prototypes(dm.dataset("train"))

    def on_train_end(self) -> None:
        """Refit the prototypes on the final encoder; a fit trains every class: no gate."""
        self.on_validation_epoch_start()
        if self.claim_gate:
            logger.info(
                "every class was trained: claim gate of %s lifted", self.claim_gate["classes"]
            )
            self.claim_gate = None

    def parameter_groups(self) -> list[dict[str, Any]]:
        """One AdamW group of every trainable parameter (or :attr:`trainable` when set)."""
        self.net()
        hp: Any = self.hparams
        params = self.trainable if self.trainable is not None else list(self.parameters())
        params = [p for p in params if p.requires_grad and p.numel()]
        return [{"params": params, "lr": hp.lr, "weight_decay": hp.weight_decay}]


def _subset(dataset: ClassWindowDataset, rows: torch.Tensor) -> ClassWindowDataset:
    """A view of ``dataset`` holding only ``rows``."""
    out = ClassWindowDataset.__new__(ClassWindowDataset)
    out.features, out.lengths = dataset.features[rows], dataset.lengths[rows]
    out.labels = dataset.labels[rows]
    return out
