import pytest
import torch

from transitnet.models.heads import BiasCorrection, QuantileForecastHead, fit_bic


def test_quantile_head_is_monotone_in_horizon_and_quantile_for_random_weights():
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        head = QuantileForecastHead(6, n_horizons=5, n_quantiles=3, output_scale=50.0)
        with torch.no_grad():
            head.linear.weight.normal_(0, 3.0, generator=gen)
            head.linear.bias.normal_(0, 3.0, generator=gen)
        out = head(torch.randn(64, 6, generator=gen) * 10)
        assert out.shape == (64, 5, 3)
        assert (out >= 0).all()
        assert (out.diff(dim=1) >= 0).all()  # later horizon, farther
        assert (out.diff(dim=2) >= 0).all()  # P10 <= P50 <= P90
        width = out[..., -1] - out[..., 0]
        assert (
            width.diff(dim=1) >= -1e-6 * out.max()
        ).all()  # the band never narrows (to rounding)


def test_quantile_head_rejects_bad_sizes():
    with pytest.raises(ValueError):
        QuantileForecastHead(4, 0, 3)
    with pytest.raises(ValueError):
        QuantileForecastHead(4, 2, 3, output_scale=0.0)


def _biased_logits(n, gen, shift=4.0):
    """4 classes (2 new): class signal + noise, new-class logits inflated by ``shift``."""
    targets = torch.arange(4).repeat(n // 4)
    logits = torch.randn(n, 4, generator=gen) + 3.0 * torch.eye(4)[targets]
    logits[:, 2:] += shift
    return logits, targets


def test_fit_bic_removes_the_bias_toward_new_classes():
    gen = torch.Generator().manual_seed(0)
    new_mask = torch.tensor([False, False, True, True])
    held_out, held_targets = _biased_logits(80, gen)
    test, test_targets = _biased_logits(2000, gen)
    bic = fit_bic(held_out, held_targets, new_mask)
    assert bic.beta.item() < -2.0
    corrected = bic(test).detach()
    assert torch.equal(corrected[:, :2], test[:, :2])  # old logits untouched
    acc_before = (test.argmax(1) == test_targets).float().mean()
    acc_after = (corrected.argmax(1) == test_targets).float().mean()
    assert acc_before < 0.6 and acc_after > 0.85


def test_fit_bic_rejects_bad_inputs():
    mask = torch.tensor([False, True])
    with pytest.raises(ValueError):
        fit_bic(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), mask)
    with pytest.raises(ValueError):
        fit_bic(torch.zeros(3, 2), torch.tensor([0, 1, 2]), mask)
    with pytest.raises(ValueError):
        fit_bic(torch.full((2, 2), float("nan")), torch.tensor([0, 1]), mask)
    with pytest.raises(ValueError):
        fit_bic(torch.zeros(2, 3), torch.tensor([0, 1]), mask)
    identity = BiasCorrection(mask)
    logits = torch.randn(5, 2)
    assert torch.equal(identity(logits), logits)
