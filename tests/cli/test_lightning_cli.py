from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.synthetic import make_matched, write_matched_store
from transitnet.cli import main
from transitnet.cli.lightning import config_path

CONFIGS = sorted(Path(config_path("forecast.yaml")).parent.glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_parses(config: Path) -> None:
    parsed = yaml.safe_load(config.read_text())
    assert {"model", "data", "trainer"} <= set(parsed)
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(config), "--print_config"])
    assert exc.value.code == 0


def test_fit_fast_dev_run_through_the_real_cli(tmp_path: Path) -> None:
    store = write_matched_store(
        tmp_path / "store",
        pd.concat([make_matched(day="2024-05-06"), make_matched(day="2024-05-07", seed=1)]),
    )
    args = [
        "fit",
        "--config",
        str(config_path("forecast.yaml")),
        "--data.store",
        str(store),
        "--data.train_dates",
        "[2024-05-06]",
        "--data.val_dates",
        "[2024-05-07]",
        "--data.batch_size",
        "16",
        "--model.hidden_dim",
        "8",
        "--trainer.fast_dev_run",
        "true",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.logger",
        "false",
    ]
    assert main(args) == 0


def test_data_overrides_keep_dates_as_text(tmp_path: Path) -> None:
    from transitnet.cli.overrides import parse_data_overrides

    out = parse_data_overrides(
        ["--data.train_dates", "[2017-03-16, 2017-03-17..2017-03-18]", "--data.batch_size=64"]
    )
    assert out == {"train_dates": ["2017-03-16", "2017-03-17..2017-03-18"], "batch_size": 64}
    with pytest.raises(ValueError, match="only --data"):
        parse_data_overrides(["--model.lr", "1"])
