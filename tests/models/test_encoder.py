import pytest
import torch

from transitnet.models.encoder import TrajectoryEncoder

KINDS = ["gru", "transformer", "tcn"]


def _encoder(kind, n_features=3, hidden=8):
    torch.manual_seed(0)
    return TrajectoryEncoder(n_features, hidden, kind=kind, num_layers=2, n_heads=2).eval()


def _padded(seqs, k, fill=float("nan")):
    out = torch.full((len(seqs), k, seqs[0].shape[1]), fill)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out, torch.tensor([len(s) for s in seqs])


@pytest.mark.parametrize("kind", KINDS)
def test_padding_does_not_leak(kind):
    enc = _encoder(kind)
    gen = torch.Generator().manual_seed(1)
    seqs = [torch.randn(n, 3, generator=gen) for n in (5, 1, 3, 4)]
    short = enc(*_padded(seqs, 5))
    long = enc(*_padded(seqs, 10, fill=1e6))
    assert short.shape == (4, 8) and torch.isfinite(short).all()
    torch.testing.assert_close(short, long, rtol=0, atol=1e-6)
    alone = enc(*_padded(seqs[2:3], 7, fill=0.0))  # batch composition does not matter either
    torch.testing.assert_close(alone[0], short[2], rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_output_depends_on_valid_steps_and_gradients_skip_padding(kind):
    enc = _encoder(kind)
    x = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(2), requires_grad=True)
    lengths = torch.tensor([6, 4])
    out = enc(x, lengths)
    assert not torch.allclose(out[0], out[1])
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(3))).sum().backward()
    assert (x.grad[1, 4:] == 0).all() and (x.grad[1, :4] != 0).any()


def test_bad_inputs_raise_clear_errors():
    enc = _encoder("gru")
    x = torch.zeros(2, 4, 3)
    with pytest.raises(ValueError, match="features must be"):
        enc(torch.zeros(2, 4, 5), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="lengths must lie"):
        enc(x, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="lengths must lie"):
        enc(x, torch.tensor([5, 2]))
    with pytest.raises(ValueError, match="lengths must be integer"):
        enc(x, torch.tensor([1.0, 2.0]))
    x[1, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        enc(x, torch.tensor([4, 2]))
    with pytest.raises(ValueError, match="kind"):
        TrajectoryEncoder(3, 8, kind="lstm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_heads"):
        TrajectoryEncoder(3, 6, kind="transformer", n_heads=4)
    with pytest.raises(ValueError, match="max_len"):
        TrajectoryEncoder(3, 8, kind="transformer", n_heads=2, max_len=3)(x, torch.tensor([1, 1]))
