import pytest
import pytorch_lightning as pl
import torch

from tests.synthetic import fit_checkpoint, make_matched, write_matched_store
from transitnet.datamodules import TransitDataModule
from transitnet.tasks import ForecastingTask


def _dm(tmp_path, **kw):
    store = write_matched_store(
        tmp_path,
        __import__("pandas").concat([make_matched(day=f"2024-05-0{d}", seed=d) for d in (6, 7, 8)]),
    )
    return TransitDataModule(
        str(store),
        train_dates=["2024-05-06"],
        val_dates=["2024-05-07"],
        test_dates=["2024-05-08"],
        horizons_s=[60, 120],
        past_fixes=4,
        batch_size=32,
        **kw,
    )


def test_fit_validate_and_checkpoint_round_trip(tmp_path) -> None:
    pl.seed_everything(0)
    dm = _dm(tmp_path)
    task = ForecastingTask(hidden_dim=16, line_dim=4)
    ckpt = fit_checkpoint(task, dm, tmp_path, epochs=2)
    assert task.line_keys == ("<unknown>", "A", "B", "C")
    loaded = ForecastingTask.load_from_checkpoint(ckpt)
    loaded.eval()
    task.eval()
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        assert torch.equal(task(batch), loaded(batch))
    state = torch.load(ckpt, weights_only=False)["TransitDataModule"]
    assert state["vocab"] and "past_scale" in state


def test_unseen_line_goes_to_unknown_row(tmp_path) -> None:
    dm = _dm(tmp_path, exclude_lines=["C"])
    dm.setup("fit")
    assert "C" not in dm.vocab
    ds = dm.dataset("val")
    lines = dm.windows["val"].meta["line_key"].to_numpy()
    assert (ds.line_ids[torch.from_numpy(lines == "C")] == 0).all()
    assert (ds.line_ids[torch.from_numpy(lines != "C")] > 0).all()


def test_evaluate_writes_metrics_for_model_and_every_baseline(tmp_path) -> None:
    import json

    from transitnet.cli.evaluate import register  # noqa: F401  (the CLI module imports)
    from transitnet.evaluate import run_evaluation, summarise, write_metrics

    pl.seed_everything(0)
    dm = _dm(tmp_path)
    ckpt = fit_checkpoint(ForecastingTask(hidden_dim=16, line_dim=4), dm, tmp_path)
    metrics = summarise(run_evaluation(ckpt))
    path = write_metrics(metrics, tmp_path / "out")
    data = json.loads(path.read_text())
    assert set(data) == {"model", "persistence", "constant_speed", "historical_mean"}
    assert set(data["model"]["mae_m"]) == {"60", "120"}
    assert data["model"]["per_line"]["A"]["n"] > 0
    coverage = data["model"]["coverage"]
    for key in ("by_horizon", "validation_by_horizon", "raw_by_horizon", "online_by_horizon"):
        assert set(coverage[key]) == {"60", "120"}
        assert all(0.0 <= v <= 1.0 for v in coverage[key].values()), key
    assert coverage["online_settings"]["window_s"] == 3600.0
    # the band as served is the online one (what `transitnet predict` writes)
    assert (
        coverage["served"] == "online" and coverage["by_horizon"] == coverage["online_by_horizon"]
    )
    from transitnet.evaluate import write_evaluation_report

    report = write_evaluation_report(data, tmp_path / "out", "synthetic").read_text()
    assert "recalibrated online, trailing hour (as served)" in report
    assert "calibrated on validation only" in report


def test_checkpoint_at_n_lines_loads_into_n_plus_k_by_key(tmp_path) -> None:
    from transitnet.datasets.vocab import LineVocabulary
    from transitnet.models.forecaster import add_lines

    pl.seed_everything(0)
    dm = _dm(tmp_path, exclude_lines=["C"])
    task = ForecastingTask(hidden_dim=16, line_dim=4)
    ckpt = fit_checkpoint(task, dm, tmp_path, name="n.ckpt")
    # a grown model: same architecture, vocabulary + "C" (and a line the ckpt never saw)
    grown = ForecastingTask(hidden_dim=16, line_dim=4)
    vocab = LineVocabulary(list(task.line_keys[1:]))
    grown.build_net(task.line_keys, dm.n_features, dm.n_context, dm.horizons_s)
    add_lines(grown.net, vocab, ["C", "Z"], init="unknown")
    grown.line_keys = ("<unknown>", *vocab.line_keys)
    state = torch.load(ckpt, weights_only=False)
    grown.on_load_checkpoint(state)
    grown.load_state_dict(state["state_dict"])
    task.eval()
    grown.eval()
    batch = next(iter(dm.val_dataloader()))
    old = batch.line_ids <= 2  # rows of "<unknown>", "A", "B" are the same in both
    with torch.no_grad():
        assert torch.equal(task(batch)[old], grown(batch)[old])
    # refuses a re-ordered vocabulary
    bad = ForecastingTask(hidden_dim=16, line_dim=4)
    bad.build_net(("<unknown>", "B", "A"), dm.n_features, dm.n_context, dm.horizons_s)
    import pytest

    with pytest.raises(ValueError, match="re-order"):
        bad.on_load_checkpoint(torch.load(ckpt, weights_only=False))


