"""Scoring :mod:`exp_new_line`'s runs: metrics, forgetting, the issue's bars.

Input is the ``report.json`` content the experiment builds (one block per dataset with
``runs``, ``base``, ``joint``, ``scratch``, ``historical_mean``, ``reference_seeds``).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Protocol

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import exp_common as ec

from transitnet.datasets.windows import Windows
from transitnet.metrics import compute_mae

TIERS = ("row-only", "partial", "replay", "fork")


class Scored(Protocol):
    """What scoring needs: the windows scored and which of them are the new lines'."""

    @property
    def test(self) -> Windows:
        """The windows scored."""
        ...

    @property
    def is_new_test(self) -> np.ndarray:
        """Mask of the new lines' windows in ``test``."""
        ...


class Described(Scored, Protocol):
    """A dataset as described in the report: also its training windows and levels."""

    @property
    def train_old(self) -> Windows:
        """Old lines' training windows."""
        ...

    @property
    def new_all(self) -> Windows:
        """The new lines' training windows."""
        ...

    @property
    def levels(self) -> dict[str, Windows]:
        """The new lines' windows per k level."""
        ...


def new_line_mae(pred: np.ndarray, data: Scored) -> dict[str, float]:
    """``{horizon: MAE, "mean": …}`` of ``(N_new, H)`` point forecasts on the new lines."""
    t = data.test.subset(data.is_new_test)
    mae = compute_mae(pred, t.targets, t.target_mask)
    out = {str(h): float(v) for h, v in zip(t.horizons_s, mae, strict=True)}
    return {**out, "mean": float(np.nanmean(mae))}


def score(pred: np.ndarray, base_pred: np.ndarray, data: Scored, min_n: int) -> dict[str, Any]:
    """New-line MAE, old lines' forgetting against the base, and bit-identity.

    Args:
        pred: ``(N, H, Q)`` forecasts on ``data.test``.
        base_pred: The base model's ``(N, H, Q)`` forecasts on the same windows.
        data: The dataset (test windows, new line keys).
        min_n: Old lines with fewer test windows are left out of forgetting.
    """
    test, mid, is_new = data.test, pred.shape[-1] // 2, data.is_new_test
    old = ~is_new
    rel, rel_h = ec.compute_relative_change(
        pred[old, :, mid],
        base_pred[old, :, mid],
        test.targets[old],
        test.target_mask[old],
        test.meta["line_key"].astype(str).to_numpy()[old],
        min_n,
    )
    worst = max(rel, key=lambda k: rel[k]) if rel else None
    by_h = np.nanmean(rel_h, axis=0) if len(rel_h) else np.full(rel_h.shape[1], np.nan)
    return {
        "new_mae_m": new_line_mae(pred[is_new, :, mid], data),
        "forgetting": {
            "mean_rel": float(np.mean(list(rel.values()))) if rel else math.nan,
            "worst_rel": rel[worst] if worst else math.nan,
            "worst_line": worst,
            "lines": len(rel),
            "mean_rel_by_h": dict(zip(map(str, test.horizons_s), by_h.tolist(), strict=True)),
        },
        "old_max_abs_diff_m": float(np.abs(pred[old] - base_pred[old]).max(initial=0.0)),
    }


def summarise(pred: np.ndarray, data: Scored) -> dict[str, Any]:
    """A reference model's new-line MAE and its MAE over all old-line test windows."""
    mid, old = pred.shape[-1] // 2, ~data.is_new_test
    t = data.test
    mae = compute_mae(pred[old, :, mid], t.targets[old], t.target_mask[old])
    old_mae = {
        **{str(h): float(v) for h, v in zip(t.horizons_s, mae, strict=True)},
        "mean": float(np.nanmean(mae)),
    }
    return {"new_mae_m": new_line_mae(pred[data.is_new_test, :, mid], data), "old_mae_m": old_mae}


