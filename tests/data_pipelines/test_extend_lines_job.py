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
