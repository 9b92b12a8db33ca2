import json

import numpy as np
import pytest
import torch

from tests.synthetic import train_base_checkpoint
from transitnet.extend import ExtensionConfig, extend_lines, report_dict, train_extension
from transitnet.tasks import ForecastingTask


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ext")
    ckpt, store = train_base_checkpoint(tmp)
    return ckpt, store, tmp


def _old_outputs(ckpt, store):
    """Forecasts of the model in ``ckpt`` for old-line windows of 2024-05-08."""
    from transitnet.evaluate import load_datamodule, predict_windows

    task = ForecastingTask.load_from_checkpoint(ckpt)
    dm = load_datamodule(
        torch.load(ckpt, weights_only=False), store=str(store), test_dates=["2024-05-08"]
    )
    dm.setup("test")
    keep = dm.windows["test"].meta["line_key"].isin(["A", "B"]).to_numpy()
    dm.windows["test"] = dm.windows["test"].subset(keep)
    return torch.from_numpy(predict_windows(task, dm, "test"))


@pytest.mark.parametrize("tier", ["zero-shot", "row-only"])
def test_zero_shot_and_row_only_leave_old_lines_bit_identical(base, tier) -> None:
    ckpt, store, tmp = base
    out = tmp / tier
    report = extend_lines(
        ckpt,
        out,
        ExtensionConfig(tier=tier, max_steps=15, min_windows=5),
        data_overrides={"train_dates": ["2024-05-07"]},
    )
    assert report.lines_added == ["C"]
    assert report.steps == (0 if tier == "zero-shot" else 15)
    assert report.tensors_touched == ["line_embedding.row_count", "line_embedding.table.rows"]
    before, after = _old_outputs(ckpt, store), _old_outputs(out / "model.ckpt", store)
    assert torch.equal(before, after)
    grown = torch.load(out / "model.ckpt", weights_only=False)
    assert grown["TransitDataModule"]["vocab"]["line_keys"][-1] == "C"
    json.dumps(report_dict(report))


@pytest.mark.parametrize("tier", ["partial", "replay", "naive"])
def test_other_tiers_train_and_report_forgetting(base, tier) -> None:
    ckpt, _, tmp = base
    report = extend_lines(
        ckpt,
        tmp / tier,
        ExtensionConfig(tier=tier, max_steps=10, min_windows=5, init="mean"),
        data_overrides={"train_dates": ["2024-05-07"]},
        eval_dates=["2024-05-08"],
    )
    ev = report.evaluation
    assert set(ev) == {"before", "after"}
    assert ev["after"]["new_lines"]["n"] > 0 and ev["after"]["old_lines"]["n"] > 0
    assert any("trunk" in t or "head" in t or "encoder" in t for t in report.tensors_touched)
    # Old-line windows: the replay buffer, or partial's distillation inputs (on by default).
    assert (report.replay_windows > 0) == (tier in ("partial", "replay"))


def test_no_new_lines_is_a_clear_error(base) -> None:
    ckpt, _, tmp = base
    with pytest.raises(ValueError, match="no new lines"):
        extend_lines(
            ckpt,
            tmp / "none",
            ExtensionConfig(new_lines="auto", min_windows=10**6),
            data_overrides={"train_dates": ["2024-05-07"]},
        )


def _old_only_datamodule(ckpt):
    from transitnet.evaluate import load_datamodule

    dm = load_datamodule(
        torch.load(ckpt, weights_only=False),
        train_dates=["2024-05-07"],
        val_dates=None,
        exclude_lines=None,
    )
    dm.setup("fit")
    train = dm.windows["train"]
    dm.windows["train"] = train.subset(~train.meta["line_key"].eq("C").to_numpy())
    return dm


def test_train_extension_zero_shot_needs_no_data_of_the_new_line(base) -> None:
    ckpt, _, _ = base
    dm = _old_only_datamodule(ckpt)
    task, report = train_extension(
        torch.load(ckpt, weights_only=False),
        ForecastingTask.load_from_checkpoint(ckpt),
        dm,
        ["C"],
        ExtensionConfig(tier="zero-shot", init="mean"),
        progress_bar=False,
    )
    assert report.steps == 0 and report.train_windows == 0
    assert task.line_keys[-1] == "C" and dm.vocab.keys[-1] == "C"


