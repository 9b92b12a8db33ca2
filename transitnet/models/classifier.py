"""A classifier head that gains classes by name without losing the old ones.

Rows are name-keyed and held as split tables (see :class:`SplitRows`): old rows can be
frozen out of every optimizer group while new rows train. New rows start from one of
the inits of :meth:`ExtensibleClassifier.add_classes`; untrained classes can be masked;
:meth:`~ExtensibleClassifier.weight_align` (WA) and
:class:`~transitnet.models.heads.BiasCorrection` (BiC) correct
the bias toward new classes after training on them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from transitnet.models.embedding import SplitRows
from transitnet.models.migrate import migrate_rows

logger = logging.getLogger(__name__)

#: Logit of a masked (untrained) class: finite, so cross-entropy stays finite.
MASKED_LOGIT = -1e4


class ExtensibleClassifier(nn.Module):
    """Name-keyed linear or cosine classifier: ``(B, in_dim)`` → ``(B, n_classes)`` logits.

    Args:
        in_dim: Feature size.
        class_names: Initial classes, unique, in row order.
        cosine: Logits ``s · cos(x, w) + b`` instead of ``x · w + b``.
        learnable_scale: Train the cosine scale ``s`` (else fixed).
        scale: Initial cosine scale.
        generator: RNG for the initial rows.
    """

    active: torch.Tensor
    log_scale: torch.Tensor

    def __init__(
        self,
        in_dim: int,
        class_names: Sequence[str],
        *,
        cosine: bool = False,
        learnable_scale: bool = True,
        scale: float = 16.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self._names: list[str] = []
        _check_names(class_names, [])
        self.in_dim = in_dim
        self.cosine = cosine
        weight, bias = self._random_rows(len(class_names), generator)
        self.weight = SplitRows(weight)
        self.bias = SplitRows(bias)
        log_scale = torch.tensor(math.log(scale))
        if cosine and learnable_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        self.register_buffer("active", torch.ones(len(class_names), dtype=torch.bool))
        self._names = list(class_names)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names in row order."""
        return tuple(self._names)

    def index(self, name: str) -> int:
        """Row of a class name (KeyError if absent)."""
        return self._names.index(name) if name in self._names else _raise_unknown(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_classes)`` for features ``x`` ``(B, in_dim)``; masked classes -1e4."""
        w, b = self.weight.full(), self.bias.full()
        if self.cosine:
            cos = nn.functional.normalize(x, dim=1) @ nn.functional.normalize(w, dim=1).T
            logits = self.log_scale.exp() * cos + b
        else:
            logits = x @ w.T + b
        return logits.masked_fill(~self.active, MASKED_LOGIT)

    def add_classes(
        self,
        names: Sequence[str],
        init: str = "mean",
        features: Mapping[str, torch.Tensor] | None = None,
        *,
        mask: bool = False,
        margin: float = 10.0,
        generator: torch.Generator | None = None,
    ) -> list[int]:
        """Append classes; old rows, biases and logits are untouched.

        Args:
            names: New class names (unique, not already present).
            init: ``imprint``: the L2-normalised mean of the L2-normalised features of each
                class (scaled to the old rows' mean norm for a linear head), bias = mean old
                bias. ``mean``: mean of the old rows, bias = mean of old biases.
                ``low_bias``: mean of the old rows with a bias so low that every new logit
                stays below the largest active old logit for any input (linear:
                min old bias - margin; cosine: min old bias - 2s - margin), so old
                predictions keep their argmax. ``random``: default Linear init (ablation).
            features: ``imprint`` only: class name → ``(n_examples, in_dim)`` features.
            mask: Start the new classes masked (logit -1e4) until :meth:`set_active`.
            margin: Extra gap for ``low_bias``.
            generator: RNG for ``random``.

        Returns:
            The rows of the new classes.

        Raises:
            ValueError: Duplicate names, unknown init, or missing/bad imprint features.
        """
        _check_names(names, self._names)
        if features is not None and init != "imprint":
            raise ValueError(f"features are only used by init='imprint', not {init!r}")
        with torch.no_grad():
            weight, bias = self._init_rows(list(names), init, features, margin, generator)
        start = len(self._names)
        self.weight.set_rows(self.weight.n_rows, weight)
        self.bias.set_rows(self.bias.n_rows, bias)
        new_active = torch.full((len(names),), not mask, dtype=torch.bool)
        self.active = torch.cat([self.active, new_active.to(self.active.device)])
        self._names.extend(names)
        logger.info("classifier: added %d classes (init %s, masked %s)", len(names), init, mask)
        return list(range(start, len(self._names)))

    def set_active(self, names: Sequence[str], active: bool = True) -> None:
        """Unmask (or mask) classes by name."""
        for name in names:
            self.active[self.index(name)] = active

    def freeze_old(self) -> None:
        """Exclude old rows, old biases and the scale from gradients."""
        self.weight.base.requires_grad_(False)
        self.bias.base.requires_grad_(False)
        self.log_scale.requires_grad_(False)

    def merge(self) -> None:
        """Fold the new rows into the old ones (after training on them)."""
        self.weight.split_at(self.weight.n_rows)
        self.bias.split_at(self.bias.n_rows)

    def new_parameters(self) -> list[nn.Parameter]:
        """The new rows and biases, for the optimizer."""
        return [self.weight.new, self.bias.new]

    def weight_align(self) -> float:
        """WA: rescale new rows so their mean norm equals the old rows'; return the factor.

        Biases are left as they are. A cosine head ignores row norms, so there it does
        nothing and returns 1.0.
        """
        if self.weight.new.shape[0] == 0 or self.weight.n_base == 0:
            raise ValueError("weight aligning needs both old and new classes")
        if self.cosine:
            logger.warning("weight_align has no effect on a cosine head")
            return 1.0
        with torch.no_grad():
            old_norm = self.weight.base.norm(dim=1).mean()
            gamma = float(old_norm / self.weight.new.norm(dim=1).mean().clamp_min(1e-12))
            self.weight.new.mul_(gamma)
        return gamma

    def migrate_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        *,
        allow_drop: bool = False,
        allow_reorder: bool = False,
    ) -> list[str]:
        """Rewrite a checkpoint's entries under ``prefix`` to this head's classes, by name.

        Old classes keep their rows; classes the checkpoint lacks take this head's current
        rows (initialised by :meth:`add_classes`). Call from ``on_load_checkpoint``.

        Returns:
            The state-dict keys rewritten.
        """
        old = state_dict[prefix + "_extra_state"]["class_names"]
        touched = []
        for key, rows in (
            ("weight.rows", self.weight.full()),
            ("bias.rows", self.bias.full()),
            ("active", self.active),
        ):
            state_dict[prefix + key] = migrate_rows(
                state_dict[prefix + key],
                old,
                self._names,
                rows,
                allow_drop=allow_drop,
                allow_reorder=allow_reorder,
            )
            touched.append(prefix + key)
        state_dict[prefix + "_extra_state"] = self.get_extra_state()
        return touched

    def get_extra_state(self) -> dict[str, Any]:
        """The class registry, saved in the state dict."""
        return {"class_names": list(self._names)}

    def set_extra_state(self, state: Any) -> None:
        """Check the saved registry matches; a mismatch needs :meth:`migrate_state_dict`."""
        saved = list(state["class_names"])
        if saved != self._names:
            raise ValueError(
                f"checkpoint classes {saved[:5]}… differ from the head's "
                f"{self._names[:5]}…; migrate by name with migrate_state_dict"
            )

    def _random_rows(
        self, n: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows and biases as ``nn.Linear`` initialises them (cosine: zero biases)."""
        bound = 1.0 / math.sqrt(self.in_dim)
        weight = (torch.rand(n, self.in_dim, generator=generator) * 2 - 1) * bound
        bias = (torch.rand(n, generator=generator) * 2 - 1) * bound
        return weight, bias * (0.0 if self.cosine else 1.0)

    def _init_rows(
        self,
        names: list[str],
        init: str,
        features: Mapping[str, torch.Tensor] | None,
        margin: float,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``(k, in_dim)`` and biases ``(k,)`` for new classes (see :meth:`add_classes`)."""
        k, w, b = len(names), self.weight.full(), self.bias.full()
        ref = self.active if bool(self.active.any()) else torch.ones_like(self.active)
        if init == "random":
            return self._random_rows(k, generator)
        if init in ("mean", "low_bias"):
            rows = w[ref].mean(0).expand(k, -1)
            if init == "mean":
                return rows, b[ref].mean().expand(k)
            gap = margin + (2 * float(self.log_scale.exp()) if self.cosine else 0.0)
            return rows, (b[ref].min() - gap).expand(k)
        if init == "imprint":
            rows = torch.stack([_imprint(features, name, self.in_dim) for name in names])
            norm = 1.0 if self.cosine else float(w[ref].norm(dim=1).mean())
            return rows * norm, b[ref].mean().expand(k)
        raise ValueError(f"unknown init {init!r}: use imprint, mean, low_bias or random")


def _imprint(features: Mapping[str, torch.Tensor] | None, name: str, dim: int) -> torch.Tensor:
    """L2-normalised mean of the L2-normalised features of one class, ``(dim,)``."""
    f = None if features is None else features.get(name)
    if f is None or f.ndim != 2 or f.shape[0] == 0 or f.shape[1] != dim:
        raise ValueError(f"imprint needs features (n ≥ 1, {dim}) for class {name!r}")
    if not torch.isfinite(f).all():
        raise ValueError(f"imprint features of {name!r} hold NaN or inf")
    return nn.functional.normalize(nn.functional.normalize(f, dim=1).mean(0), dim=0)


def _check_names(names: Sequence[str], existing: Sequence[str]) -> None:
    """Raise ValueError unless ``names`` are new, unique, non-empty strings."""
    if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"class names must be a sequence of non-empty strings, got {names!r}")
    clash = set(names) & set(existing)
    if clash or len(set(names)) != len(names):
        raise ValueError(f"duplicate class names: {sorted(clash) or list(names)}")


def _raise_unknown(name: str) -> int:
    raise KeyError(f"unknown class {name!r}")