def _fit(tmp_path, epochs=2, **task_kw):
    pl.seed_everything(0)
    dm = _dm(tmp_path)
    task = ForecastingTask(hidden_dim=16, line_dim=4, **task_kw)
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, dm)
    return task, dm, trainer


def test_calibration_is_fitted_on_validation_stored_and_not_refitted_by_validate(tmp_path) -> None:
    from transitnet.metrics import compute_coverage

    task, dm, trainer = _fit(tmp_path)
    scales = task.net.calibration.scales.clone()
    assert not task.net.calibration.is_identity and (scales[:, 1] == 1).all()
    # the band hits 80 % on the split it was fitted on (to the conformal rounding)
    val = dm.dataset("val")
    batch = val.__getitems__(range(len(val)))
    task.eval()
    with torch.no_grad():
        pred = task(batch).numpy()
    cover = compute_coverage(
        pred[..., 0], pred[..., -1], batch.targets.numpy(), batch.target_mask.numpy()
    )
    assert ((cover > 0.75) & (cover < 0.9)).all()
    trainer.validate(task, dm, verbose=False)
    assert torch.equal(task.net.calibration.scales, scales)
    ckpt = tmp_path / "c.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=False)
    assert torch.equal(state["state_dict"]["net.calibration.scales"], scales)
    # a checkpoint written before calibration existed loads with identity scales
    del state["state_dict"]["net.calibration.scales"]
    torch.save(state, tmp_path / "old.ckpt")
    old = ForecastingTask.load_from_checkpoint(tmp_path / "old.ckpt")
    assert old.net.calibration.is_identity


def test_without_calibration_the_raw_band_is_kept(tmp_path) -> None:
    task, _, _ = _fit(tmp_path, epochs=1, calibrate=False)
    assert task.net.calibration.is_identity


def test_balanced_loss_divides_each_horizon_by_its_typical_distance(tmp_path) -> None:
    from dataclasses import replace

    task, dm, _ = _fit(tmp_path, epochs=1, balance_horizons=True, speed_scale_mps=5.0)
    assert task.loss_scales().tolist() == [300.0, 600.0]
    plain = ForecastingTask(loss_scale_m=500.0)
    plain.horizons_s = (60, 120)
    assert plain.loss_scales().tolist() == [500.0, 500.0]
    # balanced: missing by 300 m at 60 s costs as much as missing by 600 m at 120 s
    batch = next(iter(dm.val_dataloader()))
    batch = replace(batch, target_mask=torch.ones_like(batch.target_mask))
    pred = torch.zeros(len(batch), 2, 3)
    short = torch.zeros_like(batch.targets)
    short[:, 0] = 300.0
    long = torch.zeros_like(batch.targets)
    long[:, 1] = 600.0
    loss_short = task._loss(pred, replace(batch, targets=short))
    loss_long = task._loss(pred, replace(batch, targets=long))
    assert loss_short.item() > 0 and torch.isclose(loss_short, loss_long)
    assert plain._loss(pred, replace(batch, targets=long)) > plain._loss(
        pred, replace(batch, targets=short)
    )


