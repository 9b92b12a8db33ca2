import pytest
import torch
from torch import nn

from transitnet.models.classifier import MASKED_LOGIT, ExtensibleClassifier

OLD = ["r1", "r2", "r3", "r4"]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _head(cosine=False, dim=8):
    head = ExtensibleClassifier(dim, OLD, cosine=cosine, generator=_gen())
    if cosine:
        with torch.no_grad():
            head.bias.base.normal_(0, 0.5, generator=_gen(5))  # non-trivial old biases
    return head


def _x(n=512, dim=8, scale=1.0, seed=1):
    return torch.randn(n, dim, generator=_gen(seed)) * scale


def test_mean_init_copies_the_mean_row_and_bias_and_keeps_old_logits():
    head = _head()
    x = _x()
    before = head(x).detach()
    assert head.add_classes(["n1", "n2"], init="mean") == [4, 5]
    w, b = head.weight.full().detach(), head.bias.full().detach()
    assert torch.allclose(w[4], w[:4].mean(0)) and torch.equal(w[4], w[5])
    assert torch.allclose(b[4:], b[:4].mean().expand(2))
    assert torch.equal(head(x)[:, :4], before)
    assert head.class_names == (*OLD, "n1", "n2") and head.index("n2") == 5


@pytest.mark.parametrize("cosine", [False, True])
@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0])
def test_low_bias_keeps_every_old_argmax(cosine, scale):
    head = _head(cosine)
    x = _x(4096, scale=scale)
    before = head(x).detach()
    head.add_classes(["n1", "n2", "n3"], init="low_bias", margin=0.5)
    after = head(x).detach()
    assert torch.equal(after.argmax(1), before.argmax(1))
    assert (after[:, 4:].max(1).values < before.max(1).values).all()


@pytest.mark.parametrize("init", ["mean", "random", "imprint"])
def test_masked_new_classes_keep_old_argmax_and_finite_loss(init):
    head = _head(cosine=True)
    x = _x()
    before = head(x).detach()
    feats = {"n1": _x(3, seed=7)} if init == "imprint" else None
    head.add_classes(["n1"], init=init, features=feats, mask=True, generator=_gen(3))
    after = head(x)
    assert (after[:, 4] == MASKED_LOGIT).all()
    assert torch.equal(after.argmax(1), before.argmax(1))
    loss = nn.functional.cross_entropy(after, torch.full((512,), 4))
    assert torch.isfinite(loss)
    head.set_active(["n1"])
    assert (head(x)[:, 4] > MASKED_LOGIT).all()


def test_imprint_is_the_normalised_class_mean_and_recognises_the_class():
    gen = _gen(4)
    centres = nn.functional.normalize(torch.randn(5, 16, generator=gen), dim=1)
    head = ExtensibleClassifier(16, OLD, cosine=True, scale=16.0)
    with torch.no_grad():
        head.weight.base.copy_(centres[:4])
    shots = centres[4] + 0.3 * torch.randn(5, 16, generator=gen)
    head.add_classes(["new"], init="imprint", features={"new": shots})
    expected = nn.functional.normalize(nn.functional.normalize(shots, dim=1).mean(0), dim=0)
    assert torch.allclose(head.weight.full()[4], expected, atol=1e-6)
    held_out = centres + 0.3 * torch.randn(200, 5, 16, generator=gen)
    preds = head(held_out.reshape(-1, 16)).argmax(1).view(200, 5)
    assert (preds == torch.arange(5)).float().mean() > 0.95

    linear = _head()
    linear.add_classes(["new"], init="imprint", features={"new": torch.randn(3, 8)})
    norms = linear.weight.full().detach().norm(dim=1)
    assert torch.allclose(norms[4], norms[:4].mean())


def test_random_init_is_the_linear_default_range():
    head = _head()
    head.add_classes(["n1", "n2"], init="random", generator=_gen(9))
    new = head.weight.full()[4:].detach()
    assert new.abs().max() <= 1 / 8**0.5 and not torch.equal(new[0], new[1])


