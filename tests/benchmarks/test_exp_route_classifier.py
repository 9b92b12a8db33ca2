"""The route-classifier experiment's grid, bars and write-up (no training: rows built here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import exp_route_classifier as exp
import exp_route_classifier_select as sel


def _row(n, method, init, drop, new, *, align="none", head="cosine", rate=None, mode="frozen"):
    return {"n": n, "method": method, "init": init, "mode": mode, "align": align, "head": head,
            "old_acc_drop_pp": drop, "new_acc": new, "avg_incremental_accuracy": 0.8,
            "old_argmax_unchanged_after_add": True, "wa_claim_rate": rate}  # fmt: skip


def _result():
    runs = []
    for n in (1, 20):
        runs += [
            _row(n, "frozen", "imprint", 20.0, 0.9),
            _row(n, "frozen+wa", "imprint", 0.8, 0.3, align="wa", rate=0.01),
            _row(n, "frozen+wa@0.1", "imprint", 3.0, 0.6, align="wa", rate=0.1),
            _row(n, "none", "low_bias", 0.0, 0.0, mode="none"),
        ]
    joint = {"old": {"acc": 0.9}, "new": {"acc": 0.8}}
    return {"dataset": "syn", "runs": runs, "joint": {"1": joint, "20": joint},
            "base": {"old": {"acc": 0.91}, "train_s": 1.0}, "base_linear": joint,
            "joint_all_data": joint, "old_classes": ["a"], "new_classes": ["b"],
            "windows": {}, "wall_s": 1.0}  # fmt: skip


def test_bars_judge_statistical_wa_and_the_sweep_and_the_report_renders(tmp_path):
    s = exp.Settings(shots=(1, 20))
    bars = exp.check_bars(_result(), s)
    wa = bars["frozen_imprint_wa"]
    assert wa["frozen+wa"]["bar1_drop_le_1pp"] and not wa["frozen+wa@0.1"]["bar1_drop_le_1pp"]
    assert wa["frozen"]["bar2_ratio_to_joint_n20"] == 1.125
    assert bars["bars_1_and_2_together"] == []  # 0.3 / 0.8 < 80 %
    assert "imprint · frozen" in bars["bar2_methods_meeting"]
    result = _result()
    exp.write_outputs([result], s, tmp_path, {"setup": "test", "settings": {}})
    text = (tmp_path / "report.md").read_text()
    assert "statistical WA" in text and "frozen+wa@0.1" in text
    assert (tmp_path / "syn_tradeoff_n20.png").stat().st_size > 0
    assert json.loads((tmp_path / "report.json").read_text())["results"][0]["bars"]


def test_grids_add_the_claim_rate_sweep_with_labels():
    s = exp.Settings(wa_sweep=(0.1,))
    swept = [c for c in exp.method_grid(s) if c.align == "wa" and c.wa_claim_rate == 0.1]
    assert {c.pseudo_ratio for c in swept} == {0.0, 1.0} and all(c.init == "imprint" for c in swept)
    grid = sel.extension_grid(s, [0.01], 20)
    labels = [sel.label(c) for c in grid]
    assert "frozen+wa@0.01/full" in labels and "frozen+pseudo+wa@0.01" in labels
    assert labels[-2:] == ["prototype", "frozen+old-data"]
    assert "frozen+old-data" not in [sel.label(c) for c in sel.extension_grid(s, [0.01], 1)]
    gated = [c for c in exp.method_grid(exp.Settings(gate_sweep=(0.1,))) if c.claim_gate]
    assert {(c.align, c.pseudo_ratio, c.claim_gate) for c in gated} == {
        ("wa", 1.0, 0.1),
        ("none", 1.0, 0.1),
    }
    labels = [sel.label(c) for c in sel.extension_grid(s, [0.01], 5, ("full", "mix"), (0.1,))]
    assert "frozen+pseudo+wa@0.01/mix" in labels and "frozen+pseudo/full+gate@0.1" in labels
    assert "frozen+pseudo+wa@0.01/full+gate@0.1" in labels


def test_best_table_keeps_no_old_data_wa_methods_within_1pp_everywhere():
    def res(drop_small, new_small):
        runs = [
            {"n": n, "method": m, "old_drop_pp": d, "new_acc": a}
            for n in (1, 20)
            for m, d, a in (
                ("frozen+wa@0.01", 2.0 if n == 1 else 0.5, 0.9),
                ("frozen+wa@0.001", drop_small, new_small),
                ("frozen", 0.0, 0.95),
            )
        ]
        runs.append({"n": 20, "method": "frozen+old-data", "old_drop_pp": 0.1, "new_acc": 0.9})
        return {"runs": runs, "joint_n_max": {"new": 0.8}}

    results = {"a": {"v": res(0.4, 0.6)}, "b": {"v": res(0.9, 0.4), "w": res(1.5, 0.9)}}
    table = sel.best_table(results).splitlines()
    assert table[2].startswith("| v | frozen+wa@0.001 | a: 0.40 / 60.0 % (75 %); b: 0.90")
    assert "a: +0.1 pp / 90.0 %" in table[2]
    assert table[3].startswith("| w | none |")  # every WA method loses > 1 pp somewhere


def test_select_variants_spell_out_the_descriptor():
    from dataclasses import replace

    s = exp.Settings()
    assert s.geo_dim == 256 and s.geo_length == 0.1  # the shipped choice
    assert replace(s, **sel.VARIANTS["plain"]).geo_dim == 0
    geo = replace(s, **sel.VARIANTS["geo"])
    assert (geo.geo_dim, geo.geo_length, geo.geo_weight) == (128, 0.05, 1.0)
    assert replace(s, **sel.VARIANTS["aux"]).geo_dim == 0