def test_training_fits_the_raw_quantiles_never_the_calibrated_ones(tmp_path) -> None:
    dm = _dm(tmp_path)
    dm.setup("fit")
    task = ForecastingTask(hidden_dim=16, line_dim=4, dropout=0.0, line_dropout=0.0)
    task.build_net(tuple(dm.vocab.keys), dm.n_features, dm.n_context, dm.horizons_s)
    task.net.calibration.set_scales(torch.full((2, 3), 10.0))
    seen = []
    loss = task._loss

    def spy(pred, batch):
        if task.training:
            with torch.no_grad():
                raw = task(batch, calibrated=False)
            seen.append(torch.equal(pred.detach(), raw) and not torch.equal(pred, task(batch)))
        return loss(pred, batch)

    task._loss = spy
    trainer = pl.Trainer(
        fast_dev_run=2, logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.fit(task, dm)
    assert seen and all(seen)


def test_ignored_context_features_are_named_and_checked(tmp_path) -> None:
    from transitnet.datasets.windows import CONTEXT_FEATURES

    task = ForecastingTask(hidden_dim=16, line_dim=4, ignore_context=["tod_sin", "dow_cos"])
    task.build_net(("<unknown>", "A"), 9, len(CONTEXT_FEATURES), (60, 120))
    keep = task.net.context_keep
    assert keep.sum() == len(CONTEXT_FEATURES) - 2
    assert keep[CONTEXT_FEATURES.index("tod_sin")] == 0 and keep[0] == 0
    import pytest

    with pytest.raises(ValueError, match="unknown context features"):
        ForecastingTask(ignore_context=["nope"]).build_net(("<unknown>",), 9, 4, (60,))
    with pytest.raises(ValueError, match="this network has 4"):
        ForecastingTask(ignore_context=["tod_sin"]).build_net(("<unknown>",), 9, 4, (60,))


def test_plain_trainer_predict_restores_the_network_from_the_checkpoint(tmp_path) -> None:
    pl.seed_everything(0)
    dm = _dm(tmp_path)
    ckpt = fit_checkpoint(ForecastingTask(hidden_dim=16, line_dim=4), dm, tmp_path)
    # A fresh DataModule with only a predict period: its vocabulary comes from the checkpoint.
    fresh = TransitDataModule(
        str(tmp_path), predict_dates=["2024-05-08"], horizons_s=[60, 120],
        past_fixes=4, batch_size=32,
    )  # fmt: skip
    predictor = pl.Trainer(logger=False, enable_progress_bar=False)
    out = predictor.predict(ForecastingTask(hidden_dim=16, line_dim=4), fresh, ckpt_path=ckpt)
    assert out
    loaded = ForecastingTask.load_from_checkpoint(ckpt).eval()
    first = next(iter(fresh.predict_dataloader()))
    with torch.no_grad():
        assert torch.allclose(out[0]["pred"], loaded(first))
    untrained = TransitDataModule(str(tmp_path), predict_dates=["2024-05-08"], horizons_s=[60, 120])
    with pytest.raises(RuntimeError, match=r"never built|not fitted"):
        predictor.predict(ForecastingTask(hidden_dim=16, line_dim=4), untrained)


def _schedule_dm(tmp_path):
    from tests.datamodules.test_transit import _dm as timetable_dm
    from tests.datamodules.test_transit import _timetable_file

    return timetable_dm(tmp_path, timetable=str(_timetable_file(tmp_path)))


def test_schedule_skip_is_built_scaled_and_carried_by_the_checkpoint(tmp_path) -> None:
    from transitnet.datasets.windows import CONTEXT_FEATURES
    from transitnet.tasks.forecasting import CKPT_KEY

    pl.seed_everything(0)
    dm = _schedule_dm(tmp_path)
    task = ForecastingTask(hidden_dim=16, line_dim=4)
    ckpt = fit_checkpoint(task, dm, tmp_path)
    assert task.net.schedule_skip is not None and not task.net.drops_context
    has = CONTEXT_FEATURES.index("has_schedule")
    assert float(task.net.schedule_skip.mean[-1]) == pytest.approx(dm.context_scale[0][has])
    saved = torch.load(ckpt, weights_only=False)
    assert saved[CKPT_KEY]["schedule_residual"] and saved[CKPT_KEY]["schedule_inputs"]
    loaded = ForecastingTask.load_from_checkpoint(ckpt).eval()
    task.eval()
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        assert torch.equal(task(batch), loaded(batch))


def test_without_any_training_schedule_the_schedule_inputs_are_dropped(tmp_path) -> None:
    from transitnet.datasets.schedule import SCHEDULE_FEATURES
    from transitnet.datasets.windows import CONTEXT_FEATURES

    dm = _dm(tmp_path)  # no timetable: no window has a schedule
    dm.setup("fit")
    task = ForecastingTask(hidden_dim=16, line_dim=4, encoder_dim=8)
    trainer = pl.Trainer(fast_dev_run=1, logger=False, enable_progress_bar=False)
    trainer.fit(task, dm)
    assert task.net.schedule_skip is None and not task.schedule_inputs
    width = 8 + 4 + len(CONTEXT_FEATURES) - len(SCHEDULE_FEATURES)
    assert task.net.trunk[0].in_features == width


def test_a_checkpoint_from_before_the_skip_loads_without_it(tmp_path) -> None:
    from transitnet.tasks.forecasting import CKPT_KEY

    pl.seed_everything(0)
    dm = _schedule_dm(tmp_path)
    task = ForecastingTask(hidden_dim=16, line_dim=4, schedule_residual=False)
    ckpt = fit_checkpoint(task, dm, tmp_path)
    assert task.net.schedule_skip is None
    old = torch.load(ckpt, weights_only=False)
    del old[CKPT_KEY]["schedule_inputs"], old[CKPT_KEY]["schedule_residual"]
    del old["hyper_parameters"]["schedule_residual"]  # written before the setting existed
    torch.save(old, tmp_path / "old.ckpt")
    loaded = ForecastingTask.load_from_checkpoint(tmp_path / "old.ckpt").eval()
    assert loaded.net.schedule_skip is None and not loaded.net.drops_context
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        assert torch.equal(task.eval()(batch), loaded(batch))
