import json

import pytest
import torch

from data_pipelines.extend_lines import count_unseen_fixes, main, run_job
from tests.synthetic import train_base_checkpoint
from transitnet.extend import ExtensionConfig


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("job")
    ckpt, store = train_base_checkpoint(tmp)
    models = tmp / "models"
    models.mkdir()
    (models / "current.json").write_text(json.dumps({"ckpt": str(ckpt)}))
    return models, store, ckpt


def test_counts_only_lines_the_model_lacks(models) -> None:
    _, store, ckpt = models
    counts = count_unseen_fixes(ckpt, store, None, ["2024-05-07"])
    assert set(counts) == {"C"} and counts["C"] > 50


def test_waits_below_threshold_then_extends_and_moves_the_pointer(models) -> None:
    root, store, ckpt = models
    cfg = ExtensionConfig(max_steps=5, min_windows=1)
    assert (
        run_job(root, store, static=None, dates=["2024-05-07"], min_fixes=10**6, config=cfg) is None
    )
    assert json.loads((root / "current.json").read_text())["ckpt"] == str(ckpt)
    new = run_job(root, store, static=None, dates=["2024-05-07"], min_fixes=10, config=cfg)
    assert new is not None and new.exists()
    pointer = json.loads((root / "current.json").read_text())
    assert pointer["ckpt"] == str(new) and pointer["lines_added"] == ["C"]
    vocab = torch.load(new, weights_only=False)["TransitDataModule"]["vocab"]["line_keys"]
    assert vocab[-1] == "C"


def test_missing_pointer_is_a_clear_error(tmp_path, capsys) -> None:
    assert main(["--models", str(tmp_path), "--store", str(tmp_path)]) == 2


def test_job_passes_the_extension_training_options(monkeypatch, tmp_path) -> None:
    import data_pipelines.extend_lines as job

    seen = {}

    def fake_run_job(models, store, *, static, dates, min_fixes, config):
        seen["config"] = config

    monkeypatch.setattr(job, "run_job", fake_run_job)
    argv = ["--models", str(tmp_path), "--store", str(tmp_path), "--tier", "partial"]
    argv += ["--anchor-weight", "10", "--distill-weight", "2", "--distill-per-line", "64"]
    argv += ["--replay-new-share", "0.5", "--new-row-lr", "1e-2", "--lr-decay"]
    assert job.main(argv) == 0
    cfg = seen["config"]
    assert (cfg.tier, cfg.anchor_weight, cfg.distill_weight, cfg.distill_per_line) == (
        "partial",
        10.0,
        2.0,
        64,
    )
    assert cfg.replay_new_share == 0.5 and cfg.new_row_lr == 1e-2 and cfg.lr_decay is True


def test_job_defaults_are_the_validated_tier_settings(monkeypatch, tmp_path) -> None:
    import data_pipelines.extend_lines as job
    from transitnet.extend import ExtensionConfig, config_for_tier

    seen = {}
    monkeypatch.setattr(job, "run_job", lambda *a, config, **k: seen.setdefault("config", config))
    assert job.main(["--models", str(tmp_path), "--store", str(tmp_path)]) == 0
    assert seen["config"] == config_for_tier("row-only") == ExtensionConfig(new_row_lr=3e-2)
    seen.clear()
    assert job.main(["--models", str(tmp_path), "--store", str(tmp_path), "--tier", "replay"]) == 0
    assert seen["config"] == config_for_tier("replay") and seen["config"].tier == "replay"
    seen.clear()
    assert job.main(["--models", str(tmp_path), "--store", str(tmp_path), "--tier", "fork"]) == 0
    assert seen["config"] == config_for_tier("fork") and seen["config"].tier == "fork"
    seen.clear()
    argv = ["--models", str(tmp_path), "--store", str(tmp_path), "--no-lr-decay"]
    assert job.main([*argv, "--tune-layers", "encoder", "trunk", "head"]) == 0
    assert seen["config"].lr_decay is False
    assert seen["config"].tune_layers == ["encoder", "trunk", "head"]


def test_job_refuses_an_unknown_tier(tmp_path) -> None:
    with pytest.raises(SystemExit):
        main(["--models", str(tmp_path), "--store", str(tmp_path), "--tier", "everything"])