def test_frozen_old_rows_stay_identical_through_adamw_training():
    head = _head(cosine=True)
    head.add_classes(["n1"], init="mean")
    head.freeze_old()
    frozen = {k: v.clone() for k, v in head.state_dict().items() if k != "_extra_state"}
    opt = torch.optim.AdamW(head.new_parameters(), lr=0.1, weight_decay=0.5)
    x, y = _x(64), torch.randint(0, 5, (64,), generator=_gen(2))
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(head(x), y).backward()
        opt.step()
    state = head.state_dict()
    assert torch.equal(state["weight.rows"][:4], frozen["weight.rows"][:4])
    assert torch.equal(state["bias.rows"][:4], frozen["bias.rows"][:4])
    assert torch.equal(state["log_scale"], frozen["log_scale"])
    assert not torch.equal(state["weight.rows"][4], frozen["weight.rows"][4])
    values = head(x).detach()
    head.merge()
    assert head.weight.n_base == 5 and torch.equal(head(x).detach(), values)


def test_weight_align_equalises_mean_norms():
    head = _head()
    head.add_classes(["n1", "n2"], init="random", generator=_gen(1))
    with torch.no_grad():
        head.weight.new.mul_(torch.tensor([[5.0], [9.0]]))  # new rows grew large in training
    gamma = head.weight_align()
    norms = head.weight.full().detach().norm(dim=1)
    assert gamma < 1 and torch.allclose(norms[4:].mean(), norms[:4].mean())
    cosine = _head(cosine=True)
    cosine.add_classes(["n1"])
    assert cosine.weight_align() == 1.0
    with pytest.raises(ValueError, match="old and new"):
        _head().weight_align()


def test_bad_arguments_raise():
    head = _head()
    for names in (["r1"], ["a", "a"], [""], "abc"):
        with pytest.raises(ValueError):
            head.add_classes(names)
    with pytest.raises(ValueError, match="unknown init"):
        head.add_classes(["n"], init="zeros")
    with pytest.raises(ValueError, match="only used by"):
        head.add_classes(["n"], init="mean", features={"n": torch.zeros(1, 8)})
    for feats in (None, {"m": torch.ones(2, 8)}, {"n": torch.ones(0, 8)}, {"n": torch.ones(2, 3)}):
        with pytest.raises(ValueError, match="imprint"):
            head.add_classes(["n"], init="imprint", features=feats)
    with pytest.raises(KeyError):
        head.index("zz")
    assert head.class_names == tuple(OLD) and head.weight.n_rows == 4


def test_state_dict_round_trip_and_name_keyed_migration():
    old = _head()
    x = _x()
    saved = old.state_dict()
    same = ExtensibleClassifier(8, OLD)
    same.load_state_dict(saved)
    assert torch.equal(same(x), old(x))
    with pytest.raises(ValueError, match="migrate"):
        ExtensibleClassifier(8, ["r2", "r1", "r3", "r4"]).load_state_dict(saved)

    grown = ExtensibleClassifier(8, OLD)
    grown.add_classes(["n1", "n2"], init="low_bias", mask=True)
    new_rows = grown.weight.full()[4:].detach().clone()
    state = dict(saved)
    touched = grown.migrate_state_dict(state, "")
    assert touched == ["weight.rows", "bias.rows", "active"]
    grown.load_state_dict(state)
    assert torch.equal(grown(x)[:, :4], old(x))
    assert torch.equal(grown.weight.full()[4:], new_rows) and not grown.active[4:].any()

    shuffled = ExtensibleClassifier(8, ["r2", "r1", "r3", "r4", "n1"])
    with pytest.raises(ValueError, match="re-order"):
        shuffled.migrate_state_dict(dict(saved), "")
    smaller = ExtensibleClassifier(8, ["r1", "r2"])
    with pytest.raises(ValueError, match="truncate"):
        smaller.migrate_state_dict(dict(saved), "")