def describe_windows(data: Described) -> dict[str, Any]:
    """Window and trip counts per split and level."""
    levels = {
        lv: {"windows": len(w), "trips": len(w.meta[["vehicle_id", "trip_id"]].drop_duplicates())}
        for lv, w in data.levels.items()
    }
    return {
        "train_old": len(data.train_old),
        "train_new": len(data.new_all),
        "test": len(data.test),
        "test_new": int(data.is_new_test.sum()),
        "old_lines": int(data.train_old.meta["line_key"].nunique()),
        "levels": levels,
    }


def random_mean(runs: list[dict[str, Any]], level: str, tier: str) -> tuple[float, list[float]]:
    """Mean new-line MAE of the random init's draws at ``level``/``tier``, and the draws."""
    draws = [
        r["new_mae_m"]["mean"]
        for r in runs
        if r["init"] == "random" and r["level"] == level and r["tier"] == tier
    ]
    return (float(np.mean(draws)) if draws else math.nan), draws


def main_runs(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Runs at the main seed (one per level × tier × init)."""
    return [r for r in res["runs"] if r["seed"] == res["settings_seed"]]


def check_bars(res: dict[str, Any], levels: list[str]) -> list[dict[str, Any]]:
    """The issue's bars, each with what was measured and pass/fail."""
    runs, joint, bars = main_runs(res), res["joint"], []
    day = [r for r in runs if r["level"] == levels[-1] and r["tier"] != "naive"]
    if day:
        bars.append(best_warm_start(day, joint, levels[-1]))
    if day and res.get("selection"):
        bars.append(validated_warm_start(res["selection"]["runs"], day, joint, levels[-1]))
    frozen = [r for r in res["runs"] if r["tier"] in ("row-only", "fork", "zero-shot")]
    diff = max((r["old_max_abs_diff_m"] for r in frozen), default=math.nan)
    bars.append(
        {
            "bar": "row-only and fork (and zero-shot) forgetting exactly 0",
            "passed": diff == 0.0,
            "value": f"max |old-line forecast change| over {len(frozen)} runs: {diff:g} m",
        }
    )
    for tier in ("partial", "replay"):
        tr = [r for r in runs if r["tier"] == tier]
        if tr:
            mean = max(r["forgetting"]["mean_rel"] for r in tr)
            w = max(tr, key=lambda r: r["forgetting"]["worst_rel"])
            bars.append(
                {
                    "bar": f"{tier}: mean forgetting <= 1 %, worst line <= 3 %",
                    "passed": mean <= 0.01 and w["forgetting"]["worst_rel"] <= 0.03,
                    "value": f"max over {len(tr)} runs: mean {100 * mean:+.2f} %, worst line "
                    f"{100 * w['forgetting']['worst_rel']:+.2f} % (line "
                    f"{w['forgetting']['worst_line']}, {w['level']} {w['init']})",
                }
            )
    bars.append(beats_random(res, runs, levels[0]))
    return bars


def best_warm_start(day: list[dict[str, Any]], joint: dict[str, Any], level: str) -> dict[str, Any]:
    """Bar: the best warm start costing <= 10 % of joint's compute is within 10 % of its MAE.

    Compute is optimizer steps and CPU seconds, both against joint retraining's. Runs over
    the budget cannot pass; when none is within it, the best run overall is shown failing.
    """

    def ratio(r: dict[str, Any]) -> dict[str, float]:
        return {k: r[k] / joint[k] for k in ("steps", "cpu_s", "wall_s")}

    within = [r for r in day if ratio(r)["steps"] <= 0.10 and ratio(r)["cpu_s"] <= 0.10]
    best = min(within or day, key=lambda r: r["new_mae_m"]["mean"])
    top = min(day, key=lambda r: r["new_mae_m"]["mean"])
    gap, rt = best["new_mae_m"]["mean"] / joint["new_mae_m"]["mean"] - 1.0, ratio(best)
    value = (
        f"{best['tier']}/{best['init']}: MAE {100 * gap:+.1f} % vs joint; steps "
        f"{100 * rt['steps']:.1f} %, CPU {100 * rt['cpu_s']:.1f} %, wall "
        f"{100 * rt['wall_s']:.1f} % of joint's"
    )
    if top is not best:
        top_gap = top["new_mae_m"]["mean"] / joint["new_mae_m"]["mean"] - 1.0
        value += (
            f" (over the budget: {top['tier']}/{top['init']} {100 * top_gap:+.1f} % at CPU "
            f"{100 * ratio(top)['cpu_s']:.1f} %)"
        )
    return {
        "bar": f"{ec.level_label(level)}: best warm start within 10 % of joint retraining's "
        "new-line MAE, at <= 10 % of its compute (steps and CPU s)",
        "passed": bool(within) and gap <= 0.10,
        "value": value,
    }


def validated_warm_start(
    selection: list[dict[str, Any]], day: list[dict[str, Any]], joint: dict[str, Any], level: str
) -> dict[str, Any]:
    """Bar: as :func:`best_warm_start`, but the tier is also chosen on validation.

    Among each tier's chosen validation run (``chosen``) that is eligible (within the CPU
    budget and the forgetting margin, :func:`exp_new_line_select.eligible`), the lowest
    validation new-line MAE picks the tier; its test run at ``level`` with init ``unknown``
    (the init of the choice) is then scored against joint's MAE and compute.
    """
    import exp_new_line_select as sel

    chosen = [r for r in selection if r.get("chosen") and sel.eligible(r)]
    runs = {r["tier"]: r for r in day if r["init"] == "unknown"}
    chosen = [r for r in chosen if r["tier"] in runs]
    bar = (
        f"{ec.level_label(level)}, tier chosen on validation: within 10 % of joint "
        "retraining's new-line MAE at <= 10 % of its compute"
    )
    if not chosen:
        return {"bar": bar, "passed": False, "value": "no tier's chosen settings eligible"}
    pick = min(chosen, key=lambda r: r["new_mae_m"]["mean"])
    run = runs[pick["tier"]]
    gap = run["new_mae_m"]["mean"] / joint["new_mae_m"]["mean"] - 1.0
    steps, cpu = run["steps"] / joint["steps"], run["cpu_s"] / joint["cpu_s"]
    return {
        "bar": bar,
        "passed": bool(gap <= 0.10 and steps <= 0.10 and cpu <= 0.10),
        "value": f"{pick['tier']} (validation MAE {pick['new_mae_m']['mean']:.0f} m): test "
        f"{100 * gap:+.1f} % vs joint; steps {100 * steps:.1f} %, CPU {100 * cpu:.1f} %",
    }


def beats_random(res: dict[str, Any], runs: list[dict[str, Any]], first: str) -> dict[str, Any]:
    """Bar: every init's new-line MAE below the mean of the random draws, at k <= ``first``.

    At k=0 the zero-shot MAEs are averaged over the reference seeds' base models when
    there are several (``reference_seeds[*].zero_shot``), so one lucky base or draw does
    not decide; at ``first`` each tier's runs are compared with its random draws.
    """
    losers = []
    zs = [r["zero_shot"] for r in res.get("reference_seeds", []) if "zero_shot" in r]
    if zs:
        rnd = float(np.mean([z["random"] for z in zs]))
        for init in (i for i in zs[0] if i != "random"):
            gap = 100 * (float(np.mean([z[init] for z in zs])) / rnd - 1)
            if gap >= 0:
                losers.append(f"k=0 zero-shot/{init} ({gap:+.1f} %, {len(zs)} base seeds)")
    small = [first] if zs else ["k=0", first]
    for r in runs:
        if r["level"] in small and r["init"] != "random" and r["tier"] != "naive":
            mean, _ = random_mean(res["runs"], r["level"], r["tier"])
            if math.isfinite(mean) and not r["new_mae_m"]["mean"] < mean:
                gap = 100 * (r["new_mae_m"]["mean"] / mean - 1)
                losers.append(f"{r['level']} {r['tier']}/{r['init']} ({gap:+.1f} %)")
    value = "all beat random" if not losers else "not better than random: " + ", ".join(losers)
    return {
        "bar": f"every init beats random (mean of its draws) at k <= {ec.level_label(first)}",
        "passed": not losers,
        "value": value,
    }
