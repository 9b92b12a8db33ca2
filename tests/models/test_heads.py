import pytest
import torch

from transitnet.models.heads import (
    BiasCorrection,
    QuantileCalibration,
    QuantileForecastHead,
    fit_bic,
    fit_quantile_calibration,
)


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


def _skewed_forecasts(n, gen):
    """Median-unbiased forecasts whose raw P10/P90 band is far too narrow (and skewed)."""
    mid = (torch.rand(n, 1, generator=gen) * 500 + 100) * torch.tensor([1.0, 2.0, 3.0])
    pred = torch.stack([mid - 20, mid, mid + 30], dim=2)
    noise = torch.randn(n, 3, generator=gen) * torch.tensor([50.0, 100.0, 200.0])
    skew = torch.where(noise > 0, noise * 2.0, noise)  # longer upper tail
    return pred, mid + skew


def test_calibration_fitted_on_held_out_data_hits_each_level_on_fresh_data():
    gen = torch.Generator().manual_seed(0)
    pred, target = _skewed_forecasts(4000, gen)
    mask = torch.ones_like(target, dtype=torch.bool)
    mask[::7, 2] = False  # unobserved targets are ignored
    target[::7, 2] = float("nan")
    scales = fit_quantile_calibration(pred, target, mask, (0.1, 0.5, 0.9))
    assert scales.shape == (3, 3) and (scales[:, 1] == 1).all()
    assert (scales[:, [0, 2]] > 1).all()
    cal = QuantileCalibration(3, 3)
    cal.set_scales(scales)
    fresh, fresh_y = _skewed_forecasts(20000, gen)
    out = cal(fresh)
    below = (fresh_y < out[..., 0]).float().mean(0)
    above = (fresh_y > out[..., 2]).float().mean(0)
    assert torch.allclose(below, torch.full((3,), 0.1), atol=0.015)
    assert torch.allclose(above, torch.full((3,), 0.1), atol=0.015)
    raw_inside = ((fresh_y >= fresh[..., 0]) & (fresh_y <= fresh[..., 2])).float().mean()
    assert raw_inside < 0.5  # the raw band was far off 80 %
    assert torch.equal(out[..., 1], fresh[..., 1])  # the median never moves
    assert (out >= 0).all() and (out.diff(dim=1) >= 0).all() and (out.diff(dim=2) >= 0).all()


def test_identity_calibration_returns_its_input_bit_for_bit():
    cal = QuantileCalibration(5, 3)
    pred = torch.rand(8, 5, 3).cumsum(1).cumsum(2)
    assert cal.is_identity and cal(pred) is pred
    narrow = torch.ones(5, 3)
    narrow[:, 0] = 0.0  # a scale of 0 collapses P10 onto the median: still monotone
    cal.set_scales(narrow)
    out = cal(pred)
    assert torch.equal(out[..., 0], out[..., 1]) and not cal.is_identity


def test_calibration_rejects_bad_inputs():
    cal = QuantileCalibration(2, 3)
    with pytest.raises(ValueError, match="finite"):
        cal.set_scales(torch.full((2, 3), float("nan")))
    with pytest.raises(ValueError, match="finite"):
        cal.set_scales(torch.ones(3, 3))
    with pytest.raises(ValueError, match="≥ 0"):
        cal.set_scales(-torch.ones(2, 3))
    with pytest.raises(ValueError):
        QuantileCalibration(0, 3)
    pred = torch.rand(4, 2, 3)
    with pytest.raises(ValueError, match="need pred"):
        fit_quantile_calibration(
            pred, torch.rand(4, 3), torch.ones(4, 3, dtype=torch.bool), (0.1, 0.5, 0.9)
        )
    with pytest.raises(ValueError, match="levels"):
        fit_quantile_calibration(
            pred, torch.rand(4, 2), torch.ones(4, 2, dtype=torch.bool), (0.1, 0.9)
        )
    # a horizon with no observed target keeps scale 1
    mask = torch.zeros(4, 2, dtype=torch.bool)
    mask[:, 0] = True
    scales = fit_quantile_calibration(pred, torch.rand(4, 2), mask, (0.1, 0.5, 0.9))
    assert (scales[1] == 1).all()
