"""The experiments' reports as tables and figures: a new line, new classes.

- ``benchmarks/exp_new_line.py`` writes ``report.json`` with ``datasets: {name: {runs,
  scratch, historical_mean, base, joint, constant_speed_mae_m, spec, bars, …}}``; every
  run has ``level, init, tier, seed, steps, cpu_s, wall_s, new_mae_m: {"<h>", "mean"},
  forgetting: {mean_rel, worst_rel, worst_line, lines}, old_max_abs_diff_m``.
- ``benchmarks/exp_route_classifier.py`` writes ``report.json`` with ``results: [{dataset,
  runs, joint, base, bars, …}]``; every run has ``n, init, method, head, old_acc,
  new_acc, all_acc, old_acc_drop_pp, avg_incremental_accuracy, steps``.

Read either with :func:`transitnet.analysis_reports.read_json_report`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from transitnet.analysis_plots import new_figure

ZERO_SHOT = "k=0"


def level_label(level: str) -> str:
    """``trips:3`` → ``3 trips``, ``until:09:30`` → ``until 09:30``, ``all`` → ``day``."""
    kind, _, arg = level.partition(":")
    return {"trips": f"{arg} trips", "until": f"until {arg}", "all": "day"}.get(kind, level)


def select_dataset(report: dict[str, Any], dataset: str) -> dict[str, Any]:
    """One dataset's results of either report kind.

    Raises:
        ValueError: when the report holds no such dataset (the ones it holds are named).
    """
    if isinstance(report.get("datasets"), dict):
        found: dict[str, Any] = report["datasets"]
    elif isinstance(report.get("results"), list):
        found = {str(r.get("dataset")): r for r in report["results"] if isinstance(r, dict)}
    else:
        raise ValueError("not an experiment report: no 'datasets' or 'results'")
    if dataset not in found:
        raise ValueError(f"no dataset {dataset!r} in the report; it holds {sorted(found)}")
    result: dict[str, Any] = found[dataset]
    return result


def _levels(res: dict[str, Any]) -> list[str]:
    spec = res.get("spec", {})
    levels = spec.get("levels") or list(dict.fromkeys(r["level"] for r in res["runs"]))
    return [ZERO_SHOT, *[lv for lv in levels if lv != ZERO_SHOT]]


def _mean_new_mae(runs: list[dict[str, Any]], level: str, tier: str, init: str) -> float:
    values = [r["new_mae_m"]["mean"] for r in runs if r["level"] == level and r["tier"] == tier
              and r["init"] == init and r["new_mae_m"].get("mean") is not None]  # fmt: skip
    return float(np.mean(values)) if values else math.nan


def tabulate_learning_curves(report: dict[str, Any], dataset: str) -> pd.DataFrame:
    """New-line MAE (mean over horizons, m) against the amount of new-line data.

    Rows: one per ``tier / init`` warm start (k=0 is the zero-shot run of the same init;
    the random init is the mean of its draws), then the references: unknown row (the
    base model), naive fine-tuning, scratch (new line only), historical mean, constant
    speed and joint retraining on the whole day. Columns: the k levels (labels).
    """
    res = select_dataset(report, dataset)
    runs, levels = res["runs"], _levels(res)
    tiers = [t for t in dict.fromkeys(r["tier"] for r in runs) if t not in ("zero-shot", "naive")]
    inits = list(dict.fromkeys(r["init"] for r in runs if r["tier"] != "naive"))
    table: dict[str, list[float]] = {}
    for tier in tiers:
        for init in inits:
            table[f"{tier} / {init}"] = [
                _mean_new_mae(runs, lv, "zero-shot" if lv == ZERO_SHOT else tier, init)
                for lv in levels]  # fmt: skip
    unknown = _mean_new_mae(runs, ZERO_SHOT, "zero-shot", "unknown")
    table["unknown row (base model)"] = [unknown] * len(levels)
    table["naive fine-tuning"] = [unknown, *(_mean_new_mae(runs, lv, "naive", "unknown")
                                             for lv in levels[1:])]  # fmt: skip
    table["scratch (new line only)"] = [math.nan, *(
        _get(res, "scratch", lv, "new_mae_m", "mean") for lv in levels[1:])]  # fmt: skip
    table["historical mean"] = [math.nan, *(_get(res, "historical_mean", lv, "mean")
                                            for lv in levels[1:])]  # fmt: skip
    table["constant speed"] = [_get(res, "constant_speed_mae_m", "mean")] * len(levels)
    table["joint retraining (day)"] = [_get(res, "joint", "new_mae_m", "mean")] * len(levels)
    out = pd.DataFrame(table, index=[level_label(lv) if lv != ZERO_SHOT else lv
                                     for lv in levels]).T  # fmt: skip
    out.index.name = "model"
    return out


def _get(data: dict[str, Any], *keys: str) -> float:
    value: Any = data
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) else math.nan


def plot_learning_curves(report: dict[str, Any], dataset: str) -> Figure:
    """One panel per tier: a curve per init, with the references dashed."""
    table = tabulate_learning_curves(report, dataset)
    warm = [str(i) for i in table.index if " / " in str(i)]
    tiers = list(dict.fromkeys(i.split(" / ")[0] for i in warm))
    fig, axes = new_figure(1, max(1, len(tiers)), figsize=(4.3 * max(1, len(tiers)), 3.9),
                           sharey=True, squeeze=False)  # fmt: skip
    focus = table.loc[[*warm, "unknown row (base model)"]].to_numpy(dtype=float)
    top = 1.25 * float(np.nanmax(focus)) if np.isfinite(focus).any() else math.nan
    for ax, tier in zip(axes[0], tiers, strict=False):
        _draw_tier(ax, table, tier, top)
    axes[0][0].set_ylabel("new-line MAE, mean over horizons (m)")
    axes[0][-1].legend(fontsize=7)
    new = select_dataset(report, dataset).get("spec", {}).get("new_lines", [])
    fig.suptitle(f"{dataset}: warm-starting new line(s) {', '.join(map(str, new))}")
    return fig


def _draw_tier(ax: Axes, table: pd.DataFrame, tier: str, top: float) -> None:
    """One tier's inits as curves and the references dashed, capped at ``top``."""
    x = np.arange(len(table.columns))
    for name in table.index:
        ys = table.loc[name].to_numpy(dtype=float)
        if str(name).startswith(f"{tier} / "):
            ax.plot(x, ys, marker="o", label=str(name).split(" / ")[1])
        elif " / " not in str(name):
            ax.plot(x, np.minimum(ys, top), ls="--", lw=1, label=str(name))
            for xi, y in zip(x, ys, strict=True):
                if y > top:  # off the scale: drawn at the top edge, value written
                    ax.annotate(f"{y:,.0f} m ↑", (xi, top), fontsize=7, ha="center", va="top")
    ax.set_ylim(0, top if math.isfinite(top) else None)
    ax.set_xticks(x, list(table.columns), rotation=20, fontsize=8)
    ax.set_title(tier)
    ax.grid(alpha=0.3)


