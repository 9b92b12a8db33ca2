import copy

import pytest
import pytorch_lightning as pl
import torch

from tests.class_fixtures import make_store, one_torch_thread
from transitnet.datamodules.classification import RouteClassDataModule
from transitnet.datasets.class_windows import CLASS_FEATURES
from transitnet.tasks.class_extension import ClassExtensionTask
from transitnet.tasks.classification import CKPT_KEY, ClassificationTask


def _trainer(tmp, **kw):
    args = {
        "max_epochs": 4,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": tmp,
        **kw,
    }
    return pl.Trainer(**args)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny classifier fitted on lines A-D of day 1 (E held out), with its checkpoint."""
    tmp = tmp_path_factory.mktemp("task")
    pl.seed_everything(0)
    dm = RouteClassDataModule(
        str(make_store(tmp)),
        train_dates=["2024-05-06"],
        val_dates=["2024-05-07"],
        test_dates=["2024-05-08"],
        exclude_classes=["E"],
        min_windows_per_class=5,
        batch_size=32,
        stride=2,
    )
    task = ClassificationTask(hidden_dim=16, lr=1e-2)
    trainer = _trainer(tmp)
    with one_torch_thread():
        trainer.fit(task, dm)
        trainer.save_checkpoint(tmp / "base.ckpt")
        yield task.eval(), dm, tmp / "base.ckpt"


def _old_batch(dm):
    ds = dm.dataset("val")
    return ds.__getitems__(range(len(ds)))


def test_fit_learns_and_the_checkpoint_round_trips(trained):
    task, dm, ckpt = trained
    batch = _old_batch(dm)
    with torch.no_grad():
        logits = task(batch)
    assert (logits.argmax(1) == batch.labels).float().mean() > 0.5  # 4 lines: chance is 0.25
    saved = torch.load(ckpt, weights_only=False)
    assert saved[CKPT_KEY]["class_names"] == ["A", "B", "C", "D"]
    assert set(saved[CKPT_KEY]["class_stats"]) == {"A", "B", "C", "D"}
    assert saved["RouteClassDataModule"]["classes"] == ["A", "B", "C", "D"]
    loaded = ClassificationTask.load_from_checkpoint(ckpt).eval()
    with torch.no_grad():
        assert torch.equal(loaded(batch), logits)
        protos = loaded.logits(loaded.encode(batch), "prototype")
    assert loaded.prototypes.class_names == ("A", "B", "C", "D")
    for name, parts in task.class_mix.items():  # sub-centres, their stds and weights
        assert all(torch.equal(a, b) for a, b in zip(loaded.class_mix[name], parts, strict=True))
    assert (protos.argmax(1) == batch.labels).float().mean() > 0.5


def test_validate_and_test_log_accuracies(trained):
    task, dm, _ = trained
    metrics = _trainer(dm.store.parent).test(task, dm, verbose=False)[0]
    assert 0.5 < metrics["test_acc"] <= 1 and 0 < metrics["test_bacc"] <= 1
    assert "test_proto_acc" in metrics


@pytest.mark.parametrize("how", ["low_bias", "mask"])
def test_old_argmax_unchanged_right_after_adding_classes(trained, how):
    task, dm, _ = trained
    grown = copy.deepcopy(task)
    batch = _old_batch(dm)
    with torch.no_grad():
        before = task(batch)
        init = "low_bias" if how == "low_bias" else "mean"
        grown.head.add_classes(["E", "F"], init=init, mask=how == "mask")
        after = grown(batch)
    assert after.shape[1] == 6 and grown.class_names[-2:] == ("E", "F")
    assert torch.equal(after.argmax(1), before.argmax(1))
    assert torch.equal(after[:, :4], before)  # old logits untouched


def test_smaller_checkpoint_migrates_into_a_grown_head_by_name(trained):
    task, _, ckpt = trained
    grown = ClassificationTask(hidden_dim=16, lr=1e-2)
    grown.build_net(("A", "B", "C", "D", "E"), task.encoder.n_features)
    fresh_e = grown.head.weight.full()[4].detach().clone()
    checkpoint = torch.load(ckpt, weights_only=False)
    checkpoint["optimizer_states"] = [{"state": {}, "param_groups": []}]
    grown.on_load_checkpoint(checkpoint)
    grown.load_state_dict(checkpoint["state_dict"])
    w_old, w_new = task.head.weight.full(), grown.head.weight.full()
    assert torch.equal(w_new[:4], w_old) and torch.equal(w_new[4], fresh_e)
    assert torch.equal(grown.encoder.core.gru.weight_hh_l0, task.encoder.core.gru.weight_hh_l0)
    assert checkpoint["optimizer_states"][0]["param_groups"]  # reset for the new shapes
    shrunk = ClassificationTask(hidden_dim=16)
    shrunk.build_net(("A", "B"), task.encoder.n_features)
    with pytest.raises(ValueError):
        shrunk.on_load_checkpoint(torch.load(ckpt, weights_only=False))
    with pytest.raises(ValueError, match="not written by"):
        ClassificationTask().on_load_checkpoint({"state_dict": {}})


def _grow(task, mode, **kw):
    ext = ClassExtensionTask(mode=mode, hidden_dim=16, **kw)
    ext.build_net(task.class_names, task.encoder.n_features)
    ext.load_state_dict(task.state_dict())
    ext.class_stats = dict(task.class_stats)
    ext.head.add_classes(["E"], init="mean")
    ext.prepare_mode(4)
    return ext


def _new_class_loader(dm):
    dm.setup("test")
    windows = dm.windows["test"].subset(dm.windows["test"].meta["line_key"] == "E")
    from transitnet.datasets.class_batches import ClassWindowDataset, collate_class_batch

    ds = ClassWindowDataset(windows, torch.full((len(windows),), 4).numpy(), dm.scale)
    return torch.utils.data.DataLoader(ds, batch_size=16, collate_fn=collate_class_batch)


@pytest.mark.parametrize("pseudo", [0.0, 1.0])
def test_frozen_mode_trains_only_new_rows(trained, pseudo):
    task, dm, _ = trained
    ext = _grow(task, "frozen", pseudo_ratio=pseudo)
    before = copy.deepcopy(ext.state_dict())
    params = {id(p) for g in ext.parameter_groups() for p in g["params"]}
    assert params == {id(p) for p in ext.head.new_parameters()[: 2 if pseudo else 1]}
    _trainer(dm.store.parent, max_steps=6, max_epochs=-1).fit(ext, _new_class_loader(dm))
    after = ext.state_dict()
    tensors = [k for k, v in after.items() if isinstance(v, torch.Tensor)]
    changed = sorted(k for k in tensors if not torch.equal(before[k], after[k]))
    assert changed == ["head.bias.rows", "head.weight.rows"] if pseudo else ["head.weight.rows"]
    assert torch.equal(after["head.weight.rows"][:4], before["head.weight.rows"][:4])
    assert torch.equal(after["head.bias.rows"][:4], before["head.bias.rows"][:4])


def test_replay_distills_and_naive_moves_the_encoder(trained):
    task, dm, _ = trained
    replay = _grow(task, "replay").eval()  # eval: the neck uses its running statistics
    batch = next(iter(_new_class_loader(dm)))
    logits = replay.head(replay.encode(batch))
    assert replay.distill(batch, logits).item() == pytest.approx(0.0, abs=1e-5)  # = teacher
    naive = _grow(task, "naive")
    before = naive.encoder.core.gru.weight_ih_l0.detach().clone()
    _trainer(dm.store.parent, max_steps=3, max_epochs=-1).fit(naive, _new_class_loader(dm))
    assert not torch.equal(before, naive.encoder.core.gru.weight_ih_l0)
    with pytest.raises(ValueError, match="unknown mode"):
        ClassExtensionTask(mode="magic")
    with pytest.raises(ValueError, match="head must be"):
        ClassificationTask(head="tree")


def test_aux_place_objective_and_margin_train_and_round_trip(trained, tmp_path):
    _, dm, _ = trained
    pl.seed_everything(0)
    task = ClassificationTask(hidden_dim=16, lr=1e-2, aux_cells=8, aux_weight=0.5, margin=0.2)
    trainer = _trainer(tmp_path, max_epochs=2)
    with one_torch_thread():
        trainer.fit(task, dm)
    assert trainer.callback_metrics["train_aux_loss"] > 0
    assert task.places is not None and bool(task.places.centres.abs().sum() > 0)  # fitted
    batch = _old_batch(dm)
    cells = task.places(batch.features, batch.lengths)
    assert cells.min() >= 0 and cells.max() < 8 and len(cells.unique()) > 1
    trainer.save_checkpoint(tmp_path / "aux.ckpt")
    loaded = ClassificationTask.load_from_checkpoint(tmp_path / "aux.ckpt").eval()
    assert torch.equal(loaded.places.centres, task.places.centres)
    with torch.no_grad():
        assert torch.equal(loaded(batch), task.eval()(batch))


def test_cosine_margin_raises_the_training_loss(trained):
    task, dm, _ = trained
    batch = _old_batch(dm)
    losses = []
    for margin in (0.0, 0.3):
        t = copy.deepcopy(task)
        t.hparams["margin"] = margin
        t.log = lambda *a, **k: None  # no trainer attached
        with torch.no_grad():
            losses.append(float(t.training_step(batch, 0)))
    assert losses[1] > losses[0]


def test_geo_descriptor_trains_extends_and_round_trips(trained, tmp_path):
    _, dm, ckpt = trained
    pl.seed_everything(0)
    geo = {"geo_dim": 8, "geo_weight": 2.0, "aux_cells": 4}
    task = ClassificationTask(hidden_dim=16, lr=1e-2, **geo)
    trainer = _trainer(tmp_path, max_epochs=2)
    with one_torch_thread():
        trainer.fit(task, dm)
    assert task.feature_dim == 24 and task.head.in_dim == 24
    assert task.aux_head.in_features == 16  # the place objective shapes the encoder only
    assert bool(task.geo.std.ne(1).any())  # fitted on the training windows
    batch = _old_batch(dm)
    feats = task.eval().encode(batch)
    assert feats.shape == (len(batch), 24)
    assert torch.equal(feats[:, 16:], task.geo(batch.features, batch.lengths))
    assert task.class_chol["A"].shape == (24, 24)
    trainer.save_checkpoint(tmp_path / "geo.ckpt")
    assert isinstance(torch.load(tmp_path / "geo.ckpt")[CKPT_KEY]["class_chol"]["A"], torch.Tensor)
    loaded = ClassificationTask.load_from_checkpoint(tmp_path / "geo.ckpt").eval()
    assert torch.equal(loaded.geo.freqs, task.geo.freqs)
    with torch.no_grad():
        assert torch.equal(loaded(batch), task(batch))
    for mode in ("frozen", "replay"):
        ext = ClassExtensionTask(mode=mode, hidden_dim=16, **geo)
        ext.build_net(task.class_names, task.encoder.n_features)
        ext.load_state_dict(task.state_dict())
        ext.class_stats, ext.class_chol = dict(task.class_stats), dict(task.class_chol)
        ext.head.add_classes(["E"], init="imprint", features={"E": feats[:3]})
        ext.prepare_mode(4)
        ext.eval()
        logits = ext.head(ext.encode(batch))
        assert logits.shape == (len(batch), 5)
        if mode == "replay":
            assert ext.distill(batch, logits).item() == pytest.approx(0.0, abs=1e-5)
        else:
            assert ext.align_by_claim_rate(0.01, n_samples=500) >= 0.0
    # a checkpoint written before the descriptor existed loads without one
    old = torch.load(ckpt, weights_only=False)
    for key in [k for k in old["hyper_parameters"] if k.startswith("geo_")]:
        del old["hyper_parameters"][key]
    old[CKPT_KEY]["class_chol"] = {k: v.tolist() for k, v in old[CKPT_KEY]["class_chol"].items()}
    torch.save(old, tmp_path / "old.ckpt")
    legacy = ClassificationTask.load_from_checkpoint(tmp_path / "old.ckpt").eval()
    assert legacy.geo is None and legacy.feature_dim == 16
    assert torch.equal(legacy.class_chol["A"], trained[0].class_chol["A"])  # lists load too
    with torch.no_grad():
        assert torch.equal(legacy(batch), trained[0](batch))


def test_a_fit_lifts_the_claim_gate_and_records_fresh_confidences(trained, tmp_path):
    _, dm, ckpt = trained
    task = ClassificationTask.load_from_checkpoint(ckpt)
    assert len(task.confidence_grid) == 101 and task.confidence_grid[0] > 0
    task.claim_gate = {"classes": ["D"], "q": 0.1, "threshold": 0.5}
    with one_torch_thread():
        _trainer(tmp_path, max_epochs=1).fit(task, dm)
    assert task.claim_gate is None  # every class was trained: none needs a gate
    assert task.confidence_grid == sorted(task.confidence_grid)


def test_blind_features_are_invisible_to_the_encoder(trained):
    task, dm, _ = trained
    blind = ClassificationTask(hidden_dim=16, blind_features=["tod_sin", "tod_cos"])
    blind.build_net(task.class_names, task.encoder.n_features)
    blind.load_state_dict(task.state_dict(), strict=False)
    blind.eval()
    batch = _old_batch(dm)
    shifted = copy.deepcopy(batch)
    shifted.features[..., CLASS_FEATURES.index("tod_sin")] += 3.0
    with torch.no_grad():
        assert torch.equal(blind.encode(batch), blind.encode(shifted))
        assert not torch.equal(task.eval().encode(batch), task.encode(shifted))
    with pytest.raises(ValueError, match="blind_features"):
        ClassificationTask(blind_features=["hour"])
