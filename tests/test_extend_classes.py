import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from tests.class_fixtures import make_store, one_torch_thread
from tests.synthetic import fit_checkpoint
from transitnet.datamodules.classification import RouteClassDataModule
from transitnet.extend_classes import extend_classes
from transitnet.extend_classes_config import ClassExtensionConfig
from transitnet.tasks.classification import ClassificationTask

NEW_DATA = {"train_dates": ["2024-05-07"]}
EVAL = ["2024-05-08"]


def _fit(dm, tmp: Path, epochs: int, **task_kw) -> Path:
    pl.seed_everything(0)
    task = ClassificationTask(**{"hidden_dim": 16, "lr": 1e-2, **task_kw})
    return fit_checkpoint(task, dm, tmp, epochs=epochs, name="base.ckpt")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("extcls")
    dm = RouteClassDataModule(
        str(make_store(tmp)),
        train_dates=["2024-05-06"],
        val_dates=["2024-05-07"],
        exclude_classes=["E"],
        min_windows_per_class=5,
        batch_size=32,
        stride=2,
    )
    with one_torch_thread():
        yield _fit(dm, tmp, 4), tmp


def _extend(base, name, **cfg):
    ckpt, tmp = base
    settings = {"max_steps": 8, "min_windows": 5, "shots": 2, **cfg}
    with one_torch_thread():
        report = extend_classes(
            ckpt,
            tmp / name,
            ClassExtensionConfig(**settings),
            data_overrides=NEW_DATA,
            eval_dates=EVAL,
        )
    return report, tmp / name


def test_frozen_imprint_wa_writes_a_grown_checkpoint_and_reports(base):
    report, out = _extend(base, "frozen", init="imprint", mode="frozen", align="wa")
    assert report.classes_added == ["E"] and report.steps == 8 and report.replay_windows == 0
    assert report.example_windows > 0 and report.wa_factor is None  # cosine head:
    assert report.wa_offset is not None and report.wa_offset >= 0  # statistical WA
    assert set(report.evaluation) == {"before", "after_add", "after"}
    assert report.evaluation["before"]["new"]["acc"] == 0.0  # the base cannot name E
    assert report.evaluation["after"]["new"]["n"] > 0
    data = json.loads((out / "report.json").read_text())
    assert data["mode"] == "frozen" and "old_acc_drop_pp" in data["summary"]
    assert "| after |" in (out / "report.md").read_text()
    grown = ClassificationTask.load_from_checkpoint(out / "model.ckpt")
    old = ClassificationTask.load_from_checkpoint(base[0])
    assert grown.class_names == ("A", "B", "C", "D", "E")
    assert torch.equal(grown.head.weight.full()[:4], old.head.weight.full())  # old rows kept
    assert torch.equal(grown.encoder.core.gru.weight_hh_l0, old.encoder.core.gru.weight_hh_l0)
    assert grown.prototypes.class_names[-1] == "E" and "E" in grown.class_stats
    saved = torch.load(out / "model.ckpt", weights_only=False)
    assert saved["RouteClassDataModule"]["classes"][-1] == "E"
    assert saved["datamodule_hyper_parameters"]["train_dates"] == NEW_DATA["train_dates"]


def test_claim_gate_only_takes_windows_the_old_classes_are_unsure_of(base):
    settings = {"init": "imprint", "mode": "frozen", "align": "none"}
    free, _ = _extend(base, "ungated", **settings, claim_gate=0.0)
    gated, out = _extend(base, "gated", **settings, claim_gate=0.5)
    assert free.claim_gate is None and gated.claim_gate["q"] == 0.5
    old = ClassificationTask.load_from_checkpoint(base[0])
    assert 0.0 < gated.claim_gate["threshold"] <= 1.0 and len(old.confidence_grid) == 101
    # the same trained rows, gated after training: old windows can only come back
    after_free, after_gated = free.evaluation["after"], gated.evaluation["after"]
    assert after_gated["old"]["acc"] >= after_free["old"]["acc"]
    assert after_gated["new"]["acc"] <= after_free["new"]["acc"]
    grown = ClassificationTask.load_from_checkpoint(out / "model.ckpt")
    assert grown.claim_gate["classes"] == ["E"]
    assert json.loads((out / "report.json").read_text())["claim_gate"]["q"] == 0.5
    sure = torch.tensor([[9.0, 0.0, 0.0, 0.0, 20.0], [0.0, 0.0, 0.0, 0.0, 20.0]])
    assert grown.apply_correction(sure).argmax(1).tolist() == [0, 4]


@pytest.mark.parametrize(("init", "mask"), [("low_bias", False), ("mean", True)])
def test_zero_shot_low_bias_or_masked_keeps_every_old_prediction(base, init, mask):
    report, _ = _extend(base, f"none-{init}", init=init, mode="none", align="none", mask=mask)
    assert report.steps == 0 and report.summary["old_argmax_unchanged_after_add"] is True
    ev = report.evaluation
    assert ev["after"]["old"] == ev["before"]["old"] and ev["after"]["new"]["acc"] == 0.0


