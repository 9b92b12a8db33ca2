"""Nearest-class-mean head: adding a class is adding its mean feature, no training.

Each class keeps the running mean of its examples' L2-normalised features (iCaRL's
class mean); scores are cosine similarities to those means. The classes are data, not
architecture: loading a state dict adopts the saved classes whatever the head held.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)


class PrototypeHead(nn.Module):
    """Cosine nearest-class-mean classifier, name-keyed.

    Args:
        in_dim: Feature size.
    """

    sums: torch.Tensor
    counts: torch.Tensor

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        if in_dim < 1:
            raise ValueError(f"in_dim must be ≥ 1, got {in_dim}")
        self.in_dim = in_dim
        self._names: list[str] = []
        self.register_buffer("sums", torch.zeros(0, in_dim))
        self.register_buffer("counts", torch.zeros(0, dtype=torch.long))

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names in row order."""
        return tuple(self._names)

    @property
    def prototypes(self) -> torch.Tensor:
        """Unit-norm class means, ``(n_classes, in_dim)``."""
        means = self.sums / self.counts.clamp_min(1).unsqueeze(1).to(self.sums.dtype)
        return nn.functional.normalize(means, dim=1)

    def add_class(self, name: str, features: torch.Tensor) -> int:
        """Add a class from example features ``(n ≥ 1, in_dim)``; return its row.

        Raises:
            ValueError: The name exists (use :meth:`update`) or the features are bad.
        """
        if not isinstance(name, str) or not name or name in self._names:
            raise ValueError(f"class name {name!r} is empty, not a string or already present")
        normed = self._normalise(features)
        self.sums = torch.cat([self.sums, normed.sum(0, keepdim=True).to(self.sums)])
        self.counts = torch.cat([self.counts, self.counts.new_tensor([normed.shape[0]])])
        self._names.append(name)
        logger.debug("prototype head: class %r from %d examples", name, normed.shape[0])
        return len(self._names) - 1

    def update(self, name: str, features: torch.Tensor) -> None:
        """Fold more examples ``(n ≥ 1, in_dim)`` into a class's running mean."""
        if name not in self._names:
            raise KeyError(f"unknown class {name!r}; add it with add_class")
        row = self._names.index(name)
        normed = self._normalise(features)
        self.sums[row] += normed.sum(0).to(self.sums)
        self.counts[row] += normed.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Cosine similarities ``(B, n_classes)`` of features ``x`` ``(B, in_dim)``."""
        if not self._names:
            raise ValueError("the prototype head has no classes yet")
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"features must be (B, {self.in_dim}), got {tuple(x.shape)}")
        return nn.functional.normalize(x, dim=1) @ self.prototypes.to(x.dtype).T

    def predict(self, x: torch.Tensor) -> list[str]:
        """Nearest class name for each row of ``x`` ``(B, in_dim)``."""
        return [self._names[i] for i in self(x).argmax(dim=1).tolist()]

    def get_extra_state(self) -> dict[str, Any]:
        """The class registry, saved in the state dict."""
        return {"class_names": list(self._names)}

    def set_extra_state(self, state: Any) -> None:
        """Adopt the saved registry (buffers are resized to match in loading)."""
        self._names = [str(n) for n in state["class_names"]]

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        sums, counts = state_dict.get(prefix + "sums"), state_dict.get(prefix + "counts")
        if sums is not None and counts is not None:
            if sums.ndim != 2 or sums.shape[1] != self.in_dim or counts.shape != sums.shape[:1]:
                error_msgs.append(
                    f"{prefix}sums/counts have shapes {tuple(sums.shape)}, "
                    f"{tuple(counts.shape)}; need (n, {self.in_dim}), (n,)"
                )
                return
            self.sums = torch.zeros_like(sums, device=self.sums.device)
            self.counts = torch.zeros_like(counts, device=self.counts.device)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if len(self._names) != self.sums.shape[0]:
            error_msgs.append(
                f"{prefix}: {len(self._names)} class names for {self.sums.shape[0]} prototypes"
            )

    def _normalise(self, features: torch.Tensor) -> torch.Tensor:
        """Check features ``(n ≥ 1, in_dim)`` and return them L2-normalised."""
        if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] != self.in_dim:
            raise ValueError(
                f"features must be (n ≥ 1, {self.in_dim}), got {tuple(features.shape)}"
            )
        if not torch.isfinite(features).all():
            raise ValueError("features hold NaN or inf")
        if bool((features.norm(dim=1) == 0).any()):
            raise ValueError("features hold all-zero rows, which have no direction")
        return nn.functional.normalize(features.detach(), dim=1)


def compute_covariance_factor(features: torch.Tensor, shrink: float = 0.1) -> torch.Tensor:
    """Lower Cholesky factor ``(H, H)`` of the covariance of features ``(n, H)``.

    The covariance is shrunk toward its diagonal by ``shrink`` (few windows per class
    estimate ``H²`` numbers) and given a tiny ridge, so one window or constant features
    still factor. ``mean + L @ z`` with ``z ~ N(0, I)`` draws from the fitted Gaussian.
    """
    f = features.detach().double()
    centred = f - f.mean(0)
    cov = centred.T @ centred / max(len(f), 1)
    diag = torch.diagonal(cov)
    cov = (1.0 - shrink) * cov + shrink * torch.diag(diag)
    ridge = 1e-6 * max(float(diag.mean()), 1e-6)
    factor: torch.Tensor = torch.linalg.cholesky(cov + ridge * torch.eye(len(cov), dtype=cov.dtype))
    return factor.float()
