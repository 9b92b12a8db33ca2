"""``transitnet extend-lines``: the extension options reach the run; bad values are refused."""

import json

import pytest
import torch

from tests.synthetic import train_base_checkpoint
from transitnet.cli import main


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ext_cli")
    ckpt, store = train_base_checkpoint(tmp)
    return ckpt, store, tmp


def _argv(ckpt, out, *extra: str) -> list[str]:
    return [
        "extend-lines",
        "--ckpt",
        str(ckpt),
        "--new-lines",
        "C",
        "--max-steps",
        "3",
        "--out",
        str(out),
        *extra,
        "--data.train_dates",
        '["2024-05-07"]',
    ]


def test_partial_with_distillation_options_writes_model_and_report(base) -> None:
    ckpt, _, tmp = base
    out = tmp / "partial"
    extra = ["--tier", "partial", "--distill-weight", "2", "--anchor-weight", "0.5"]
    extra += ["--distill-per-line", "7", "--replay-new-share", "0.5", "--lr-decay"]
    extra += ["--new-row-lr", "1e-2"]
    assert main(_argv(ckpt, out, *extra)) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["tier"] == "partial" and report["steps"] == 3
    assert report["replay_windows"] == 14  # 7 old-line windows of lines A and B
    assert (out / "model.ckpt").is_file()
    hp = torch.load(out / "model.ckpt", weights_only=False)["hyper_parameters"]
    assert hp["distill_weight"] == 2.0 and hp["anchor_weight"] == 0.5
    assert hp["new_row_lr"] == 1e-2 and hp["lr_decay"] is True


def test_fork_tier_writes_a_routed_checkpoint(base) -> None:
    ckpt, _, tmp = base
    out = tmp / "fork"
    argv = _argv(ckpt, out, "--tier", "fork", "--tune-layers", "trunk", "head", "--few-trips", "2")
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["tier"] == "fork" and report["steps"] == 3 and report["lines_added"] == ["C"]
    saved = torch.load(out / "model.ckpt", weights_only=False)
    assert saved["transitnet_forecaster"]["routed_lines"] == ["C"]
    assert saved["hyper_parameters"]["tune_layers"] == ["trunk", "head"]
    assert not any(t.startswith("fork.encoder.") for t in report["tensors_touched"])
    assert any(t.startswith("fork.trunk.") for t in report["tensors_touched"])


def test_replay_share_out_of_range_is_a_clear_error(base) -> None:
    ckpt, _, tmp = base
    argv = _argv(ckpt, tmp / "bad", "--tier", "replay", "--replay-new-share", "1.0")
    assert main(argv) == 2
    assert not (tmp / "bad" / "model.ckpt").exists()


def test_help_names_every_extension_option(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["extend-lines", "--help"])
    text = capsys.readouterr().out
    for opt in (
        "--distill-weight",
        "--anchor-weight",
        "--early-stopping",
        "--few-trips",
        "--replay-new-share",
        "--new-row-lr",
        "--distill-per-line",
        "--lr-decay",
    ):
        assert opt in text
