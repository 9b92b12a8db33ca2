import json
from pathlib import Path

import pytest

from transitnet.cli import main


@pytest.mark.slow
def test_demo_runs_end_to_end_on_the_simulated_network(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--hours", "1.5", "--epochs", "1"]) == 0
    assert "Report:" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["served"]["done"] is True
    stored = summary["stored"]
    assert stored["rows"] > 500 and stored["vehicles"] >= 4
    assert (out / "store" / "matched").is_dir()
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert {"model", "persistence", "constant_speed", "historical_mean"} <= set(metrics)
    assert (out / "report" / "report.md").read_text().startswith("# Forecast evaluation")
    assert (out / "report" / "mae_by_horizon.png").stat().st_size > 1000