def tabulate_forgetting(
    report: dict[str, Any], dataset: str, level: str | None = None
) -> pd.DataFrame:
    """Old lines' MAE change after each warm start at ``level`` (default: the largest).

    Returns:
        One row per main-seed run: ``level, tier, init, mean_rel_pct, worst_rel_pct,
        worst_line, lines, old_max_abs_diff_m, steps, cpu_s``, plus joint retraining.
    """
    res = select_dataset(report, dataset)
    level = level or _levels(res)[-1]
    seed = res.get("settings_seed", report.get("settings", {}).get("seed", 0))
    rows = [_forgetting_row(r, r["tier"], r["init"]) for r in res["runs"]
            if r["level"] == level and r.get("seed", seed) == seed]  # fmt: skip
    if "joint" in res:
        rows.append(_forgetting_row({**res["joint"], "level": "day"}, "joint retraining", "-"))
    if not rows:
        raise ValueError(f"no runs at level {level!r}; levels: {_levels(res)}")
    return pd.DataFrame(rows)


def _forgetting_row(run: dict[str, Any], tier: str, init: str) -> dict[str, Any]:
    f = run.get("forgetting", {})
    return {"level": run.get("level"), "tier": tier, "init": init,
            "mean_rel_pct": 100 * _get(f, "mean_rel"), "worst_rel_pct": 100 * _get(f, "worst_rel"),
            "worst_line": f.get("worst_line"), "lines": f.get("lines"),
            "old_max_abs_diff_m": _get(run, "old_max_abs_diff_m"), "steps": run.get("steps"),
            "cpu_s": _get(run, "cpu_s")}  # fmt: skip


