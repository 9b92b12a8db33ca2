import pytest
import torch

from transitnet.models.place_targets import PlaceTargets


def _windows(points):
    """Windows of 3 fixes whose last valid fix (length 2) holds ``points`` (x, y, sin, cos)."""
    feats = torch.zeros(len(points), 3, 6)
    feats[:, 1, [0, 1, 4, 5]] = points
    feats[:, 2] = 99.0  # padding past the length: must not count
    return feats, torch.full((len(points),), 2)


def test_cells_separate_places_and_headings():
    gen = torch.Generator().manual_seed(0)
    corners = torch.tensor([[0.0, 0, 1, 0], [0, 0, -1, 0], [5, 5, 1, 0], [5, 5, -1, 0]])
    pts = corners.repeat_interleave(50, 0) + 0.05 * torch.randn(200, 4, generator=gen)
    feats, lengths = _windows(pts)
    places = PlaceTargets(4, (0, 1, 4, 5))
    places.fit(feats, lengths)
    cells = places(feats, lengths)
    groups = cells.view(4, 50)
    assert all(len(set(g.tolist())) == 1 for g in groups)  # one cell per place x heading
    assert len(set(groups[:, 0].tolist())) == 4  # same place, opposite heading: different
    loaded = PlaceTargets(4, (0, 1, 4, 5))
    loaded.load_state_dict(places.state_dict())
    assert torch.equal(loaded(feats, lengths), cells)


def test_path_cells_tell_where_the_window_started():
    feats, lengths = _windows(torch.zeros(40, 4))
    feats[20:, 0, :2] = 7.0  # same end, other start
    places = PlaceTargets(2, (0, 1, 4, 5), path=True)
    places.fit(feats, lengths)
    assert places.centres.shape == (2, 6)
    cells = places(feats, lengths)
    assert len(set(cells[:20].tolist())) == 1 and set(cells[:20].tolist()) != set(
        cells[20:].tolist()
    )
    assert PlaceTargets(2, (0, 1, 4, 5)).points(feats, lengths).shape == (40, 4)


def test_bad_fits_raise():
    feats, lengths = _windows(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="needs as many"):
        PlaceTargets(8, (0, 1, 4, 5)).fit(feats, lengths)
    feats[0, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        PlaceTargets(2, (0, 1, 4, 5)).fit(feats, lengths)
    with pytest.raises(ValueError, match="at least 2"):
        PlaceTargets(1, (0, 1, 4, 5))
