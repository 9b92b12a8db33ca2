import argparse
import json
from pathlib import Path

import pytest

from tests.class_fixtures import make_store, one_torch_thread
from transitnet.cli import configure_logging, main
from transitnet.cli import extend_classes as command
from transitnet.cli.lightning import config_path

CONFIG = config_path("route_classifier.yaml")


def _extend_cli(argv: list[str]) -> int:
    """Dispatch like ``transitnet.cli.main`` does for a registered subcommand."""
    parser = argparse.ArgumentParser(prog="transitnet")
    command.register(parser.add_subparsers(dest="command", required=True))
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    configure_logging("INFO")
    status: int = args.func(args)
    return status


def _fit_args(store: Path, root: Path, *more: str) -> list[str]:
    return [
        "fit",
        "--config",
        str(CONFIG),
        "--data.store",
        str(store),
        "--data.train_dates",
        "[2024-05-06]",
        "--data.val_dates",
        "[2024-05-07]",
        "--data.exclude_classes",
        "[E]",
        "--data.min_windows_per_class",
        "5",
        "--data.batch_size",
        "32",
        "--model.hidden_dim",
        "8",
        "--trainer.default_root_dir",
        str(root),
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        *more,
    ]


def test_fit_then_extend_classes_through_the_real_cli(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    with one_torch_thread():
        assert main(_fit_args(store, tmp_path / "dev", "--trainer.fast_dev_run", "true")) == 0
        assert main(_fit_args(store, tmp_path / "run", "--trainer.max_epochs", "2")) == 0
        ckpt = next((tmp_path / "run").rglob("last.ckpt"))
        out = tmp_path / "ext"
        status = _extend_cli(
            [
                "extend-classes",
                "--ckpt",
                str(ckpt),
                "--init",
                "imprint",
                "--mode",
                "frozen",
                "--align",
                "wa",
                "--wa-claim-rate",
                "0.02",
                "--shots",
                "2",
                "--max-steps",
                "5",
                "--min-windows",
                "5",
                "--eval-dates",
                "2024-05-08",
                "--out",
                str(out),
                "--data.train_dates",
                "[2024-05-07]",
            ]
        )
    assert status == 0
    report = json.loads((out / "report.json").read_text())
    assert report["classes_added"] == ["E"] and report["init"] == "imprint"
    assert report["mode"] == "frozen" and report["steps"] == 5
    assert report["wa_factor"] is None and report["wa_offset"] >= 0  # cosine: statistical WA
    assert set(report["evaluation"]) == {"before", "after_add", "after"}
    for stage in report["evaluation"].values():
        assert {"old", "new", "all"} <= set(stage)
    assert (out / "model.ckpt").is_file() and (out / "report.md").is_file()


def test_every_option_has_help_and_bad_input_is_refused(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        _extend_cli(["extend-classes", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--ckpt",
        "--config",
        "--new-classes",
        "--init",
        "--mode",
        "--align",
        "--shots",
        "--mask",
        "--max-steps",
        "--eval-dates",
        "--out",
    ):
        assert option in text
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    actions = sub.choices["extend-classes"]._actions
    assert all(a.help for a in actions if a.option_strings)
    with pytest.raises(SystemExit):
        _extend_cli(["extend-classes", "--ckpt", "x", "--out", "y", "--mode", "magic"])
    with pytest.raises(ValueError, match=r"only --data\.KEY"):
        _extend_cli(["extend-classes", "--ckpt", "x", "--out", "y", "--bogus", "1"])
    with pytest.raises(FileNotFoundError):
        _extend_cli(["extend-classes", "--ckpt", str(tmp_path / "none.ckpt"), "--out", "y"])