def test_train_extension_refuses_to_train_without_new_line_windows(base) -> None:
    ckpt, _, _ = base
    with pytest.raises(ValueError, match="none for"):
        train_extension(
            torch.load(ckpt, weights_only=False),
            ForecastingTask.load_from_checkpoint(ckpt),
            _old_only_datamodule(ckpt),
            ["C"],
            ExtensionConfig(tier="row-only", max_steps=3),
            progress_bar=False,
        )


@pytest.mark.parametrize("share", [0.0, 0.5, 0.9])
def test_replay_repeats_new_line_windows_up_to_their_share(base, share) -> None:
    from transitnet.evaluate import load_datamodule

    ckpt, _, _ = base
    dm = load_datamodule(
        torch.load(ckpt, weights_only=False),
        train_dates=["2024-05-07"],
        val_dates=None,
        exclude_lines=None,
    )
    dm.setup("fit")
    train = dm.windows["train"]
    keep = (train.meta["line_key"] != "C").to_numpy().copy()
    keep[np.flatnonzero(~keep)[:5]] = True  # the new line has only 5 windows
    dm.windows["train"] = train.subset(keep)
    cfg = ExtensionConfig(tier="replay", max_steps=2, replay_per_line=50, replay_new_share=share)
    _, report = train_extension(
        torch.load(ckpt, weights_only=False),
        ForecastingTask.load_from_checkpoint(ckpt),
        dm,
        ["C"],
        cfg,
        progress_bar=False,
    )
    is_new = (dm.windows["train"].meta["line_key"] == "C").to_numpy()
    assert report.train_windows == 5 and report.replay_windows == (~is_new).sum() > 50
    if share == 0.0:
        assert is_new.sum() == 5
    else:
        assert share <= is_new.mean() < share + 5 / len(is_new)


def test_replay_share_out_of_range_is_refused(base) -> None:
    ckpt, _, tmp = base
    with pytest.raises(ValueError, match="replay_new_share"):
        extend_lines(
            ckpt,
            tmp / "bad_share",
            ExtensionConfig(tier="replay", max_steps=1, min_windows=5, replay_new_share=1.0),
            data_overrides={"train_dates": ["2024-05-07"]},
        )


def test_fork_routes_new_line_to_a_trained_copy_and_old_lines_stay_bit_identical(base) -> None:
    from transitnet.evaluate import load_datamodule, predict_windows
    from transitnet.models.routed import RoutedForecastNet

    ckpt, store, tmp = base
    out = tmp / "fork"
    report = extend_lines(
        ckpt,
        out,
        # C has 2 trips that day: not a few-trip line with few_trips=2 (the fork tunes layers)
        ExtensionConfig(tier="fork", max_steps=15, min_windows=5, few_trips=2),
        data_overrides={"train_dates": ["2024-05-07"]},
    )
    assert report.tier == "fork" and report.steps == 15 and report.replay_windows == 0
    # The base gained only the new row; the fork's layers trained.
    assert [t for t in report.tensors_touched if t.startswith("base.")] == [
        "base.line_embedding.row_count",
        "base.line_embedding.table.rows",
    ]
    assert any(t.startswith("fork.encoder.") for t in report.tensors_touched)
    assert any(t.startswith("fork.trunk.") for t in report.tensors_touched)
    # Saved and loaded with the stock loader: both networks and the routing come back.
    saved = torch.load(out / "model.ckpt", weights_only=False)
    assert saved["transitnet_forecaster"]["routed_lines"] == ["C"]
    task = ForecastingTask.load_from_checkpoint(out / "model.ckpt")
    assert isinstance(task.net, RoutedForecastNet)
    assert task.net.routed_rows() == [task.line_keys.index("C")]
    # Zero forgetting after real training steps, through the reloaded checkpoint.
    assert torch.equal(_old_outputs(ckpt, store), _old_outputs(out / "model.ckpt", store))
    # The new line is served by the fork: its forecasts differ from the base's new row.
    zero = tmp / "fork_zero"
    extend_lines(
        ckpt,
        zero,
        ExtensionConfig(tier="zero-shot", min_windows=5),
        data_overrides={"train_dates": ["2024-05-07"]},
    )
    preds = []
    for path in (zero / "model.ckpt", out / "model.ckpt"):
        dm = load_datamodule(
            torch.load(path, weights_only=False), store=str(store), test_dates=["2024-05-08"]
        )
        dm.setup("test")
        keep = (dm.windows["test"].meta["line_key"] == "C").to_numpy()
        assert keep.any()
        dm.windows["test"] = dm.windows["test"].subset(keep)
        preds.append(predict_windows(ForecastingTask.load_from_checkpoint(path), dm, "test"))
    assert np.isfinite(preds[1]).all()
    assert np.abs(preds[0] - preds[1]).max() > 1e-3


