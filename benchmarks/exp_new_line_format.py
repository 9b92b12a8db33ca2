"""Writing up :mod:`exp_new_line`'s results: Markdown report, tables and PNG plots.

Input is the ``report.json`` content the experiment builds (one block per dataset with
``runs``, ``base``, ``joint``, ``scratch``, ``historical_mean``, ``reference_seeds``,
``selection``).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import exp_common as ec
import exp_new_line_select as sel
from exp_new_line_report import TIERS, main_runs, random_mean


def _cells(mae: dict[str, float], *extra: Any) -> list[Any]:
    return [*(mae[h] for h in mae if h != "mean"), mae["mean"], *extra]


def _pct(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:+.2f} %"


def format_dataset(name: str, res: dict[str, Any]) -> str:
    """The Markdown section of one dataset: set-up, bars, one table of every model."""
    spec, w, joint = res["spec"], res["windows"], res["joint"]
    head = [
        "k",
        "model",
        *[f"{h // 60} min" for h in spec["horizons_s"]],
        "mean",
        "steps",
        "CPU s",
        "wall s",
        "forgetting: mean",
        "worst line",
    ]
    f = joint["forgetting"]
    rows = [
        ["0", "unknown row = base model", *_cells(res["base"]["new_mae_m"], 0, 0, 0)],
        ["0", "constant speed", *_cells(res["constant_speed_mae_m"], 0, 0, 0)],
        [
            "day",
            "joint retraining (upper bound)",
            *_cells(
                joint["new_mae_m"],
                joint["steps"],
                joint["cpu_s"],
                joint["wall_s"],
                _pct(f["mean_rel"]),
                _pct(f["worst_rel"]),
            ),
        ],
    ]
    for lv in spec["levels"]:
        sc, label = res["scratch"][lv], ec.level_label(lv)
        rows.append(
            [
                label,
                "scratch (new line only)",
                *_cells(sc["new_mae_m"], sc["steps"], sc["cpu_s"], sc["wall_s"]),
            ]
        )
        rows.append([label, "historical mean", *_cells(res["historical_mean"][lv], 0, 0, 0)])
    for r in res["runs"]:
        f = r["forgetting"]
        model = f"{r['tier']} / {r['init']}" + (
            f" (draw {r['seed']})" if r["init"] == "random" else ""
        )
        rows.append(
            [
                ec.level_label(r["level"]),
                model,
                *_cells(
                    r["new_mae_m"],
                    r["steps"],
                    r["cpu_s"],
                    r["wall_s"],
                    _pct(f["mean_rel"]),
                    f"{_pct(f['worst_rel'])} ({f['worst_line']})",
                ),
            ]
        )
    levels = "; ".join(
        f"{ec.level_label(k)} (`{k}`): {v['windows']} windows, {v['trips']} trips"
        for k, v in w["levels"].items()
    )
    bars = [[b["bar"], "yes" if b["passed"] else "**no**", b["value"]] for b in res["bars"]]
    noise = [
        [
            r["seed"],
            r["base"]["new_mae_m"]["mean"],
            r["base"]["old_mae_m"]["mean"],
            r["joint"]["new_mae_m"]["mean"],
            r["joint"]["old_mae_m"]["mean"],
            r["base"]["steps"],
            r["joint"]["steps"],
        ]
        for r in res["reference_seeds"]
    ]
    noise_head = [
        "seed",
        "base: new line (unknown row)",
        "base: old lines",
        "joint: new line",
        "joint: old lines",
        "base steps",
        "joint steps",
    ]
    steps = ", ".join(f"{ec.level_label(k)} {v}" for k, v in res["ext_steps"].items())
    setup = (
        f"Train `{spec['train']}`, test `{spec['test']}` ({spec['timezone']}). Held out of "
        f"base training: {spec['new_lines']} (similar: {spec['similar']}). {w['old_lines']} "
        f"old lines, {w['train_old']} old-line training windows; {w['test']} test windows, "
        f"{w['test_new']} of the new line. k levels: {levels}. Extension steps per level "
        f"(epochs over the new windows, capped): {steps}. Line embedding width: "
        f"{res.get('line_dim', '?')}. Base: {res['base']['steps']} steps, "
        f"{res['base']['cpu_s']:.0f} s CPU. Dataset total: {res['wall_s']:.0f} s wall."
    )
    return "\n\n".join(
        [
            setup,
            "### Bars",
            ec.format_table(["bar", "passed", "measured"], bars),
            "### Reference models by seed (MAE mean over horizons, m): the noise floor",
            ec.format_table(noise_head, noise),
            "### Zero-shot new-line MAE (m, mean over horizons) by base seed",
            ec.format_table(
                ["base seed", *res["reference_seeds"][0]["zero_shot"]],
                [[r["seed"], *r["zero_shot"].values()] for r in res["reference_seeds"]],
            ),
            "### Settings chosen on validation (init unknown, before the test period is scored)",
            format_selection(res),
            "### New-line MAE (m) per horizon, forgetting on old lines, compute",
            ec.format_table(head, rows),
            f"![learning curve]({name}_learning_curve.png)\n\n![forgetting]({name}_forgetting.png)",
        ]
    )


def format_selection(res: dict[str, Any]) -> str:
    """The validation runs that chose each tier's settings (chosen ones in bold)."""
    sel_res = res.get("selection")
    if not sel_res:
        return "(no selection: the settings given were used)"
    rows: list[list[Any]] = []
    for r in sel_res["runs"]:
        f, mark = r["forgetting"], "**yes**" if r.get("chosen") else ""
        rows.append(
            [r["tier"], sel.label(r["overrides"]), mark, r["new_mae_m"]["mean"],
             _pct(f["mean_rel"]), f"{_pct(f['worst_rel'])} ({f['worst_line']})", r["cpu_s"]]
        )  # fmt: skip
    head = [
        "tier",
        "candidate",
        "chosen",
        "val new-line MAE",
        "val forgetting: mean",
        "worst",
        "CPU s",
    ]
    mean, worst = 100 * sel.MARGIN * sel.BAR_MEAN, 100 * sel.MARGIN * sel.BAR_WORST
    intro = (
        f"Candidates trained on {sel_res['fit_windows']} new-line windows (the day minus its "
        f"last trips, {sel_res['steps']} steps), scored on the {sel_res['held_windows']} "
        f"windows of its last trips and {sel_res['old_val_windows']} old-line windows of the "
        f"validation period. Eligible: validation forgetting mean <= {mean:g} %, worst line "
        f"<= {worst:g} %; chosen: the lowest validation new-line MAE among them."
    )
    return intro + "\n\n" + ec.format_table(head, rows)


