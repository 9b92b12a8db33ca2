import pytorch_lightning as pl
import torch

from tests.synthetic import make_matched, write_matched_store
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
    trainer = pl.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, dm)
    assert task.line_keys == ("<unknown>", "A", "B", "C")
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
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
    task = ForecastingTask(hidden_dim=16, line_dim=4)
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, dm)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    metrics = summarise(run_evaluation(ckpt))
    path = write_metrics(metrics, tmp_path / "out")
    data = json.loads(path.read_text())
    assert set(data) == {"model", "persistence", "constant_speed", "historical_mean"}
    assert set(data["model"]["mae_m"]) == {"60", "120"}
    assert data["model"]["per_line"]["A"]["n"] > 0
    assert 0.0 <= data["model"]["coverage"]["by_horizon"]["60"] <= 1.0


def test_checkpoint_at_n_lines_loads_into_n_plus_k_by_key(tmp_path) -> None:
    from transitnet.datasets.vocab import LineVocabulary
    from transitnet.models.forecaster import add_lines

    pl.seed_everything(0)
    dm = _dm(tmp_path, exclude_lines=["C"])
    task = ForecastingTask(hidden_dim=16, line_dim=4)
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, dm)
    ckpt = tmp_path / "n.ckpt"
    trainer.save_checkpoint(ckpt)
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
