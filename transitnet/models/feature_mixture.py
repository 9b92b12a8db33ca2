"""Sub-centres of a class's features: a diagonal Gaussian mixture that stands in for old data.

One Gaussian per class (mean and covariance) describes a line whose windows spread along
its whole route as a blur around the route's average window: most of its samples sit
near the mean, few where a real window sits. A new line's imprinted row matches real
windows of the old lines that share its road far more often than such samples, so a
claim rate measured on them is too low. A few k-means sub-centres per class, each with
its own per-dimension spread, place samples along the route instead (the
prototype-augmentation idea of PASS/FeTrIL with several prototypes per class, as in
sub-centre ArcFace). Stored per class: ``k`` centres, ``k`` std vectors and ``k``
weights, ``k·(2H + 1)`` numbers, against ``H²`` for a full covariance.

Measured, the idea did not hold: on validation (two seeds, Austin and Auckland) new rows
trained against sub-centre samples avoided them and still took real old windows, and the
old-class drop grew (``benchmarks/notes/route-classifier-gate.md``). The statistics are
still recorded (``stat_components``) and usable (``--old-stats mixture``); the default
draws from one Gaussian per class.
"""

from __future__ import annotations

import torch

#: Lloyd iterations of the k-means fit (the fit converges well before on a class's windows).
ITERATIONS = 25


def fit_feature_mixture(
    features: torch.Tensor, components: int, *, shrink: float = 0.1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fit ``k = min(components, n)`` sub-centres to one class's features ``(n, H)``.

    k-means (k-means++ seeding from a seeded generator, so refits are reproducible),
    then each component's per-dimension std, its variance shrunk by ``shrink`` toward
    the variance pooled over the class's components (a component of one window still
    has a spread).

    Returns:
        ``(centres (k, H), stds (k, H), weights (k,))``; the weights are the share of
        the class's windows in each component and sum to 1.

    Raises:
        ValueError: no features, or ``components < 1``.
    """
    if features.ndim != 2 or len(features) == 0 or components < 1:
        raise ValueError(f"need features (n ≥ 1, H) and components ≥ 1, got {features.shape}")
    f = features.detach().double()
    k = min(components, len(f))
    gen = torch.Generator().manual_seed(seed)
    centres = _seed_centres(f, k, gen)
    for _ in range(ITERATIONS):
        assign = torch.cdist(f, centres).argmin(1)
        moved = torch.stack(
            [f[assign == c].mean(0) if bool((assign == c).any()) else centres[c] for c in range(k)]
        )
        if torch.equal(moved, centres):
            break
        centres = moved
    assign = torch.cdist(f, centres).argmin(1)
    counts = torch.bincount(assign, minlength=k).double()
    within = torch.stack(
        [
            f[assign == c].var(0, unbiased=False) if counts[c] > 1 else torch.zeros_like(f[0])
            for c in range(k)
        ]
    )
    pooled = (counts[:, None] * within).sum(0) / counts.sum()
    stds = ((1.0 - shrink) * within + shrink * pooled).sqrt()
    keep = counts > 0
    weights = counts[keep] / counts.sum()
    return centres[keep].float(), stds[keep].float(), weights.float()


def _seed_centres(f: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each next centre drawn with probability ∝ squared distance."""
    first = int(torch.randint(len(f), (1,), generator=gen))
    centres = [f[first]]
    d2 = ((f - f[first]) ** 2).sum(1)
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 0.0:  # fewer distinct windows than k: repeat (dropped as empty later)
            centres.append(f[0])
            continue
        nxt = int(torch.multinomial(d2 / total, 1, generator=gen))
        centres.append(f[nxt])
        d2 = torch.minimum(d2, ((f - f[nxt]) ** 2).sum(1))
    return torch.stack(centres)