def plot_dataset(out: Path, name: str, res: dict[str, Any], inits: tuple[str, ...]) -> None:
    """Learning curves (new-line MAE vs k, a line per init, a panel per tier); forgetting."""
    levels, runs = ["k=0", *res["spec"]["levels"]], main_runs(res)
    by = {(r["level"], r["tier"], r["init"]): r["new_mae_m"]["mean"] for r in runs}

    def curve(tier: str, init: str) -> list[float]:
        if init == "random":
            return [
                random_mean(res["runs"], lv, "zero-shot" if lv == "k=0" else tier)[0]
                if lv in levels[:2]
                else by.get((lv, tier, init), math.nan)
                for lv in levels
            ]
        return [by.get((lv, "zero-shot" if lv == "k=0" else tier, init), math.nan) for lv in levels]

    tiers = sorted({r["tier"] for r in runs} & set(TIERS), key=TIERS.index)
    panels = {t: {i: curve(t, i) for i in inits} for t in tiers}
    refs: dict[str, float | list[float]] = {
        "joint retraining (day)": res["joint"]["new_mae_m"]["mean"],
        "scratch": [math.nan, *(res["scratch"][lv]["new_mae_m"]["mean"] for lv in levels[1:])],
        "naive fine-tuning": [
            by[("k=0", "zero-shot", "unknown")],
            *(by[(lv, "naive", "unknown")] for lv in levels[1:]),
        ],
    }
    labels = ["k=0", *(ec.level_label(v) for v in levels[1:])]
    ec.plot_curves(
        out / f"{name}_learning_curve.png",
        panels,
        labels,
        refs,
        ylabel="new-line MAE, mean over horizons (m)",
        title=f"{name}: new line {res['spec']['new_lines']} (random: mean of draws)",
    )
    day = levels[-1]
    groups = {
        f"{r['tier']}/{r['init']}": {
            "mean": 100 * r["forgetting"]["mean_rel"],
            "worst line": 100 * r["forgetting"]["worst_rel"],
        }
        for r in runs
        if r["level"] == day
    }
    ec.plot_bars(
        out / f"{name}_forgetting.png",
        groups,
        ylabel="old-line MAE change (%)",
        title=f"{name}: forgetting after {ec.level_label(day)} of the new line",
    )


