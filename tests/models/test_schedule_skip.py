import numpy as np
import pytest
import torch

from transitnet.models.forecaster import ForecastNet
from transitnet.models.heads import QuantileForecastHead
from transitnet.models.schedule_skip import (
    ScheduleSkip,
    build_interpolation,
    compute_skip_offsets,
)

OFFSETS = (60.0, 120.0, 300.0)


def test_interpolation_is_exact_at_the_offsets_and_linear_between() -> None:
    ahead = np.array([0.0, 300.0, 500.0, 1400.0])  # [0, a60, a120, a300]
    exact = ahead @ build_interpolation(OFFSETS, (60.0, 120.0, 300.0))
    np.testing.assert_allclose(exact, [300.0, 500.0, 1400.0])
    between = ahead @ build_interpolation(OFFSETS, (30.0, 210.0, 600.0))
    # half of 300; midway 500→1400; beyond the last offset: 1400 · 600/300
    np.testing.assert_allclose(between, [150.0, 950.0, 2800.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        build_interpolation((60.0, 60.0), (60.0,))


def _skip(horizons=(60.0, 120.0, 300.0)) -> ScheduleSkip:
    # context columns: [noise, a60, a120, a300, has]
    skip = ScheduleSkip(horizons, OFFSETS, [1, 2, 3], 4)
    skip.set_scale(np.array([0.0, 200.0, 400.0, 900.0, 0.5]), np.array([1.0, 50, 80, 300, 0.5]))
    return skip


def _scaled(raw: np.ndarray) -> torch.Tensor:
    mean = np.array([0.0, 200.0, 400.0, 900.0, 0.5])
    std = np.array([1.0, 50, 80, 300, 0.5])
    return torch.tensor((raw - mean) / std, dtype=torch.float32)


def test_skip_reads_the_schedule_back_from_the_scaled_context() -> None:
    raw = np.array([[7.0, 300.0, 500.0, 1400.0, 1.0], [7.0, 0.0, 0.0, 0.0, 0.0]])
    skip, has = _skip()(_scaled(raw))
    assert has.tolist() == [True, False]
    torch.testing.assert_close(skip[0], torch.tensor([300.0, 500.0, 1400.0]))
    assert (skip[1] == 0).all()
    with pytest.raises(ValueError, match="misses the schedule"):
        _skip().set_scale(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="ahead columns"):
        ScheduleSkip((60.0,), OFFSETS, [1, 2], 4)


def test_with_a_zero_correction_the_median_is_the_schedule() -> None:
    head = QuantileForecastHead(4, 3, 3, output_scale=1.0, step_weights=[240.0, 240.0, 720.0])
    torch.nn.init.zeros_(head.linear.weight)
    torch.nn.init.zeros_(head.linear.bias)
    skip = torch.tensor([[300.0, 500.0, 1400.0], [0.0, 0.0, 2.0], [50.0, 80.0, 90.0]])
    has = torch.tensor([True, True, False])
    out = head(torch.zeros(3, 4), compute_skip_offsets(skip, has, head.step_units))
    torch.testing.assert_close(out[0, :, 1], skip[0], rtol=1e-4, atol=0.5)
    # a schedule that (nearly) does not move: steps floored at MIN_STEP units (0.24 m)
    torch.testing.assert_close(out[1, :, 1], skip[1], rtol=0.0, atol=1.0)
    # no schedule: the head's prior (softplus(0) · w per step) for the median
    prior = torch.log(torch.tensor(2.0)) * torch.tensor([240.0, 480.0, 1200.0])
    torch.testing.assert_close(out[2, :, 1], prior)
    assert (out[:, :, 0] <= out[:, :, 1]).all() and (out[:, :, 1] <= out[:, :, 2]).all()


def test_the_head_stays_monotone_whatever_the_offsets() -> None:
    torch.manual_seed(0)
    for n_q in (1, 3, 5):
        head = QuantileForecastHead(5, 4, n_q)
        torch.nn.init.normal_(head.linear.weight, std=5.0)
        out = head(torch.randn(64, 5), torch.randn(64, 4) * 20)
        assert (out >= 0).all()
        assert (out.diff(dim=1) >= 0).all() and (out.diff(dim=2) >= 0).all()
        band = out[..., -1] - out[..., 0]
        assert (band.diff(dim=1) >= -1e-3).all()  # the band never narrows


def test_net_with_skip_tracks_the_schedule_and_without_drops_its_inputs() -> None:
    torch.manual_seed(0)
    net = ForecastNet(3, 4, 2, OFFSETS, n_context=5, hidden_dim=8, schedule_skip=_skip())
    feats, lengths, ids = torch.randn(2, 3, 2), torch.tensor([3, 2]), torch.tensor([1, 2])
    near = _scaled(np.array([[0.0, 300.0, 500.0, 1400.0, 1.0]] * 2))
    far = _scaled(np.array([[0.0, 600.0, 1000.0, 2800.0, 1.0]] * 2))
    with torch.no_grad():
        gap = net(feats, lengths, ids, far) - net(feats, lengths, ids, near)
    assert (gap[:, -1, 0] > 1000).all()  # the schedule enters through the skip
    assert "schedule_skip.mean" in net.state_dict()
    dropped = ForecastNet(3, 4, 2, OFFSETS, n_context=5, hidden_dim=8, drop_context=[1, 2, 3, 4])
    assert dropped.trunk[0].in_features == 8 + 4 + 1
    with torch.no_grad():
        torch.testing.assert_close(
            dropped(feats, lengths, ids, near), dropped(feats, lengths, ids, far)
        )
    with pytest.raises(ValueError, match="drop_context"):
        ForecastNet(3, 4, 2, OFFSETS, n_context=5, drop_context=[5])