def test_a_fork_on_a_few_trip_line_tunes_its_new_rows_only(base) -> None:
    ckpt, store, tmp = base
    out = tmp / "fork_few"
    cfg = ExtensionConfig(tier="fork", max_steps=6, min_windows=5, early_stopping="off")
    report = extend_lines(ckpt, out, cfg, data_overrides={"train_dates": ["2024-05-07"]})
    assert report.steps == 6  # 2 trips of C < few_trips (10)
    fork = {t for t in report.tensors_touched if t.startswith("fork.")}
    assert fork == {"fork.line_embedding.table.rows", "fork.line_embedding.row_count"}
    saved = torch.load(out / "model.ckpt", weights_only=False)
    assert saved["hyper_parameters"]["tune_layers"] == []
    assert torch.equal(_old_outputs(ckpt, store), _old_outputs(out / "model.ckpt", store))


def test_a_fork_checkpoint_is_not_grown_further(base) -> None:
    ckpt, _, tmp = base
    out = tmp / "fork_once"
    extend_lines(
        ckpt,
        out,
        ExtensionConfig(tier="fork", max_steps=2, min_windows=5),
        data_overrides={"train_dates": ["2024-05-07"]},
    )
    with pytest.raises(ValueError, match="re-fork"):
        extend_lines(
            out / "model.ckpt",
            tmp / "fork_twice",
            ExtensionConfig(tier="fork", new_lines=["D"], max_steps=2),
            data_overrides={"train_dates": ["2024-05-07"]},
        )


def test_a_fork_checkpoint_restores_into_a_task_built_from_the_data(base) -> None:
    """``trainer.predict(task, dm, ckpt_path=…)``: the plain net built first is replaced."""
    from transitnet.models.routed import RoutedForecastNet

    ckpt, _, tmp = base
    out = tmp / "fork_restore"
    extend_lines(
        ckpt,
        out,
        ExtensionConfig(tier="fork", max_steps=2, min_windows=5),
        data_overrides={"train_dates": ["2024-05-07"]},
    )
    saved = torch.load(out / "model.ckpt", weights_only=False)
    meta = saved["transitnet_forecaster"]
    task = ForecastingTask(**{k: v for k, v in saved["hyper_parameters"].items() if k in (
        "line_dim", "hidden_dim", "ignore_context", "schedule_residual")})  # fmt: skip
    task.build_net_from_meta({**meta, "routed_lines": []}, tuple(meta["line_keys"]))
    task.on_load_checkpoint(saved)
    assert isinstance(task.net, RoutedForecastNet)
    task.load_state_dict(saved["state_dict"])
    assert task.net.routed_rows() == [list(meta["line_keys"]).index("C")]
    # Fine-tuning a loaded fork further (e.g. fit from it) never puts the base in the optimizer.
    in_groups = {id(p) for g in task.parameter_groups() for p in g["params"]}
    assert in_groups and in_groups <= {id(p) for p in task.net.fork.parameters()}
