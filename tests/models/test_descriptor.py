import pytest
import torch

from transitnet.models.descriptor import WindowDescriptor

COLS = (0, 1, 4, 5)


def _windows(points, length=3):
    """Windows of 4 fixes, ``length`` valid, each valid fix at ``points`` (x, y, sin, cos)."""
    feats = torch.zeros(len(points), 4, 6)
    feats[:, :length][..., list(COLS)] = points.unsqueeze(1)
    feats[:, length:] = 99.0  # padding past the length: must not count
    return feats, torch.full((len(points),), length)


def _cos(a, b):
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def test_descriptor_tells_places_and_headings_apart_and_ignores_padding():
    gen = torch.Generator().manual_seed(0)
    corners = torch.tensor([[0.0, 0, 1, 0], [0, 0, -1, 0], [2, 2, 1, 0], [2, 2, -1, 0]])
    pts = corners.repeat_interleave(30, 0) + 0.01 * torch.randn(120, 4, generator=gen)
    feats, lengths = _windows(pts)
    geo = WindowDescriptor(256, COLS, length=0.2, heading_length=0.5)
    geo.fit(feats, lengths)
    out = geo(feats, lengths).view(4, 30, 256)
    assert out.shape == (4, 30, 256)
    assert torch.allclose(out.reshape(120, -1).mean(0), torch.zeros(256), atol=1e-4)
    same = _cos(out[:, :15], out[:, 15:]).min()  # same place and heading
    other = max(float(_cos(out[i], out[j]).max()) for i in range(4) for j in range(4) if i != j)
    assert same > 0.8 and other < 0.3, (same, other)
    padded, _ = _windows(pts, length=3)
    padded[:, 3] = -5.0  # other padding: same descriptor
    assert torch.allclose(geo(padded, lengths), geo(feats, lengths))


def test_descriptor_is_seeded_and_round_trips_through_the_state_dict():
    feats, lengths = _windows(torch.randn(20, 4, generator=torch.Generator().manual_seed(1)))
    a = WindowDescriptor(16, COLS, seed=3, weight=2.0)
    a.fit(feats, lengths)
    b = WindowDescriptor(16, COLS, seed=3, weight=2.0)
    assert torch.equal(a.freqs, b.freqs) and not torch.equal(a.mean, b.mean)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(feats, lengths), b(feats, lengths))
    assert not torch.equal(WindowDescriptor(16, COLS, seed=4).freqs, a.freqs)
    assert sorted(a.state_dict()) == ["freqs", "mean", "phases", "std"]


def test_bad_descriptor_settings_and_fits_raise():
    with pytest.raises(ValueError, match="dim ≥ 1"):
        WindowDescriptor(0, COLS)
    with pytest.raises(ValueError, match="positive length"):
        WindowDescriptor(8, COLS, length=0.0)
    geo = WindowDescriptor(8, COLS)
    feats, lengths = _windows(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="at least one window"):
        geo.fit(feats[:0], lengths[:0])
    feats[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        geo.fit(feats, lengths)
