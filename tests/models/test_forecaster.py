import numpy as np
import pandas as pd
import pytest
import torch

from transitnet.datasets.vocab import LineVocabulary
from transitnet.models.forecaster import ForecastNet, add_lines
from transitnet.models.losses import pinball_loss

HORIZONS = (60.0, 120.0, 300.0)
QUANTILES = (0.1, 0.5, 0.9)
INITS = ["unknown", "mean", "mean_cov", "similar:L2", "random"]


def _net(num_lines, encoder="gru", dropout=0.0, n_context=2, n_features=4):
    torch.manual_seed(0)
    return ForecastNet(
        num_lines,
        8,
        n_features,
        HORIZONS,
        QUANTILES,
        encoder=encoder,
        hidden_dim=16,
        n_context=n_context,
        dropout=dropout,
        num_layers=2,
    )


def _batch(line_ids, k=6, n_features=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    b = len(line_ids)
    features = torch.randn(b, k, n_features, generator=gen)
    lengths = torch.randint(1, k + 1, (b,), generator=gen)
    return features, lengths, torch.tensor(line_ids), torch.randn(b, 2, generator=gen)


def _snapshot(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("encoder", ["gru", "transformer", "tcn"])
@pytest.mark.parametrize("init", INITS)
def test_zero_shot_growth_leaves_old_line_outputs_identical(encoder, init):
    vocab = LineVocabulary(["L1", "L2", "L3"])
    net = _net(len(vocab), encoder).eval()
    batch = _batch([1, 2, 3, 0, 2, 1])
    before = net(*batch)
    rows = add_lines(
        net, vocab, ["N1", "N2"], init=init, generator=torch.Generator().manual_seed(1)
    )
    assert rows == [4, 5] and net.line_embedding.num_lines == len(vocab) == 6
    after = net(*batch)
    assert (after - before).abs().max() <= 1e-6 and torch.equal(after, before)
    new = net(*_batch([4, 5, 4]))
    assert (
        torch.isfinite(new).all() and (new.diff(dim=1) >= 0).all() and (new.diff(dim=2) >= 0).all()
    )
    if init == "unknown":
        assert torch.equal(new, net(*_batch([0, 0, 0])))


def test_row_only_training_with_adamw_changes_only_the_new_rows():
    vocab = LineVocabulary(["L1", "L2", "L3"])
    net = _net(len(vocab), dropout=0.2)
    add_lines(net, vocab, ["N1"], init="mean")
    frozen = _snapshot(net)
    old_batch = _batch([1, 2, 3, 0, 1, 2, 3, 0], seed=1)
    net.eval()
    before = net(*old_batch)
    params = net.freeze_except_new_rows()
    opt = torch.optim.AdamW(params, lr=0.1, weight_decay=0.5, betas=(0.9, 0.999))
    net.train()
    gen = torch.Generator().manual_seed(2)
    for step in range(5):  # mixed batches: old-line samples push gradients into shared weights
        features, lengths, line_ids, context = _batch([4, 4, 1, 2, 4, 3], seed=10 + step)
        target = torch.rand(6, 3, generator=gen).cumsum(1) * 500
        loss = pinball_loss(net(features, lengths, line_ids, context), target, None, QUANTILES)
        opt.zero_grad()
        loss.backward()
        opt.step()
    state = net.state_dict()
    rows, old_rows = state["line_embedding.table.rows"], frozen["line_embedding.table.rows"]
    assert torch.equal(rows[:4], old_rows[:4]) and not torch.equal(rows[4], old_rows[4])
    for name, value in frozen.items():
        if name != "line_embedding.table.rows":
            assert torch.equal(state[name], value), name
    net.eval()
    assert torch.equal(net(*old_batch), before)


def test_without_the_split_adamw_moves_rows_that_get_no_gradient():
    """Why the split table: zeroing the old rows' gradient is not enough under AdamW."""
    table = torch.nn.Parameter(torch.ones(4, 3))
    table.register_hook(lambda g: g * torch.tensor([[0.0], [0.0], [0.0], [1.0]]))
    opt = torch.optim.AdamW([table], lr=0.1, weight_decay=0.5)
    for _ in range(3):
        opt.zero_grad()
        table.sum().backward()
        opt.step()
    assert not torch.equal(table[:3].detach(), torch.ones(3, 3))


def test_add_lines_validates_before_changing_anything():
    vocab = LineVocabulary(["L1", "L2"])
    net = _net(len(vocab))
    before = _snapshot(net)
    with pytest.raises(ValueError, match="similar"):
        add_lines(net, vocab, ["N1"], init="similar:nope")
    with pytest.raises(TypeError):
        add_lines(net, vocab, ["N1", 7])
    with pytest.raises(ValueError, match="unknown init"):
        add_lines(net, vocab, ["N1"], init="nearest")
    assert len(vocab) == 3 and net.line_embedding.num_lines == 3
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert add_lines(net, vocab, ["L2"]) == [2] and net.line_embedding.num_lines == 3
    add_lines(net, vocab, ["N1"], init="similar:L1, L2")
    weight = net.line_embedding.weight
    assert torch.allclose(weight[3], weight[1:3].mean(0))
    vocab.add(["N2"])
    with pytest.raises(ValueError, match="out of sync"):
        add_lines(net, vocab, ["N3"])


def test_forward_and_constructor_reject_bad_inputs():
    net = _net(3)
    features, lengths, line_ids, context = _batch([1, 2])
    with pytest.raises(ValueError, match="context"):
        net(features, lengths, line_ids)
    with pytest.raises(ValueError, match="context"):
        net(features, lengths, line_ids, context[:, :1])
    with pytest.raises(ValueError, match="NaN"):
        net(features, lengths, line_ids, torch.full_like(context, float("nan")))
    with pytest.raises(ValueError, match="line_ids"):
        net(features, lengths, torch.tensor([1, 2, 1]), context)
    with pytest.raises(IndexError):
        net(features, lengths, torch.tensor([1, 3]), context)
    for horizons, quantiles in [((60, 30), QUANTILES), ((), QUANTILES), (HORIZONS, (0.5, 1.0))]:
        with pytest.raises(ValueError):
            ForecastNet(3, 4, 4, horizons, quantiles)
    assert _net(3, n_context=0)(features, lengths, line_ids).shape == (2, 3, 3)


# ---- real data: Capital Metro trajectories -------------------------------------------------

AUSTIN = "austin-capmetro/vehicle_positions"


def read_austin_windows(path, k=6, stride=3):
    """Past-fix windows from one Austin day: features, lengths, route ids, end positions.

    Features per fix: minutes since the previous fix, east/north displacement (km) since
    it, and east/north position (10 km) relative to the day's centre. Windows end at every
    ``stride``-th fix of a trip and hold up to ``k`` fixes (fewer at a trip's start).
    """
    df = pd.read_csv(path, dtype={"route_id": str, "trip_id": str, "vehicle_id": str})
    df = df.dropna(subset=["route_id", "trip_id"])
    df = df[(df.latitude.abs() > 1) & (df.longitude.abs() > 1)]
    df["t"] = (
        pd.to_datetime(df.timestamp, utc=True) - pd.Timestamp("1970-01-01", tz="UTC")
    ) // pd.Timedelta("1s")
    df = df.drop_duplicates(["trip_id", "t"]).sort_values(["trip_id", "t"])
    lat0, lon0 = df.latitude.mean(), df.longitude.mean()
    x = (df.longitude - lon0).to_numpy() * np.cos(np.radians(lat0)) * 111.32
    y = (df.latitude - lat0).to_numpy() * 110.54
    same = (df.trip_id == df.trip_id.shift()).to_numpy()
    step = lambda a: np.where(same, a - np.roll(a, 1), 0.0)  # noqa: E731
    fix = np.stack([step(df.t.to_numpy() / 60.0), step(x), step(y), x / 10, y / 10], axis=1)
    starts = df.groupby("trip_id", sort=False).cumcount().to_numpy()
    ends = np.flatnonzero(starts % stride == stride - 1)
    lengths = np.minimum(starts[ends] + 1, k)
    idx = ends[:, None] - (lengths[:, None] - 1) + np.arange(k)[None, :]
    valid = np.arange(k)[None, :] < lengths[:, None]
    features = np.where(valid[..., None], fix[np.where(valid, idx, 0)], 0.0)
    return {
        "features": torch.tensor(features, dtype=torch.float32),
        "lengths": torch.tensor(lengths),
        "route_id": df.route_id.to_numpy()[ends],
        "trip_id": df.trip_id.to_numpy()[ends],
        "hour": pd.to_datetime(df.timestamp.to_numpy()[ends], utc=True).hour.to_numpy(),
    }


@pytest.mark.real_data
def test_real_new_austin_lines_get_forecasts_then_grow_without_forgetting(shared_data):
    """Lines run in March 2017 but not on 2016-11-24: unknown row first, then their own rows."""
    old_routes = pd.read_csv(shared_data / AUSTIN / "2016-11-24.csv", dtype=str)["route_id"]
    vocab = LineVocabulary(old_routes.dropna().drop_duplicates())
    w = read_austin_windows(shared_data / AUSTIN / "2017-03-16.csv")
    keep = torch.arange(len(w["lengths"]))[::4]  # ~2,300 windows keeps the test fast
    features, lengths = w["features"][keep], w["lengths"][keep]
    routes = w["route_id"][keep.numpy()]
    net = _net(len(vocab), n_context=0, n_features=5).eval()

    line_ids = vocab.encode_tensor(routes)
    unseen = line_ids == 0
    assert unseen.sum() > 50 and lengths.min() >= 1 and lengths.max() == 6
    before = net(features, lengths, line_ids)
    assert torch.isfinite(before).all() and (before.diff(dim=1) >= 0).all()

    new_keys = vocab.missing(routes)
    add_lines(net, vocab, new_keys, init="mean")
    grown_ids = vocab.encode_tensor(routes)
    assert (grown_ids[unseen] >= len(vocab) - len(new_keys)).all()
    after = net(features, lengths, grown_ids)
    assert torch.equal(after[~unseen], before[~unseen])

    params = net.freeze_except_new_rows()
    opt = torch.optim.AdamW(params, lr=0.05, weight_decay=0.1)
    target = features[:, :, 1:3].norm(dim=2).sum(1, keepdim=True) * 1000 * torch.tensor([0.5, 1, 2])
    for _ in range(3):
        opt.zero_grad()
        pinball_loss(net(features, lengths, grown_ids), target, None, QUANTILES).backward()
        opt.step()
    trained = net(features, lengths, grown_ids)
    assert torch.equal(trained[~unseen], before[~unseen])
    assert not torch.equal(trained[unseen], after[unseen])


def test_trunk_depth_encoder_width_and_ignored_context():
    torch.manual_seed(0)
    net = ForecastNet(
        4, 8, 4, HORIZONS, QUANTILES, hidden_dim=32, encoder_dim=8, trunk_layers=3,
        n_context=2, ignore_context=[1],
    ).eval()  # fmt: skip
    assert net.encoder.hidden_dim == 8
    assert sum(isinstance(m, torch.nn.Linear) for m in net.trunk) == 3
    features, lengths, line_ids, context = _batch([1, 2, 3])
    other = context.clone()
    other[:, 1] = 1e3  # an ignored feature cannot change the forecast
    assert torch.equal(
        net(features, lengths, line_ids, context), net(features, lengths, line_ids, other)
    )
    other[:, 0] += 1.0
    assert not torch.equal(
        net(features, lengths, line_ids, context), net(features, lengths, line_ids, other)
    )
    assert "context_keep" not in net.state_dict()  # rebuilt from the arguments, not stored
    with pytest.raises(ValueError, match="ignore_context"):
        ForecastNet(4, 8, 4, HORIZONS, QUANTILES, n_context=2, ignore_context=[2])
    with pytest.raises(ValueError, match="trunk_layers"):
        ForecastNet(4, 8, 4, HORIZONS, QUANTILES, trunk_layers=0)
