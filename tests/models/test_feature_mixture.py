import pytest
import torch

from transitnet.models.feature_mixture import fit_feature_mixture


def _two_blobs(n_a: int = 60, n_b: int = 40) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.cat(
        [torch.randn(n_a, 6, generator=gen) + 8.0, 0.5 * torch.randn(n_b, 6, generator=gen) - 8.0]
    )


def test_sub_centres_find_the_parts_of_a_class_and_their_own_spread():
    centres, stds, weights = fit_feature_mixture(_two_blobs(), 2)
    order = centres[:, 0].argsort(descending=True)
    centres, stds, weights = centres[order], stds[order], weights[order]
    assert torch.allclose(centres[0], torch.full((6,), 8.0), atol=0.5)
    assert torch.allclose(centres[1], torch.full((6,), -8.0), atol=0.5)
    assert torch.allclose(weights, torch.tensor([0.6, 0.4]))
    # each part's own spread (shrunk 10 % toward the pooled one), not the class's ±8 blur
    assert 0.8 < float(stds[0].mean()) < 1.2 and 0.4 < float(stds[1].mean()) < 0.8


def test_refits_are_reproducible_and_k_never_exceeds_the_distinct_windows():
    f = _two_blobs()
    first, again = fit_feature_mixture(f, 8), fit_feature_mixture(f, 8)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert first[0].shape == (8, 6) and first[2].sum().item() == pytest.approx(1.0)
    one = fit_feature_mixture(f[:1], 8)
    assert one[0].shape == (1, 6) and torch.equal(one[1], torch.zeros(1, 6))
    same = fit_feature_mixture(torch.ones(5, 3), 4)  # one distinct window: one part
    assert same[0].shape == (1, 3) and same[2].tolist() == [1.0]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="components"):
        fit_feature_mixture(torch.zeros(0, 4), 2)
    with pytest.raises(ValueError, match="components"):
        fit_feature_mixture(torch.zeros(3, 4), 0)
