"""Markdown summary of the forecasting experiment (``benchmarks/exp_forecast.py``)."""

from __future__ import annotations

import json
from typing import Any

from transitnet.report import format_eta_table, format_mae_table


def format_held_out(per_name: dict[str, Any]) -> list[str]:
    """Markdown table of the held-out line's MAE (model on the unknown row, baselines)."""
    names = [k for k, v in per_name.items() if v]
    if not names:
        return ["Held-out line: no test windows."]
    horizons = list(per_name[names[0]]["mae_m"])
    n = per_name[names[0]]["n"]
    lines = [
        f"Held-out line (never trained; the model uses the unknown row), {n} test windows:",
        "",
        "| MAE (m) | " + " | ".join(f"{int(h) // 60} min" for h in horizons) + " |",
        "|" + " --- |" * (len(horizons) + 1),
    ]
    for name in names:
        values = per_name[name]["mae_m"]
        lines.append(f"| {name} | " + " | ".join(f"{values[h]:,.0f}" for h in horizons) + " |")
    return lines


def format_partial(name: str, part: dict[str, Any]) -> list[str]:
    """Markdown lines comparing the model with a baseline on the windows it applies to."""
    horizons = list(part["mae_m"])
    lines = [
        f"`{name}` applies to {part['available_share']:.1%} of the test windows; "
        "MAE (m) on exactly those windows:",
        "",
        "| | " + " | ".join(f"{int(h) // 60} min" for h in horizons) + " |",
        "|" + " --- |" * (len(horizons) + 1),
    ]
    for label, values in ((name, part["mae_m"]), ("model", part["model_mae_m"])):
        lines.append(f"| {label} | " + " | ".join(f"{values[h]:,.0f}" for h in horizons) + " |")
    gains = [1 - part["model_mae_m"][h] / part["mae_m"][h] for h in horizons]
    lines.append("| model better by | " + " | ".join(f"{g:.1%}" for g in gains) + " |")
    return lines


def format_summary(results: dict[str, Any], command: str) -> str:
    """Markdown summary of every dataset."""
    lines = ["# Forecasting experiment", "", f"Command: `{command}`", ""]
    for name, res in results.items():
        lines += [
            f"## {name}",
            "",
            "| horizon | model MAE (m, on its windows) | toughest baseline | its MAE (m) | "
            "model better by | P10–P90 coverage: as served (online) | validation band only | raw |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        nan = float("nan")
        for h, row in res["by_horizon"].items():
            share = row.get("share", 1.0)
            where = "" if share >= 1.0 else f" ({share:.1%} of windows)"
            lines.append(
                f"| {int(h) // 60} min | {row['model']:,.0f} | {row['best_baseline']}{where} | "
                f"{row['baseline']:,.0f} | {row['improvement']:.1%} | "
                f"{res['coverage'][h]:.1%} | {res['coverage_validation'].get(h, nan):.1%} | "
                f"{res['coverage_raw'].get(h, nan):.1%} |"
            )
        for name, part in res.get("partial", {}).items():
            lines += ["", *format_partial(name, part)]
        if res.get("held_out_line"):
            lines += ["", *format_held_out(res["held_out_line"])]
        extra = res.get("extra", {})
        if "position_error_m" in extra.get("model", {}):
            table = format_mae_table(extra, "position_error_m")
            lines += ["", "Position error (m, on the shape):", "", table]
        if "eta" in extra.get("model", {}):
            lines += ["", "ETA accuracy vs TripUpdates observed arrivals:", ""]
            lines += [format_eta_table(extra)]
        lines += ["", f"Fit: {json.dumps(res['fit'])}", ""]
    return "\n".join(lines)