def write_outputs(out: Path, report: dict[str, Any]) -> None:
    """Write ``report.json``, ``report.md`` and the PNG plots into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    ec.write_json(out / "report.json", report)
    s = report["settings"]
    intro = f"""Command: `{report["command"]}`

Machine: {report["machine"]}

Settings: {s}

Total: {report["total_wall_s"]:.0f} s wall.

**Method.** Per dataset the new line's windows are removed from the training period and
a base forecaster is trained on the old lines (early stopping on the old lines'
validation windows). *Joint retraining* trains the same model with the same recipe
(`task` settings, `epochs`, cosine schedule over them, early stopping with `patience`,
best validation epoch kept) on everything, early-stopped on all validation windows; its
steps include the patience epochs. Every extension grows the base by the new line's
embedding row (init) and trains under a tier for `ext_epochs` epochs over the new line's
level-k windows, capped at `ext_steps_frac` of joint retraining's steps (so a few trips
get few steps: more overfit them), with the learning rates decayed
to 0 along a cosine over the run when `lr_decay` is set. `partial`/`replay` distil the
base (`distill_weight`) on the new line's inputs (read as random old lines) and on
old-line windows with their own rows (`partial`: `distill_per_line` windows per old
line, inputs only; `replay`: the replay buffer, which also enters the forecast loss),
and anchor the tuned layers to the base weights (`anchor_weight`). *Scratch* trains the
model on the new line's level-k windows only, early-stopped on the new line's
validation windows, with at least the extension budget. *Naive* fine-tunes everything
(init unknown). The random init is drawn `random_draws` times at k=0 and at the first
level (its mean is the bar), and base and joint are retrained with `reference_seeds`
seeds: the spread is the noise floor, and zero-shot is scored on every base.
Each tier's extension settings (learning rates, anchor, replay size, tuned layers) were
chosen in this run on a validation split before the test period was scored (see
"Settings chosen on validation"): the new line's last trips of its training day and the
old lines' validation-period windows.

**Measures.** MAE: along-route error (m) of the median forecast on the test period,
new line only, per horizon and mean over horizons. Forgetting: each old line's MAE (mean
over horizons) relative to the base model's, over old lines with >= {s["min_line_windows"]}
test windows; mean over lines and the worst line (negative = better than the base).
Compute: optimizer steps, this process's CPU seconds and wall seconds (the machine is
shared, so wall time is noisy; one torch thread).

Data: CapMetro (CapMetrics, MIT; please credit) and Auckland Transport (AT licence)."""
    sections = [intro]
    for name, res in report["datasets"].items():
        plot_dataset(out, name, res, tuple(s["inits"]))
        sections.append(f"## {name}\n\n" + format_dataset(name, res))
    ec.write_text(out / "report.md", "# A new line opens (issue 5)\n\n" + "\n\n".join(sections))
