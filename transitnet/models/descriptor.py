"""A fixed geometric descriptor of a window: where its fixes lie and which way they head.

Random Fourier features (a seeded, never-trained draw) of each valid fix's scaled
``(x, y, heading_sin, heading_cos)``, averaged over the window's fixes and L2-normalised:
an approximate kernel mean embedding of the window's points in place × heading space
(a Gaussian kernel of width ``length`` on the position, in the scaled units, i.e.
relative to the city's spread of fixes, and ``heading_length`` on the heading).
Standardised per dimension with statistics of the training windows (:meth:`fit`).

A route classifier's encoder trained on some lines keeps only what separates those
lines; this descriptor keeps the geography of every window, so a line added later
(imprinted from a few examples) is still told apart where its route diverges.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

logger = logging.getLogger(__name__)

#: Windows embedded per chunk in :meth:`WindowDescriptor.fit`.
FIT_CHUNK = 2048


class WindowDescriptor(nn.Module):
    """Map windows ``(B, K, F)`` with lengths ``(B,)`` to fixed descriptors ``(B, dim)``.

    Args:
        dim: Number of random Fourier features ``D`` (the output size).
        columns: Feature indices of ``x, y, heading_sin, heading_cos`` (scaled features).
        length: Kernel width on the position, in scaled units (the scaled position has
            unit spread over the city's training fixes).
        heading_length: Kernel width on ``(heading_sin, heading_cos)`` (scaled).
        weight: Norm of the standardised descriptor relative to ``sqrt(dim)`` (the
            norm of a ``dim``-vector of unit-variance entries): its share of a cosine.
        seed: Seed of the random frequencies and phases.
    """

    freqs: torch.Tensor
    phases: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        dim: int,
        columns: tuple[int, int, int, int],
        *,
        length: float = 0.05,
        heading_length: float = 0.5,
        weight: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if dim < 1 or length <= 0 or heading_length <= 0 or weight <= 0:
            raise ValueError(
                f"need dim ≥ 1 and positive length, heading_length and weight; got {dim}, "
                f"{length}, {heading_length}, {weight}"
            )
        self.dim = dim
        self.columns = columns
        self.weight = weight
        gen = torch.Generator().manual_seed(seed)
        inv = torch.tensor([1 / length, 1 / length, 1 / heading_length, 1 / heading_length])
        self.register_buffer("freqs", torch.randn(dim, 4, generator=gen) * inv)
        self.register_buffer("phases", torch.rand(dim, generator=gen) * 2 * math.pi)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def embed(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Unstandardised descriptors ``(B, D)``: L2-normalised mean over valid fixes."""
        steps = torch.arange(features.shape[1], device=features.device)
        valid = (steps.unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1)
        pts = features[..., list(self.columns)]
        rff = torch.cos(pts @ self.freqs.T + self.phases).masked_fill(~valid, 0.0)
        mean = rff.sum(1) / lengths.clamp(min=1).unsqueeze(1).to(rff)
        return nn.functional.normalize(mean, dim=1)

    @torch.no_grad()
    def fit(self, features: torch.Tensor, lengths: torch.Tensor) -> None:
        """Fit the per-dimension mean and std on training windows.

        Raises:
            ValueError: No windows, or non-finite descriptors.
        """
        if len(features) == 0:
            raise ValueError("fitting the window descriptor needs at least one window")
        out = torch.cat(
            [
                self.embed(features[i : i + FIT_CHUNK], lengths[i : i + FIT_CHUNK])
                for i in range(0, len(features), FIT_CHUNK)
            ]
        )
        if not bool(torch.isfinite(out).all()):
            raise ValueError("window descriptors hold NaN or inf: check the features")
        self.mean.copy_(out.mean(0))
        self.std.copy_(out.std(0, unbiased=False).clamp(min=1e-6))
        logger.info("window descriptor: %d features fitted on %d windows", self.dim, len(out))

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Standardised descriptors ``(B, D)`` times ``weight``."""
        return (self.embed(features, lengths) - self.mean) / self.std * self.weight
