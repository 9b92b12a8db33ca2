"""Line-free pseudo-classes of a window: *where* the vehicle is and *which way* it goes.

An auxiliary target for a route classifier's encoder: the nearest of ``C`` k-means
centres of ``(x, y, w·heading_sin, w·heading_cos)`` at a window's last fix, fitted on
the training windows. Predicting it jointly with the line keeps the features encoding
place and direction at a fine resolution, independent of the line labels, so lines the
encoder never saw land in regions of their own instead of on top of the old lines.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)


class PlaceTargets(nn.Module):
    """Map windows ``(B, K, F)`` with lengths ``(B,)`` to place × heading cells ``(B,)``.

    Args:
        n_cells: Number of cells ``C`` (k-means centres).
        columns: Feature indices of ``x, y, heading_sin, heading_cos``.
        heading_weight: Weight of the heading against the position (scaled features).
        path: Also use the window's first position (``x, y``): cells then tell the
            stretch of street the window covered, not only where it ends.
    """

    centres: torch.Tensor

    def __init__(
        self,
        n_cells: int,
        columns: tuple[int, int, int, int],
        heading_weight: float = 1.0,
        path: bool = False,
    ) -> None:
        super().__init__()
        if n_cells < 2:
            raise ValueError(f"need at least 2 cells, got {n_cells}")
        self.n_cells = n_cells
        self.columns = columns
        self.heading_weight = heading_weight
        self.path = path
        self.register_buffer("centres", torch.zeros(n_cells, 6 if path else 4))

    def points(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, 4)``: position and weighted heading at each window's last valid fix.

        With ``path``, ``(B, 6)``: the first fix's position appended.
        """
        last = features[torch.arange(len(lengths), device=features.device), lengths - 1]
        pts = last[:, list(self.columns)]
        pts = pts * pts.new_tensor([1.0, 1.0, self.heading_weight, self.heading_weight])
        if self.path:
            pts = torch.cat([pts, features[:, 0, list(self.columns[:2])]], dim=1)
        return pts

    @torch.no_grad()
    def fit(
        self, features: torch.Tensor, lengths: torch.Tensor, *, iters: int = 25, seed: int = 0
    ) -> None:
        """Fit the centres by k-means (k-means++ seeding, seeded).

        Raises:
            ValueError: Fewer windows than cells, or non-finite features.
        """
        pts = self.points(features, lengths).double()
        if len(pts) < self.n_cells or not bool(torch.isfinite(pts).all()):
            raise ValueError(
                f"fitting {self.n_cells} cells needs as many finite windows, got {len(pts)}"
            )
        centres = _seed_centres(pts, self.n_cells, torch.Generator().manual_seed(seed))
        for _ in range(iters):
            assign = torch.cdist(pts, centres).argmin(dim=1)
            sums = torch.zeros_like(centres).index_add_(0, assign, pts)
            counts = torch.bincount(assign, minlength=self.n_cells).unsqueeze(1)
            centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
        self.centres.copy_(centres.float())
        used = int((torch.bincount(assign, minlength=self.n_cells) > 0).sum())
        logger.info("place targets: %d cells fitted on %d windows (%d used)", self.n_cells,
                    len(pts), used)  # fmt: skip

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Cell index ``(B,)`` int64 of each window."""
        return torch.cdist(self.points(features, lengths), self.centres).argmin(dim=1)


def _seed_centres(pts: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each next centre drawn with probability ∝ squared distance."""
    first = int(torch.randint(len(pts), (1,), generator=gen))
    centres = [pts[first]]
    dist = ((pts - pts[first]) ** 2).sum(1)
    for _ in range(1, k):
        weights = dist if float(dist.sum()) > 0 else torch.ones_like(dist)
        pick = int(torch.multinomial(weights, 1, generator=gen))
        centres.append(pts[pick])
        dist = torch.minimum(dist, ((pts - pts[pick]) ** 2).sum(1))
    return torch.stack(centres).clone()
