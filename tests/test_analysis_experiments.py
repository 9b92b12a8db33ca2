from __future__ import annotations

import math

import pytest

from transitnet import analysis_experiments as ae


def _run(level: str, tier: str, init: str, mae: float, seed: int = 0, rel: float = 0.0) -> dict:
    return {
        "level": level,
        "tier": tier,
        "init": init,
        "seed": seed,
        "steps": 5,
        "cpu_s": 0.1,
        "new_mae_m": {"120": mae, "mean": mae},
        "forgetting": {"mean_rel": rel, "worst_rel": 2 * rel, "worst_line": "x", "lines": 3},
        "old_max_abs_diff_m": 0.0 if tier in ("row-only", "zero-shot") else 12.5,
    }


def _new_line_report() -> dict:
    runs = [
        _run("k=0", "zero-shot", "unknown", 700.0),
        _run("k=0", "zero-shot", "random", 720.0),
        _run("k=0", "zero-shot", "random", 740.0, seed=1),
        _run("trips:3", "naive", "unknown", 650.0, rel=0.05),
        _run("trips:3", "row-only", "unknown", 660.0),
        _run("trips:3", "row-only", "random", 670.0),
        _run("trips:3", "row-only", "random", 690.0, 1),
        _run("all", "naive", "unknown", 600.0, rel=0.08),
        _run("all", "row-only", "unknown", 640.0),
        _run("all", "row-only", "random", 650.0),
        _run("all", "partial", "unknown", 620.0, rel=0.01),
        _run("all", "partial", "random", 630.0, rel=0.02),
    ]
    res = {
        "runs": runs,
        "spec": {"levels": ["trips:3", "all"], "new_lines": ["803"]},
        "settings_seed": 0,
        "scratch": {
            "trips:3": {"new_mae_m": {"mean": 9000.0}},
            "all": {"new_mae_m": {"mean": 610.0}},
        },
        "historical_mean": {"trips:3": {"mean": 890.0}, "all": {"mean": 530.0}},
        "constant_speed_mae_m": {"mean": 850.0},
        "joint": {
            "new_mae_m": {"mean": 600.0},
            "steps": 100,
            "cpu_s": 1.0,
            "forgetting": {"mean_rel": -0.01, "worst_rel": 0.1, "worst_line": "y"},
            "old_max_abs_diff_m": 99.0,
        },
        "bars": [{"bar": "row-only forgetting exactly 0", "passed": True, "value": "0 m"}],
    }
    return {"settings": {"seed": 0}, "datasets": {"austin": res}}


def test_learning_curves_table() -> None:
    table = ae.tabulate_learning_curves(_new_line_report(), "austin")
    assert table.columns.tolist() == ["k=0", "3 trips", "day"]
    assert table.loc["row-only / unknown"].tolist() == [700.0, 660.0, 640.0]
    assert table.loc["row-only / random"].tolist() == [730.0, 680.0, 650.0]  # mean of draws
    assert table.loc["partial / unknown", "day"] == 620.0
    assert math.isnan(table.loc["partial / unknown", "3 trips"])  # not run at that level
    assert table.loc["naive fine-tuning"].tolist() == [700.0, 650.0, 600.0]
    assert table.loc["unknown row (base model)"].tolist() == [700.0] * 3
    assert math.isnan(table.loc["scratch (new line only)", "k=0"])
    assert table.loc["joint retraining (day)", "day"] == 600.0
    fig = ae.plot_learning_curves(_new_line_report(), "austin")
    assert [ax.get_title() for ax in fig.axes] == ["row-only", "partial"]
    assert any("9,000 m" in t.get_text() for t in fig.axes[0].texts)  # off the scale, written


def test_forgetting_and_bars_tables() -> None:
    table = ae.tabulate_forgetting(_new_line_report(), "austin")
    assert table["tier"].tolist() == [
        "naive",
        "row-only",
        "row-only",
        "partial",
        "partial",
        "joint retraining",
    ]  # main seed only
    row_only = table[table["tier"] == "row-only"]
    assert (row_only["old_max_abs_diff_m"] == 0.0).all()
    assert table.loc[0, "mean_rel_pct"] == pytest.approx(8.0)
    assert (
        ae.tabulate_forgetting(_new_line_report(), "austin", "trips:3")["level"].iloc[0]
        == "trips:3"
    )
    with pytest.raises(ValueError, match="no runs at level"):
        ae.tabulate_forgetting({"datasets": {"austin": {"runs": [], "spec": {}}}}, "austin", "x")
    assert len(ae.plot_forgetting(_new_line_report(), "austin").axes[0].patches) == 12
    bars = ae.tabulate_bars(_new_line_report(), "austin")
    assert bars.to_dict("records") == [
        {"bar": "row-only forgetting exactly 0", "passed": True, "value": "0 m"}
    ]


def test_select_dataset_errors() -> None:
    with pytest.raises(ValueError, match="holds \\['austin'\\]"):
        ae.select_dataset(_new_line_report(), "auckland")
    with pytest.raises(ValueError, match="not an experiment report"):
        ae.select_dataset({"model": {}}, "austin")
    assert ae.level_label("until:09:30") == "until 09:30" and ae.level_label("odd") == "odd"


def _class_report() -> dict:
    def run(n: int, init: str, method: str, new: float, drop: float) -> dict:
        return {
            "n": n,
            "init": init,
            "method": method,
            "new_acc": new,
            "old_acc_drop_pp": drop,
            "avg_incremental_accuracy": 0.6,
            "old_acc": 0.7,
        }

    runs = [
        run(1, "imprint", "frozen", 0.8, 20.0),
        run(5, "imprint", "frozen", 0.9, 21.0),
        run(1, "mean", "replay+bic", 0.3, 8.0),
        run(5, "mean", "replay+bic", 0.2, 7.0),
    ]
    result = {
        "dataset": "austin",
        "runs": runs,
        "new_classes": ["5", "7"],
        "joint": {"1": {"new": {"acc": 0.01}}, "5": {"new": {"acc": 0.4}}},
        "bars": {"bar3_low_bias_and_mask_unchanged": True, "bar2_methods_meeting": ["a"]},
    }
    return {"results": [result]}


def test_class_extension_tables_and_tradeoff() -> None:
    table = ae.tabulate_class_extension(_class_report(), "austin", "new_acc")
    assert table.columns.tolist() == ["n=1", "n=5"]
    assert table.loc["imprint · frozen"].tolist() == [0.8, 0.9]
    assert table.loc["joint retraining"].tolist() == [0.01, 0.4]
    drops = ae.tabulate_class_extension(_class_report(), "austin", "old_acc_drop_pp")
    assert "joint retraining" not in drops.index
    ax = ae.plot_class_tradeoff(_class_report(), "austin").axes[0]
    assert "n=5" in ax.get_title() and len(ax.collections) == 2
    bars = ae.tabulate_bars(_class_report(), "austin")
    assert bars.set_index("bar").loc["bar3_low_bias_and_mask_unchanged", "passed"] is True
