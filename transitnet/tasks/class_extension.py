"""``ClassExtensionTask``: teach a trained route classifier new classes, by mode.

Modes and what each needs and guarantees (new classes are added first with
:meth:`~transitnet.models.classifier.ExtensibleClassifier.add_classes`):

- ``none``: nothing trains. With ``low_bias`` or masked new classes the old classes'
  argmax is unchanged for every input.
- ``frozen``: the encoder, the old rows, the old biases and the scale are in no
  optimizer group; only the new rows (and, with ``train_new_bias``, their biases) train,
  on new-class windows: **no old data needed**. Old rows are bit-identical afterwards;
  the old classes can only lose windows to the new ones. To teach the new rows where
  the old classes lie, each batch adds pseudo-features of old classes drawn from a
  Gaussian fitted to their training features (PASS-style prototype augmentation; the
  statistics, mean, std and a covariance factor per class, travel in the checkpoint),
  ``pseudo_ratio`` times as many per old class as there are real windows per new class.
  Without statistics the new biases stay at their init (trained on new data alone they
  can only grow). On a cosine head, statistical weight aligning
  (:meth:`ClassExtensionTask.align_by_claim_rate`) then caps how many old-class
  pseudo-features the new classes may claim.
- ``replay``: everything trains on the new windows plus a class-balanced buffer of old
  windows, with LwF-style distillation of the old classes' logits towards the frozen
  base model (KL at temperature ``T``, times ``T²``); then WA or BiC.
- ``naive``: everything trains on the new windows alone with no protection: the lower
  bound for forgetting, for experiments.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn

from transitnet.datasets.class_batches import ClassBatch
from transitnet.tasks.classification import ClassificationTask

MODES = ("none", "frozen", "replay", "naive")
#: Rows, means, stds or Cholesky factors, and draw weights (None: uniform) of pseudo-features.
PseudoSource = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]
logger = logging.getLogger(__name__)


class ClassExtensionTask(ClassificationTask):
    """A :class:`ClassificationTask` trained on new classes under one mode.

    Args:
        mode: One of :data:`MODES`.
        new_row_lr: Learning rate of the new rows (no weight decay).
        layer_lr: Learning rate of the encoder and old rows (``replay``, ``naive``).
        distill_weight: Weight of the distillation loss (``replay``).
        temperature: Distillation temperature.
        train_new_bias: Train the new classes' biases in ``frozen`` mode (only when
            pseudo-features of old classes are available).
        pseudo_ratio: Pseudo-features per old class over real windows per new class in
            ``frozen`` mode (1: class-balanced batches; 0 turns them off).
        full_covariance: Draw pseudo-features from each old class's full (shrunk)
            covariance when the checkpoint stores it; else from the per-dimension stds.
        mixture: Draw them from each old class's sub-centres (a diagonal Gaussian
            mixture, :mod:`~transitnet.models.feature_mixture`) when the checkpoint
            stores them; takes precedence over ``full_covariance``.
        **kwargs: Passed to :class:`ClassificationTask`.
    """

    def __init__(
        self,
        mode: str = "frozen",
        new_row_lr: float = 1e-2,
        layer_lr: float = 3e-4,
        distill_weight: float = 1.0,
        temperature: float = 2.0,
        train_new_bias: bool = True,
        pseudo_ratio: float = 1.0,
        full_covariance: bool = True,
        mixture: bool = False,
        **kwargs: Any,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.mode = mode
        self.teacher: tuple[nn.Module, ...] | None = None
        self.pseudo: PseudoSource | None = None
        self.n_old = 0

    def prepare_mode(self, n_old: int) -> None:
        """Freeze per mode and keep a frozen copy of the base; call after ``add_classes``.

        Args:
            n_old: Classes the base model had (rows ``[0, n_old)``).
        """
        encoder, head, _ = self.net()
        if head.weight.n_base != n_old:
            head.weight.split_at(n_old)
            head.bias.split_at(n_old)
        self.n_old = n_old
        teacher = tuple(copy.deepcopy(m).eval() for m in (encoder, self.neck, head))
        for module in teacher:
            module.requires_grad_(False)
        object.__setattr__(self, "teacher", teacher)  # not a submodule: not saved, not trained
        frozen = self.mode in ("none", "frozen")
        self.pseudo = self._pseudo_source(head.class_names[:n_old]) if frozen else None
        encoder.requires_grad_(not frozen)
        head.requires_grad_(not frozen)
        new = head.new_parameters()
        new[0].requires_grad_(True)
        new[1].requires_grad_(
            not frozen or (bool(self.hparams["train_new_bias"]) and self.pseudo is not None)
        )
        self.trainable = [p for p in self.parameters() if p.requires_grad]

    def _pseudo_source(
        self, old_names: tuple[str, ...], *, always: bool = False
    ) -> PseudoSource | None:
        """Where pseudo-features of the old classes that have feature statistics come from.

        ``(rows, means, scales, weights)``: one entry per class (its mean with its stds
        ``(C, H)`` or Cholesky factor ``(C, H, H)``; ``weights`` None, uniform) or, with
        ``mixture``, one per sub-centre (its centre and stds; ``weights`` = the
        sub-centre's share of its class over the number of classes, so classes stay
        equally likely). None without statistics, or when ``pseudo_ratio`` is 0 unless
        ``always``.
        """
        have = [(i, n) for i, n in enumerate(old_names) if n in self.class_stats]
        if not have or (float(self.hparams["pseudo_ratio"]) <= 0 and not always):
            return None
        if bool(self.hparams.get("mixture")) and all(n in self.class_mix for _, n in have):
            parts = [(i, *self.class_mix[n]) for i, n in have]
            rows = torch.cat([torch.full((len(w),), i, dtype=torch.long) for i, _, _, w in parts])
            centres = torch.cat([c for _, c, _, _ in parts])
            stds = torch.cat([s for _, _, s, _ in parts])
            weights = torch.cat([w / len(parts) for _, _, _, w in parts])
            return rows, centres, stds, weights
        rows = torch.tensor([i for i, _ in have], dtype=torch.long)
        means = torch.stack([self.class_stats[n][0] for _, n in have])
        if bool(self.hparams["full_covariance"]) and all(n in self.class_chol for _, n in have):
            return rows, means, torch.stack([self.class_chol[n] for _, n in have]), None
        return rows, means, torch.stack([self.class_stats[n][1] for _, n in have]), None

    def pseudo_features(
        self,
        n: int,
        source: PseudoSource | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` pseudo-features of old classes (uniform over classes) and their rows.

        ``source`` (default: the one :meth:`prepare_mode` chose) is a
        :meth:`_pseudo_source` answer.
        """
        source = source if source is not None else self.pseudo
        if source is None:
            raise RuntimeError("no old-class statistics to sample from")
        rows, means, scales, weights = source
        if weights is None:
            pick = torch.randint(len(rows), (n,), generator=generator).sort().values
        else:
            pick = (
                torch.multinomial(weights, n, replacement=True, generator=generator).sort().values
            )
        noise = torch.randn(n, means.shape[1], generator=generator)
        if scales.ndim == 2:
            fake = means[pick] + scales[pick] * noise
        else:
            fake = torch.empty_like(noise)
            for c in sorted(set(pick.tolist())):
                at = pick == c
                fake[at] = means[c] + noise[at] @ scales[c].T
        return fake.to(self.device), rows[pick].to(self.device)

    @torch.no_grad()
    def align_by_claim_rate(
        self, claim_rate: float, n_samples: int = 20_000, seed: int = 0, per_class: bool = False
    ) -> float | None:
        """Statistical weight aligning for a cosine head: no old data, only old statistics.

        Draws ``n_samples`` pseudo-features of the old classes from the per-class feature
        statistics stored at base training (Gaussian with the class's mean and full
        covariance, or per-dimension stds, or its sub-centres; see ``full_covariance``
        and ``mixture``; uniform over classes) and
        lowers every new class's bias by the same offset ``δ ≥ 0``, the smallest for which
        at most a fraction ``claim_rate`` of them have a new class as their argmax. Like
        WA it is one scalar applied to the new classes only, and old rows, biases and
        old-vs-old decisions are untouched. ``per_class``: each of the ``k`` new classes
        gets its own offset, the smallest for which it beats every old class on at most
        ``claim_rate / k`` of them (together still at most ``claim_rate``), so a new
        class that overlaps the old ones does not hold back the others.

        Returns:
            The (largest) offset ``δ`` subtracted from the new biases, or None (with a
            warning) when the checkpoint holds no old-class statistics.

        Raises:
            ValueError: ``claim_rate`` outside ``[0, 1]``, or no new classes.
        """
        head = self.net()[1]
        if not 0.0 <= claim_rate <= 1.0 or head.weight.new.shape[0] == 0:
            raise ValueError(f"need new classes and 0 ≤ claim_rate ≤ 1, got {claim_rate}")
        source = self._pseudo_source(head.class_names[: self.n_old], always=True)
        if source is None:
            logger.warning("no old-class statistics: statistical weight aligning skipped")
            return None
        gen = torch.Generator().manual_seed(seed)
        fake, _ = self.pseudo_features(n_samples, source, gen)
        logits = head(fake)
        old_best = logits[:, : self.n_old].max(1, keepdim=True).values
        gaps = (logits[:, self.n_old :] - old_best).double()  # (n_samples, k)
        if per_class:
            rate = claim_rate / gaps.shape[1]
            deltas = torch.quantile(gaps, 1.0 - rate, dim=0).clamp(min=0.0)
        else:
            deltas = torch.quantile(gaps.max(1).values, 1.0 - claim_rate).clamp(min=0.0)
        head.bias.new.sub_(deltas.to(head.bias.new))
        logger.info("statistical WA: new biases lowered by up to %.4f (claim rate %.4f)",
                    float(deltas.max()), claim_rate)  # fmt: skip
        return float(deltas.max())

    def parameter_groups(self) -> list[dict[str, Any]]:
        """New rows at ``new_row_lr`` (no weight decay); the rest at ``layer_lr``."""
        if self.trainable is None:
            raise RuntimeError("call prepare_mode() before training")
        hp: Any = self.hparams
        new_ids = {id(p) for p in self.net()[1].new_parameters()}
        new = [p for p in self.trainable if id(p) in new_ids and p.numel()]
        rest = [p for p in self.trainable if id(p) not in new_ids and p.numel()]
        groups: list[dict[str, Any]] = []
        if new:
            groups.append({"params": new, "lr": hp.new_row_lr, "weight_decay": 0.0})
        if rest:
            groups.append({"params": rest, "lr": hp.layer_lr, "weight_decay": hp.weight_decay})
        return groups

    def configure_optimizers(self) -> Any:
        """Constant-rate AdamW over the mode's groups (extension runs are short)."""
        return torch.optim.AdamW(self.parameter_groups())

    def training_step(self, batch: ClassBatch, batch_idx: int) -> torch.Tensor:
        """Cross-entropy over every class, plus distillation in ``replay`` mode."""
        encoder, head, _ = self.net()
        labels = batch.labels
        if self.mode in ("none", "frozen"):
            encoder.eval()  # no dropout, frozen statistics: the base model's features exactly
            self.neck.eval()
            with torch.no_grad():
                feats = self.encode(batch)
            if self.pseudo is not None:
                n_new = max(len(self.net()[1].class_names) - self.n_old, 1)
                per_class = float(self.hparams["pseudo_ratio"]) * len(batch) / n_new
                n = max(1, round(per_class * len(set(self.pseudo[0].tolist()))))
                fake, rows = self.pseudo_features(n)
                feats, labels = torch.cat([feats, fake]), torch.cat([labels, rows])
        else:
            feats = self.encode(batch)
        logits = head(feats)
        loss = nn.functional.cross_entropy(
            logits, labels, label_smoothing=float(self.hparams["label_smoothing"])
        )
        if self.mode == "replay" and float(self.hparams["distill_weight"]) > 0:
            loss = loss + float(self.hparams["distill_weight"]) * self.distill(batch, logits)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def distill(self, batch: ClassBatch, logits: torch.Tensor) -> torch.Tensor:
        """LwF: ``T² · KL(teacher ‖ student)`` over the old classes' logits."""
        if self.teacher is None:
            raise RuntimeError("call prepare_mode() before training")
        t = float(self.hparams["temperature"])
        with torch.no_grad():
            encoder, neck, head = self.teacher
            target = head(
                self.join_geo(neck(encoder(self.encoder_input(batch), batch.lengths)), batch)
            )
        student = nn.functional.log_softmax(logits[:, : self.n_old] / t, dim=1)
        teacher = nn.functional.softmax(target[:, : self.n_old] / t, dim=1)
        return nn.functional.kl_div(student, teacher, reduction="batchmean") * t * t

    def on_train_end(self) -> None:
        """Keep the prototypes and any claim gate (extension sets them itself)."""

    def on_validation_epoch_start(self) -> None:
        """Keep the prototypes: extension adds them from the new examples instead."""
