from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from transitnet import analysis_reports as ar
from transitnet.datasets.windows import Windows
from transitnet.evaluate import Evaluation


def _metrics() -> dict:
    def block(scale: float, lines: dict[str, float]) -> dict:
        return {
            "mae_m": {"60": 100 * scale, "300": 400 * scale, "120": 200 * scale},
            "rmse_m": {"60": 1.0, "300": 2.0, "120": None},
            "n": {"60": 10, "300": 8, "120": 9},
            "per_line": {
                k: {"mae_m": {"60": v, "120": v, "300": v * scale}, "n": n}
                for (k, v), n in zip(lines.items(), (50, 20, 5), strict=False)
            },
        }

    out = {
        "model": block(1.0, {"A": 100.0, "B": 300.0, "C": 50.0}),
        "persistence": block(3.0, {"A": 300.0, "B": 300.0, "C": 60.0}),
        "historical_mean": block(1.5, {"A": 120.0, "B": 200.0}),
    }
    out["model"]["coverage"] = {
        "band": [0.1, 0.9],
        "by_horizon": {"60": 0.8, "300": 0.7, "120": None},
    }
    return out


def test_read_json_report_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ar.read_json_report(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ar.read_json_report(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(ValueError, match="JSON object"):
        ar.read_json_report(tmp_path / "list.json")
    (tmp_path / "ok.json").write_text(json.dumps(_metrics()))
    assert ar.read_json_report(tmp_path / "ok.json")["model"]["mae_m"]["60"] == 100.0


def test_metric_tables_sort_horizons_numerically() -> None:
    table = ar.tabulate_metrics(_metrics())
    assert table.columns.tolist() == ["1 min", "2 min", "5 min"]
    assert table.index.tolist() == ["model", "historical_mean", "persistence"]
    assert math.isnan(ar.tabulate_metrics(_metrics(), "rmse_m").loc["model", "2 min"])
    with pytest.raises(ValueError, match="no 'coverage_x'"):
        ar.tabulate_metrics(_metrics(), "coverage_x")
    with pytest.raises(ValueError, match=r"not a metrics\.json"):
        ar.tabulate_metrics({"report": 1})
    gain = ar.tabulate_improvement(_metrics())
    assert gain.loc["5 min", "best_baseline"] == "historical_mean"
    assert gain.loc["5 min", "improvement"] == pytest.approx(1 - 400 / 600)
    assert gain.loc["1 min", "coverage"] == 0.8 and math.isnan(gain.loc["2 min", "coverage"])
    assert ar.horizon_label("90") == "90 s"


def test_per_line_table_and_plots() -> None:
    per_line = ar.tabulate_per_line(_metrics(), 300)
    assert per_line.index.tolist() == ["A", "B", "C"]  # by windows
    assert per_line.loc["B", "best_baseline"] == "historical_mean"
    assert per_line.loc["A", "improvement"] == pytest.approx(1 - 100 / 180)
    assert per_line.loc["C", "best_baseline"] == "persistence"  # the only baseline with C
    fig = ar.plot_per_line_error(_metrics(), 300, min_n=10)
    assert "2 lines" in fig.axes[0].get_title()
    fig = ar.plot_error_by_horizon(_metrics(), "t")
    assert len(fig.axes[0].get_lines()) == 3 and len(fig.axes[1].patches) == 3


def _windows() -> Windows:
    n, horizons = 3, (60, 120, 300)
    targets = np.array([[100.0, 200.0, 500.0], [0.0, 50.0, 80.0], [100.0, 0.0, 300.0]])
    mask = np.array([[True, True, True], [True, True, True], [True, False, True]])
    meta = pd.DataFrame({"line_key": ["A", "A", "B"]})
    return Windows(
        np.zeros((n, 2, 1)), np.ones(n, np.int64), np.zeros((n, 1)), targets, mask, meta, horizons
    )


def test_arrival_errors_read_the_observed_curve() -> None:
    forecast = np.array(
        [
            [150.0, 200.0, 600.0],  # 600 m: never observed -> left out
            [0.0, 65.0, 80.0],  # 0 m: no place ahead -> left out
            [200.0, 300.0, 250.0],
        ]
    )  # masked 120 s target is skipped
    out = ar.compute_arrival_errors(_windows(), forecast)
    got = {(int(r.window), int(r.horizon_s)): r.actual_s for r in out.itertuples()}
    assert got[(0, 60)] == pytest.approx(90.0)  # halfway between 100 m @60 s and 200 m @120 s
    assert got[(0, 120)] == pytest.approx(120.0)
    assert (0, 300) not in got and (1, 60) not in got
    assert got[(1, 120)] == pytest.approx(210.0)  # 65 m: halfway from 50 m @120 s to 80 m @300 s
    assert got[(2, 60)] == pytest.approx(60 + 240 * 100 / 200)  # 100 m @60 s to 300 m @300 s
    assert out.loc[out["window"] == 0, "error_s"].tolist() == pytest.approx([-30.0, 0.0])


def test_eta_bands_score_model_and_baselines_on_the_same_windows() -> None:
    windows = _windows()
    model = np.repeat(windows.targets[:, :, None], 3, axis=2)  # perfect median
    evaluation = Evaluation(windows, model, {"persistence": np.zeros((3, 3))}, (0.1, 0.5, 0.9))
    bands = ar.tabulate_eta_bands(evaluation)
    assert bands.index.tolist() == ["model", "persistence"]
    assert bands.loc["model", "0-3"] == 1.0 and bands.loc["model", "n"] > 0
    assert bands.loc["persistence", "n"] == 0 and math.isnan(bands.loc["persistence", "score"])
    assert len(ar.plot_eta_bands(bands).axes[0].patches) == 10