def test_replay_bic_records_a_correction_that_the_checkpoint_applies(base):
    report, out = _extend(base, "bic", init="mean", mode="replay", align="bic", shots=4)
    assert report.replay_windows > 0 and report.bic_windows > 0
    assert set(report.bic) == {"alpha", "beta"}
    grown = ClassificationTask.load_from_checkpoint(out / "model.ckpt")
    assert grown.correction["classes"] == ["E"]
    z = torch.zeros(1, 5)
    assert grown.apply_correction(z)[0, 4].item() == pytest.approx(report.bic["beta"], abs=1e-5)


def test_prototype_mode_trains_nothing_and_answers_by_class_mean(base):
    report, out = _extend(base, "proto", init="imprint", mode="prototype", align="none")
    assert report.steps == 0 and report.masked
    grown = ClassificationTask.load_from_checkpoint(out / "model.ckpt")
    assert grown.hparams["predict_with"] == "prototype"
    assert not bool(grown.head.active[-1])  # the classifier keeps E masked
    assert report.evaluation["after"]["new"]["acc"] > 0


def test_naive_moves_the_encoder(base):
    report, out = _extend(base, "naive", init="random", mode="naive", align="wa")
    assert report.wa_factor is None and report.wa_offset is None  # stale statistics: skipped
    grown = ClassificationTask.load_from_checkpoint(out / "model.ckpt")
    old = ClassificationTask.load_from_checkpoint(base[0])
    assert not torch.equal(grown.encoder.core.gru.weight_hh_l0, old.encoder.core.gru.weight_hh_l0)


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"min_windows": 10**6}, "no new classes"),
        ({"align": "bic", "mode": "frozen"}, "BiC"),
        ({"init": "zeros"}, "init must be"),
        ({"shots": 0}, "shots"),
        ({"wa_claim_rate": 2.0}, "wa_claim_rate"),
        ({"new_classes": ["A"]}, "already known"),
        ({"new_classes": ["Z"]}, "no trajectory"),
    ],
)
def test_bad_requests_are_clear_errors(base, cfg, match):
    with pytest.raises(ValueError, match=match):
        _extend(base, "bad", **cfg)


@pytest.mark.real_data
def test_real_austin_line_added_to_a_real_classifier(shared_data: Path, tmp_path: Path):
    from transitnet.store.importers import import_paths

    days = shared_data / "austin-capmetro" / "vehicle_positions"
    store = tmp_path / "store"
    import_paths(
        store, "austin", [days / "2017-03-16.csv", days / "2017-03-21.csv"], progress=False
    )
    dm = RouteClassDataModule(
        str(store),
        train_dates=["2017-03-16T05:00..2017-03-16T09:00"],
        timezone="America/Chicago",
        max_classes=6,
        exclude_classes=["3"],
        batch_size=128,
        window_fixes=8,
    )
    new_data = {"train_dates": ["2017-03-21T05:00..2017-03-21T08:00"]}
    evaluation = ["2017-03-21T08:00..2017-03-21T11:00"]
    runs = {}
    with one_torch_thread():
        ckpt = _fit(dm, tmp_path, 4, hidden_dim=32)
        for pseudo, align, gate in (
            (1.0, "none", 0.0),
            (0.0, "none", 0.0),
            (0.0, "wa", 0.0),
            (1.0, "none", 0.1),
        ):
            cfg = ClassExtensionConfig(
                new_classes=["3"],
                shots=5,
                max_steps=30,
                pseudo_ratio=pseudo,
                align=align,
                claim_gate=gate,
            )
            out = tmp_path / f"p{pseudo}{align}{gate}"
            report = extend_classes(ckpt, out, cfg, data_overrides=new_data, eval_dates=evaluation)
            runs[pseudo, align if gate == 0 else "gate"] = report.evaluation
    before = runs[1.0, "none"]["before"]
    assert before["old"]["n"] > 1000 and before["new"]["n"] > 100
    assert before["old"]["acc"] > 0.6  # 6 real lines from 4 hours of one morning
    drop = {k: before["old"]["acc"] - r["after"]["old"]["acc"] for k, r in runs.items()}
    new = {k: r["after"]["new"]["acc"] for k, r in runs.items()}
    # Pseudo-features of the old lines protect them; plain frozen learns line 3 better.
    plain, pseudo, wa = (0.0, "none"), (1.0, "none"), (0.0, "wa")
    assert drop[pseudo] < drop[plain] <= 0.1 and new[plain] > new[pseudo] > 0.05
    assert new[plain] > 0.4
    # Statistical WA (cosine head) trades new-line accuracy for the old lines'.
    assert drop[wa] <= drop[plain] and new[wa] <= new[plain]
    # The claim gate keeps every old window the base model was sure of.
    assert drop[1.0, "gate"] <= drop[pseudo] and 0.0 < new[1.0, "gate"] <= new[pseudo]
