"""The new-line experiment script: its --quick path end to end, and its pieces."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.synthetic import make_matched, write_matched_store

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import exp_common as ec
import exp_new_line as exp
import exp_new_line_report as report
import exp_new_line_select as sel


def _spec(store: Path, **over: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "name": "syn",
        "store": str(store),
        "timezone": "UTC",
        "train": "2024-05-06T00:00..2024-05-07T00:00",
        "val": "2024-05-07T00:00..2024-05-08T00:00",
        "test": "2024-05-08T00:00..2024-05-09T00:00",
        "new_lines": ["C"],
        "similar": ["A"],
        "levels": ["trips:1", "until:08:30", "all"],
        "horizons_s": [60, 120],
        "past_fixes": 4,
    }
    spec.update(over)
    return spec


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    days = [make_matched(n_vehicles=9, day=f"2024-05-0{d}", seed=d) for d in (6, 7, 8)]
    return write_matched_store(tmp_path_factory.mktemp("exp") / "store", pd.concat(days))


def test_quick_run_writes_every_combination_and_checks_the_bars(store: Path, tmp_path: Path):
    spec = tmp_path / "syn.json"
    spec.write_text(json.dumps(_spec(store)))
    out = tmp_path / "out"
    argv = ["--out", str(out), "--quick", "--datasets", "--spec", str(spec)]
    assert exp.main(argv) == 0

    report = json.loads((out / "report.json").read_text())
    res = report["datasets"]["syn"]
    inits = ["unknown", "mean", "mean_cov", "similar", "random"]
    combos = {(r["level"], r["tier"], r["init"]) for r in res["runs"]}
    # --quick keeps the first and last level: 5 zero-shot + 2 × (naive + 4 tiers × 5 inits),
    # and draws the random init twice at k=0 and at the first level (5 more runs: one per
    # tier at the first level, one at k=0).
    assert len(exp.TIERS) == 4 and len(combos) == 5 + 2 * (1 + 4 * 5)
    assert len(res["runs"]) == len(combos) + 1 + len(exp.TIERS)
    draws = [r for r in res["runs"] if r["init"] == "random" and r["level"] != "all"]
    assert sorted(r["seed"] for r in draws) == [0] * 5 + [1] * 5
    for level in ("trips:1", "all"):
        assert {(level, t, i) for t in exp.TIERS for i in inits} <= combos
        assert res["scratch"][level]["steps"] > 0
    assert {("k=0", "zero-shot", i) for i in inits} <= combos
    zero_shot = res["reference_seeds"][0]["zero_shot"]
    assert set(zero_shot) == set(inits) and zero_shot["unknown"] == res["base"]["new_mae_m"]["mean"]
    by = {(r["level"], r["tier"], r["init"]): r for r in res["runs"]}
    for r in res["runs"]:
        # Three trips of C at level "all": the steps are chosen on its last trip (early
        # stopping's first run counts); one trip at "trips:1": too few to hold one out.
        choice = r.get("step_choice")
        assert (choice is not None) == (r["level"] == "all")
        steps = choice["chosen_steps"] + choice["first_run_steps"] if choice else 1
        assert r["steps"] == (0 if r["tier"] == "zero-shot" else steps)
        assert r["new_mae_m"]["mean"] > 0
        if choice:
            assert choice["curve"][0][0] == 0 and choice["held_windows"] > 0
        if r["tier"] in ("zero-shot", "row-only", "fork"):
            assert r["old_max_abs_diff_m"] == 0.0 and r["forgetting"]["mean_rel"] == 0.0
    # The unknown row is the base model itself: zero-shot/unknown reproduces it exactly.
    unknown = by[("k=0", "zero-shot", "unknown")]["new_mae_m"]
    assert unknown == res["base"]["new_mae_m"]
    assert by[("all", "naive", "unknown")]["old_max_abs_diff_m"] > 0
    bars = {b["bar"]: b for b in res["bars"]}
    assert bars["row-only and fork (and zero-shot) forgetting exactly 0"]["passed"] is True
    assert len(bars) == 6 and all(isinstance(b["passed"], bool) for b in res["bars"])
    # Every tier's candidates ran on validation; one per tier was chosen and then used.
    chosen = res["selection"]["chosen"]
    assert set(chosen) == set(exp.TIERS) and len(res["selection"]["runs"]) == sum(
        len(sel.GRID[t]) for t in exp.TIERS
    )
    for tier in exp.TIERS:
        marked = [r for r in res["selection"]["runs"] if r["tier"] == tier and r.get("chosen")]
        assert len(marked) == 1 and marked[0]["overrides"] == chosen[tier]
        assert chosen[tier] in [dict(c) for c in sel.GRID[tier]]
    assert res["selection"]["held_windows"] > 0 and res["selection"]["old_val_windows"] > 0
    md = (out / "report.md").read_text()
    assert (
        "### Bars" in md
        and "### Settings chosen on validation" in md
        and "joint retraining (upper bound)" in md
        and report["command"] in md
    )
    for png in ("syn_learning_curve.png", "syn_forgetting.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_levels_select_first_trips_a_morning_or_everything(store: Path) -> None:
    data = exp.load_data(exp.Spec(**_spec(store)), exp.Settings(), store.parent)  # type: ignore[arg-type]
    new = data.new_all
    assert set(new.meta["line_key"]) == {"C"} and "C" not in set(data.train_old.meta["line_key"])
    first = data.levels["trips:1"]
    assert first.meta[["vehicle_id", "trip_id"]].drop_duplicates().shape[0] == 1
    assert first.meta["anchor_time"].min() == new.meta["anchor_time"].min()
    morning = data.levels["until:08:30"]
    cutoff = pd.Timestamp("2024-05-06 08:30", tz="UTC")
    assert 0 < len(morning) < len(new) and (morning.meta["anchor_time"] < cutoff).all()
    assert ((new.meta["anchor_time"] < cutoff).sum()) == len(morning)
    assert len(data.levels["all"]) == len(new)


@pytest.mark.parametrize("level", ["trips:0", "trips:x", "until:25:99", "some", "all:1"])
def test_bad_level_is_a_clear_error(store: Path, level: str) -> None:
    with pytest.raises(ValueError, match="bad level"):
        exp.load_data(exp.Spec(**_spec(store, levels=[level])), exp.Settings(), store.parent)  # type: ignore[arg-type]


def test_a_new_line_without_data_is_a_clear_error(store: Path) -> None:
    spec = exp.Spec(**_spec(store, new_lines=["Z"]))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pick lines with data"):
        exp.load_data(spec, exp.Settings(), store.parent)


def test_score_counts_forgetting_per_old_line(store: Path) -> None:
    data = exp.load_data(exp.Spec(**_spec(store)), exp.Settings(), store.parent)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 500, (len(data.test), 2, 3)).astype(np.float32)
    same = exp.score(base.copy(), base, data, min_n=1)
    assert same["old_max_abs_diff_m"] == 0.0 and same["forgetting"]["mean_rel"] == 0.0
    worse = base.copy()
    is_b = (data.test.meta["line_key"] == "B").to_numpy()
    worse[is_b] += 5000.0  # only line B gets worse
    res = exp.score(worse, base, data, min_n=1)
    assert res["forgetting"]["worst_line"] == "B" and res["forgetting"]["worst_rel"] > 1.0
    assert res["forgetting"]["lines"] == 2
    assert res["forgetting"]["mean_rel"] == pytest.approx(res["forgetting"]["worst_rel"] / 2)
    assert exp.score(worse, base, data, min_n=10**6)["forgetting"]["lines"] == 0


def _run(level: str, tier: str, init: str, mae: float, forget: float, seed: int = 0):
    return {
        "level": level,
        "tier": tier,
        "init": init,
        "seed": seed,
        "new_mae_m": {"mean": mae},
        "steps": 10,
        "cpu_s": 1.0,
        "wall_s": 1.0,
        "old_max_abs_diff_m": 0.0 if tier in ("row-only", "zero-shot") else 1.0,
        "forgetting": {"mean_rel": forget, "worst_rel": 2 * forget, "worst_line": "B"},
    }


def test_bars_fail_when_measured_values_miss_them() -> None:
    runs = [
        _run("k=0", "zero-shot", "mean", 120.0, 0.0),
        _run("k=0", "zero-shot", "random", 100.0, 0.0),
        _run("k=0", "zero-shot", "random", 130.0, 0.0, seed=1),  # draws average 115
        _run("k=0", "zero-shot", "unknown", 110.0, 0.0),
        _run("all", "partial", "mean", 105.0, 0.02),
        _run("all", "row-only", "mean", 108.0, 0.0),
    ]
    joint = {"new_mae_m": {"mean": 100.0}, "steps": 50, "cpu_s": 50.0, "wall_s": 50.0}
    bars = report.check_bars({"joint": joint, "runs": runs, "settings_seed": 0}, ["all"])
    by = {b["bar"].split(":")[0]: b for b in bars}
    assert by["day"]["passed"] is False and "steps 20.0 %" in by["day"]["value"]
    assert by["row-only and fork (and zero-shot) forgetting exactly 0"]["passed"] is True
    assert by["partial"]["passed"] is False and "+2.00 %" in by["partial"]["value"]
    beat = bars[-1]
    assert beat["passed"] is False and "zero-shot/mean (+4.3 %)" in beat["value"]
    assert "unknown" not in beat["value"]  # 110 < 115: beats the mean of the draws

    # With zero-shot tables of several base seeds, k=0 is judged on their means.
    seeds = [
        {"zero_shot": {"mean": 100.0, "random": 90.0}},
        {"zero_shot": {"mean": 100.0, "random": 130.0}},
    ]
    res = {"joint": joint, "runs": runs, "settings_seed": 0, "reference_seeds": seeds}
    beat = report.check_bars(res, ["all"])[-1]
    assert beat["passed"] is True and beat["value"] == "all beat random"  # 100 < (90 + 130) / 2
    seeds[1]["zero_shot"]["random"] = 100.0
    beat = report.check_bars(res, ["all"])[-1]
    assert "k=0 zero-shot/mean (+5.3 %, 2 base seeds)" in beat["value"]

    joint = {**joint, "steps": 1000, "cpu_s": 1000.0, "wall_s": 1000.0}
    runs[1:3] = [_run("k=0", "zero-shot", "random", 130.0, 0.0)]
    runs[3]["forgetting"] = {"mean_rel": 0.001, "worst_rel": 0.02, "worst_line": "B"}
    bars = report.check_bars({"joint": joint, "runs": runs, "settings_seed": 0}, ["all"])
    assert all(b["passed"] for b in bars), bars


def test_best_warm_start_only_counts_runs_within_the_compute_budget() -> None:
    joint = {"new_mae_m": {"mean": 100.0}, "steps": 100, "cpu_s": 100.0, "wall_s": 100.0}
    cheap = _run("all", "row-only", "unknown", 109.0, 0.0)  # 10 steps, 1 s: 10 % / 1 %
    dear = _run("all", "partial", "unknown", 101.0, 0.0) | {"cpu_s": 11.0}  # CPU 11 %
    bar = report.best_warm_start([cheap, dear], joint, "all")
    assert bar["passed"] is True and bar["value"].startswith("row-only/unknown: MAE +9.0 %")
    assert "over the budget: partial/unknown +1.0 % at CPU 11.0 %" in bar["value"]
    bar = report.best_warm_start([cheap | {"new_mae_m": {"mean": 111.0}}, dear], joint, "all")
    assert bar["passed"] is False and "+11.0 %" in bar["value"]
    bar = report.best_warm_start([dear], joint, "all")  # nothing within the budget
    assert bar["passed"] is False and bar["value"].startswith("partial/unknown: MAE +1.0 %")


def test_write_json_turns_non_finite_numbers_into_null(tmp_path: Path) -> None:
    path = ec.write_json(tmp_path / "r.json", {"a": float("nan"), "b": [np.float32(1.5)]})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.5]}


@pytest.mark.real_data
def test_austin_store_is_prepared_once_and_yields_every_level(
    shared_data: Path, tmp_path: Path
) -> None:
    atx = shared_data / "austin-capmetro"
    inputs = [tmp_path / f"2017-03-{d}.csv" for d in (16, 21)]
    for path in inputs:
        shutil.copy(atx / "vehicle_positions" / path.name, path)
    store = tmp_path / "store"
    first = ec.prepare_store(store, "capmetro", inputs, str(atx / "gtfs_2017-01"))
    assert "81657 rows stored" in first["import"] and first["matched_files"] == 2
    again = ec.prepare_store(store, "capmetro", inputs, str(atx / "gtfs_2017-01"))
    assert again["import_s"] == 0.0 and again["import"] == first["import"]
    spec = exp.Spec(**{**exp.asdict(exp.DATASETS["austin"]), "store": str(store), "inputs": []})
    data = exp.load_data(spec, exp.Settings(), tmp_path)
    trips = data.levels["trips:3"].meta[["vehicle_id", "trip_id"]].drop_duplicates()
    assert len(trips) == 3
    assert 0 < len(data.levels["trips:3"]) < len(data.levels["until:07:00"]) < len(data.new_all)
    assert (data.test.meta["line_key"] == "803").sum() > 1000
    assert data.train_old.meta["line_key"].nunique() > 50


def test_line_dim_is_capped_at_the_old_lines_count_minus_one() -> None:
    from types import SimpleNamespace

    def data(n: int) -> exp.Data:
        meta = pd.DataFrame({"line_key": [f"L{i % n}" for i in range(3 * n)]})
        return SimpleNamespace(train_old=SimpleNamespace(meta=meta))  # type: ignore[return-value]

    assert exp.line_dim_for(data(61), exp.Settings()) == 32  # Austin: the setting
    assert exp.line_dim_for(data(13), exp.Settings()) == 12  # Auckland: capped
    assert exp.line_dim_for(data(1), exp.Settings()) == 1
    assert exp.line_dim_for(data(13), exp.Settings(line_dim=8)) == 8


def test_validation_holds_out_the_last_trips_of_the_new_line(store: Path) -> None:
    data = exp.load_data(exp.Spec(**_spec(store)), exp.Settings(), store.parent)  # type: ignore[arg-type]
    fit, held = sel.split_last_trips(data.new_all, 0.25)
    assert len(fit) + len(held) == len(data.new_all) and len(held) > 0

    def trips(w: object) -> set[tuple[str, str]]:
        meta = w.meta  # type: ignore[attr-defined]
        return set(zip(meta["vehicle_id"], meta["trip_id"], strict=True))

    assert not trips(fit) & trips(held)
    # Time-ordered: every held-out trip starts after every trip kept for fitting.
    assert (
        held.meta.groupby("trip_id")["anchor_time"].min().min()
        > fit.meta.groupby("trip_id")["anchor_time"].min().max()
    )
    one = data.levels["trips:1"]
    with pytest.raises(ValueError, match="at least 2 trips"):
        sel.split_last_trips(one)


def test_choice_is_the_best_validation_mae_within_the_forgetting_margin() -> None:
    def run(mae: float, mean: float, worst: float) -> dict[str, object]:
        return {"new_mae_m": {"mean": mae}, "forgetting": {"mean_rel": mean, "worst_rel": worst}}

    safe, better_but_forgets, worst_forgets = (
        run(400, 0.001, 0.01),
        run(380, 0.001, 0.02),
        run(370, 0.02, 0.05),
    )
    assert sel.choose([safe, better_but_forgets, worst_forgets]) is safe
    # None eligible nor within the margin: the most conservative (first) candidate.
    assert sel.choose([better_but_forgets, worst_forgets]) is better_but_forgets
    assert sel.choose([worst_forgets, better_but_forgets]) is worst_forgets
    # Over the compute budget (CPU vs joint retraining's): never eligible.
    assert sel.choose([safe, better_but_forgets | {"cpu_ratio": 0.2}]) is safe
    costly = run(300, 0.0, 0.0) | {"cpu_ratio": 0.11}
    assert sel.choose([costly, safe | {"cpu_ratio": 0.05}]) is not costly
    # The choice keeps a margin to the compute bar: 9 % of joint's CPU is too close.
    assert sel.choose([run(300, 0.0, 0.0) | {"cpu_ratio": 0.09}, safe]) is safe
    # None eligible: forgetting before compute (within the margin, over the budget) ...
    assert sel.choose([worst_forgets, costly]) is costly
    # ... and when nothing is within the margin, the most conservative (first) candidate.
    assert sel.choose([worst_forgets, better_but_forgets | {"cpu_ratio": 0.05}]) is worst_forgets
    # Row-only has no old line that changes (NaN-free zero forgetting): lowest MAE wins.
    assert sel.choose([run(300, 0.0, 0.0), run(290, 0.0, 0.0)])["new_mae_m"]["mean"] == 290


def test_chosen_settings_apply_to_every_run_of_their_tier(store: Path, tmp_path: Path) -> None:
    data = exp.load_data(exp.Spec(**_spec(store)), exp.Settings(), store.parent)  # type: ignore[arg-type]
    experiment = exp.Experiment(data, exp.Settings(), tmp_path)
    experiment.chosen = {"replay": {"anchor_weight": 0.0, "replay_per_line": 256}}
    cfg = experiment.config("mean", "replay", 7, 3)
    assert (cfg.anchor_weight, cfg.replay_per_line, cfg.max_steps, cfg.seed) == (0.0, 256, 7, 3)
    assert experiment.config("mean", "partial", 7, 3).anchor_weight == exp.Settings().anchor_weight


def test_library_tier_defaults_are_candidates_the_experiment_validates() -> None:
    from transitnet.extend import TIER_DEFAULTS, config_for_tier

    assert set(TIER_DEFAULTS) == set(sel.GRID)
    for tier, chosen in TIER_DEFAULTS.items():
        assert any(
            all(chosen.get(k) == v for k, v in candidate.items()) for candidate in sel.GRID[tier]
        ), tier
        cfg = config_for_tier(tier, seed=3)
        assert cfg.tier == tier and cfg.seed == 3
        assert all(getattr(cfg, k) == v for k, v in chosen.items())


def test_validated_warm_start_takes_the_tier_validation_prefers() -> None:
    joint = {"new_mae_m": {"mean": 100.0}, "steps": 1000, "cpu_s": 1000.0, "wall_s": 1000.0}
    day = [
        _run("all", "row-only", "unknown", 109.0, 0.0),
        _run("all", "fork", "unknown", 95.0, 0.0),
    ]
    zero = {"mean_rel": 0.0, "worst_rel": 0.0}

    def val(tier: str, mae: float, cpu: float) -> dict:
        return {"tier": tier, "chosen": True, "new_mae_m": {"mean": mae}, "cpu_ratio": cpu,
                "forgetting": zero}  # fmt: skip

    # Validation prefers row-only: its test run (+9 %) is what counts, not the fork's.
    bar = report.validated_warm_start([val("row-only", 90, 0.05), val("fork", 95, 0.05)], day,
                                      joint, "all")  # fmt: skip
    assert (
        bar["passed"] is True and bar["value"].startswith("row-only") and "+9.0 %" in bar["value"]
    )
    # A fork over the budget on validation is not eligible, whatever its MAE.
    bar = report.validated_warm_start([val("row-only", 120, 0.05), val("fork", 80, 0.2)], day,
                                      joint, "all")  # fmt: skip
    assert bar["value"].startswith("row-only")
    bar = report.validated_warm_start([val("fork", 80, 0.05)], day[:1], joint, "all")
    assert bar["passed"] is False and "no tier" in bar["value"]
    # Validation prefers the fork: its test run is scored.
    bar = report.validated_warm_start([val("row-only", 120, 0.05), val("fork", 80, 0.05)], day,
                                      joint, "all")  # fmt: skip
    assert bar["passed"] is True and bar["value"].startswith("fork") and "-5.0 %" in bar["value"]
