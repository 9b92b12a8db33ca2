import copy

import pytest
import torch

from tests.tasks.test_classification import _grow, trained  # noqa: F401 (fixture)


def test_statistical_wa_caps_the_claim_rate_of_old_pseudo_features(trained):  # noqa: F811
    task, _, _ = trained
    ext = _grow(task, "frozen")
    with torch.no_grad():
        ext.head.bias.new.add_(100.0)  # the new class claims everything before aligning
    old_rows = ext.head.weight.full()[:4].clone(), ext.head.bias.full()[:4].clone()
    delta = ext.align_by_claim_rate(0.02, n_samples=4000, seed=0)
    assert delta is not None and delta > 100.0
    assert torch.equal(ext.head.weight.full()[:4], old_rows[0])  # old rows untouched
    assert torch.equal(ext.head.bias.full()[:4], old_rows[1])
    source = ext._pseudo_source(ext.class_names[:4], always=True)
    fresh, _ = ext.pseudo_features(4000, source, torch.Generator().manual_seed(1))
    claimed = (ext.head(fresh).argmax(1) == 4).float().mean()
    assert claimed <= 0.04  # target 2 % on the calibration draw; a fresh draw is close
    assert ext.align_by_claim_rate(1.0) == 0.0  # a full claim rate needs no offset


def test_per_class_statistical_wa_gives_each_new_class_its_share(trained):  # noqa: F811
    task, _, _ = trained
    ext = _grow(task, "frozen")
    ext.head.add_classes(["F"], init="mean")
    ext.prepare_mode(4)
    with torch.no_grad():
        ext.head.bias.new.add_(torch.tensor([100.0, 50.0]))  # both claim everything
    ext.align_by_claim_rate(0.02, n_samples=4000, seed=0, per_class=True)
    source = ext._pseudo_source(ext.class_names[:4], always=True)
    fresh, _ = ext.pseudo_features(4000, source, torch.Generator().manual_seed(1))
    logits = ext.head(fresh)
    beats_old = logits[:, 4:] > logits[:, :4].max(1, keepdim=True).values
    assert (beats_old.float().mean(0) <= 0.02).all()  # each at most ~1 % (its share)
    assert beats_old.any(1).float().mean() <= 0.04


def test_statistical_wa_without_statistics_or_with_a_bad_rate(trained):  # noqa: F811
    task, _, _ = trained
    ext = _grow(task, "frozen")
    with pytest.raises(ValueError, match="claim_rate"):
        ext.align_by_claim_rate(1.5)
    bare = copy.deepcopy(ext)
    bare.class_stats = {}
    before = bare.head.bias.full().clone()
    assert bare.align_by_claim_rate(0.01) is None
    assert torch.equal(bare.head.bias.full(), before)


def test_pseudo_features_follow_the_stored_covariance(trained):  # noqa: F811
    task, _, ckpt = trained
    saved = torch.load(ckpt, weights_only=False)["transitnet_classifier"]
    assert set(saved["class_chol"]) == {"A", "B", "C", "D"}
    ext = _grow(task, "frozen")
    ext.class_chol = dict(task.class_chol)
    full = ext._pseudo_source(ext.class_names[:4], always=True)
    assert full is not None and full[2].shape == (4, 16, 16)
    fake, rows = ext.pseudo_features(20_000, full, torch.Generator().manual_seed(0))
    for c in range(4):
        mine = fake[rows == c]
        want = full[2][c] @ full[2][c].T
        assert torch.allclose(mine.mean(0), full[1][c], atol=0.1 * float(want.diag().max()) ** 0.5)
        assert torch.allclose(torch.cov(mine.T), want, atol=0.15 * float(want.diag().max()))
    ext.hparams["full_covariance"] = False
    assert ext._pseudo_source(ext.class_names[:4], always=True)[2].shape == (4, 16)


def test_pseudo_features_from_sub_centres_keep_classes_equally_likely(trained):  # noqa: F811
    task, _, ckpt = trained
    saved = torch.load(ckpt, weights_only=False)["transitnet_classifier"]
    assert set(saved["class_mix"]) == {"A", "B", "C", "D"}  # stat_components=8 by default
    ext = _grow(task, "frozen", mixture=True)
    ext.class_chol, ext.class_mix = dict(task.class_chol), dict(task.class_mix)
    source = ext._pseudo_source(ext.class_names[:4], always=True)
    assert source is not None and source[3] is not None
    assert len(source[0]) == sum(len(task.class_mix[n][2]) for n in "ABCD")
    fake, rows = ext.pseudo_features(8000, source, torch.Generator().manual_seed(0))
    shares = torch.bincount(rows, minlength=4).float() / len(rows)
    assert torch.allclose(shares, torch.full((4,), 0.25), atol=0.03)
    for c, name in enumerate("ABCD"):  # the draws' mean is the class mean
        centres, _, weights = task.class_mix[name]
        spread = float(task.class_stats[name][1].max())
        assert torch.allclose(fake[rows == c].mean(0), weights @ centres, atol=0.15 * spread)
    assert ext.align_by_claim_rate(0.05, n_samples=2000) is not None
    ext.class_mix = {}  # a checkpoint without sub-centres falls back to the covariance
    assert ext._pseudo_source(ext.class_names[:4], always=True)[2].ndim == 3
