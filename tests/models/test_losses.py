import pytest
import torch

from transitnet.models.losses import pinball_loss

Q = (0.1, 0.5, 0.9)


def test_pinball_values_by_hand():
    pred = torch.zeros(1, 2, 3)
    target = torch.tensor([[1.0, -1.0]])
    # u=+1: tau*u -> 0.1, 0.5, 0.9; u=-1: (tau-1)*u -> 0.9, 0.5, 0.1; mean over 6 = 0.5
    assert pinball_loss(pred, target, None, Q).item() == pytest.approx(0.5)
    only_first = torch.tensor([[True, False]])
    assert pinball_loss(pred, target, only_first, Q).item() == pytest.approx(0.5)
    assert pinball_loss(pred, target, only_first, (0.9,) * 3).item() == pytest.approx(0.9)


def test_masked_targets_may_be_nan_and_no_valid_target_gives_zero_with_grad():
    pred = torch.zeros(2, 2, 3, requires_grad=True)
    target = torch.tensor([[1.0, float("nan")], [2.0, float("nan")]])
    mask = torch.tensor([[True, False], [True, False]])
    loss = pinball_loss(pred, target, mask, Q)
    assert torch.isfinite(loss)
    loss.backward()
    assert (pred.grad[:, 1] == 0).all() and (pred.grad[:, 0] != 0).all()
    empty = pinball_loss(pred, target, torch.zeros_like(mask), Q)
    assert empty.item() == 0.0 and empty.requires_grad


def test_minimiser_is_the_empirical_quantile():
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(2000, 1, generator=gen).exp()
    q = torch.zeros(1, 1, 3, requires_grad=True)
    opt = torch.optim.Adam([q], lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        pinball_loss(q.expand(2000, 1, 3), target, None, Q).backward()
        opt.step()
    expected = torch.quantile(target, torch.tensor(Q))
    torch.testing.assert_close(q.detach().view(3), expected, atol=0.05, rtol=0.05)


@pytest.mark.parametrize(
    ("pred", "target", "mask", "levels"),
    [
        (torch.zeros(2, 3), torch.zeros(2, 3), None, Q),
        (torch.zeros(2, 3, 3), torch.zeros(2, 4), None, Q),
        (torch.zeros(2, 3, 3), torch.zeros(2, 3), None, (0.1, 0.5)),
        (torch.zeros(2, 3, 3), torch.zeros(2, 3), None, (0.0, 0.5, 1.0)),
        (torch.zeros(2, 3, 3), torch.zeros(2, 3), torch.ones(3, 2, dtype=torch.bool), Q),
        (torch.zeros(1, 1, 3), torch.tensor([[float("nan")]]), None, Q),
    ],
)
def test_bad_inputs_raise(pred, target, mask, levels):
    with pytest.raises(ValueError):
        pinball_loss(pred, target, mask, levels)