def plot_forgetting(report: dict[str, Any], dataset: str, level: str | None = None) -> Figure:
    """Bars of the mean and worst old-line MAE change per warm start (from the table)."""
    table = tabulate_forgetting(report, dataset, level)
    labels = [f"{t}/{i}" if i != "-" else t for t, i in zip(table["tier"], table["init"],
                                                            strict=True)]  # fmt: skip
    x = np.arange(len(table))
    fig, ax = new_figure(figsize=(max(6.0, 0.5 * len(table) + 2), 4))
    ax.bar(x - 0.2, table["mean_rel_pct"], 0.4, label="mean over old lines")
    ax.bar(x + 0.2, table["worst_rel_pct"], 0.4, label="worst old line")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, labels, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("old-line MAE change (%)")
    ax.set_title(f"{dataset}: forgetting after {level_label(str(table['level'].iloc[0]))}")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return fig


def tabulate_bars(report: dict[str, Any], dataset: str) -> pd.DataFrame:
    """The experiment's own pass/fail bars: ``bar, passed, value`` (one row each).

    A report whose bars are a mapping (the classifier's) gives one row per key, with
    ``passed`` set where the value is a boolean.
    """
    bars = select_dataset(report, dataset).get("bars", [])
    if isinstance(bars, dict):
        rows = [{"bar": k, "passed": v if isinstance(v, bool) else None,
                 "value": v if not isinstance(v, dict | bool) else ("" if isinstance(v, bool)
                                                                   else f"{len(v)} variants")}
                for k, v in bars.items()]  # fmt: skip
        return pd.DataFrame(rows, columns=["bar", "passed", "value"])
    return pd.DataFrame(bars, columns=["bar", "passed", "value"])


def tabulate_class_extension(
    report: dict[str, Any], dataset: str, key: str = "new_acc"
) -> pd.DataFrame:
    """One row per ``init · method`` of the classifier experiment, one column per n.

    Args:
        report: The classifier experiment's report.
        dataset: Its dataset name.
        key: ``new_acc``, ``old_acc``, ``all_acc``, ``old_acc_drop_pp`` or
            ``avg_incremental_accuracy`` (accuracies as shares, drops in points).

    Returns:
        Index ``method``; columns ``n=1``, ``n=5``, ...; for accuracies a last row
        ``joint retraining`` (the upper bound at the same n).
    """
    res = select_dataset(report, dataset)
    shots = sorted({int(r["n"]) for r in res["runs"]})
    table: dict[str, dict[str, float]] = {}
    for r in res["runs"]:
        table.setdefault(f"{r['init']} · {r['method']}", {})[f"n={r['n']}"] = _get(r, key)
    group = {"new_acc": "new", "old_acc": "old", "all_acc": "all"}.get(key)
    if group and "joint" in res:
        table["joint retraining"] = {f"n={n}": _get(res["joint"].get(str(n), {}), group, "acc")
                                     for n in shots}  # fmt: skip
    out = pd.DataFrame(table).T[[f"n={n}" for n in shots]]
    out.index.name = "method"
    return out


def plot_class_tradeoff(report: dict[str, Any], dataset: str, n: int | None = None) -> Figure:
    """New-class accuracy against old-class accuracy drop per method at ``n`` examples.

    Upper left is best; joint retraining (dashed) is the upper bound for new classes. The
    methods are named next to the first init's points (the same methods for every init).
    """
    res = select_dataset(report, dataset)
    n = n if n is not None else max(int(r["n"]) for r in res["runs"])
    runs = [r for r in res["runs"] if int(r["n"]) == n and r.get("new_acc") is not None]
    fig, ax = new_figure(figsize=(7, 4.5))
    for j, init in enumerate(dict.fromkeys(r["init"] for r in runs)):
        mine = [r for r in runs if r["init"] == init]
        ax.scatter([_get(r, "old_acc_drop_pp") for r in mine],
                   [100 * _get(r, "new_acc") for r in mine], color=f"C{j}", label=init)  # fmt: skip
        for r in mine if j == 0 else []:  # methods named once, on the first init's points
            ax.annotate(str(r["method"]), (_get(r, "old_acc_drop_pp"), 100 * _get(r, "new_acc")),
                        fontsize=6, alpha=0.8)  # fmt: skip
    joint = res.get("joint", {}).get(str(n))
    if joint:
        ax.axhline(100 * _get(joint, "new", "acc"), color="k", ls="--", lw=1,
                   label="joint retraining (new classes)")  # fmt: skip
    ax.axvline(1.0, color="r", ls=":", lw=1, label="1 pp old-class drop")
    ax.set_xlabel("old-class accuracy drop (pp; lower is better)")
    ax.set_ylabel("new-class accuracy (%)")
    ax.set_title(f"{dataset}: adding {len(res.get('new_classes', []))} lines with n={n} examples")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig
