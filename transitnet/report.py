"""Markdown reports with PNG plots, written atomically beside their JSON."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from transitnet.store.atomic import write_bytes_atomic, write_text_atomic


def save_figure(fig: Figure, path: Path) -> Path:
    """Save ``fig`` as PNG at ``path`` atomically and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
    return path


def plot_mae_by_horizon(metrics: dict[str, Any], title: str = "MAE by horizon") -> Figure:
    """Line plot: MAE (m) against horizon (min) for the model and every baseline."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, block in metrics.items():
        mae = block.get("mae_m") if isinstance(block, dict) else None
        if not mae:
            continue
        xs = [int(h) / 60 for h in mae]
        ys = [v if v is not None else float("nan") for v in mae.values()]
        ax.plot(xs, ys, marker="o", lw=2.5 if name == "model" else 1.2, label=name)
    ax.set_xlabel("horizon (min)")
    ax.set_ylabel("MAE along route (m)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_per_line(metrics: dict[str, Any], horizon: str, top: int = 25) -> Figure:
    """Bar chart of per-line MAE at one horizon: model vs the best baseline."""
    model = metrics["model"]["per_line"]
    base_names = [k for k in metrics if k != "model" and "per_line" in metrics[k]]
    best = min(base_names, key=lambda k: metrics[k]["mae_m"].get(horizon) or float("inf"))
    lines = sorted(model, key=lambda k: -model[k]["n"])[:top]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(lines)), 4))
    xs = range(len(lines))
    ax.bar(
        [x - 0.2 for x in xs],
        [model[k]["mae_m"].get(horizon) or 0 for k in lines],
        0.4,
        label="model",
    )
    base = metrics[best]["per_line"]
    ax.bar(
        [x + 0.2 for x in xs],
        [base.get(k, {}).get("mae_m", {}).get(horizon) or 0 for k in lines],
        0.4,
        label=best,
    )
    ax.set_xticks(list(xs), lines, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(f"MAE at {int(horizon) // 60} min (m)")
    ax.set_title(f"Per line (the {len(lines)} busiest)")
    ax.legend()
    return fig


def format_mae_table(metrics: dict[str, Any]) -> str:
    """Markdown table: one row per forecaster, one column per horizon (MAE in m)."""
    horizons = list(metrics["model"]["mae_m"])
    head = (
        "| forecaster | "
        + " | ".join(f"{int(h) // 60} min" if int(h) % 60 == 0 else f"{h} s" for h in horizons)
        + " |"
    )
    rows = [head, "|" + " --- |" * (len(horizons) + 1)]
    for name, block in metrics.items():
        if not isinstance(block, dict) or "mae_m" not in block:
            continue
        cells = [
            f"{block['mae_m'][h]:,.0f}" if block["mae_m"][h] is not None else "–" for h in horizons
        ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write_report(path: Path, title: str, sections: list[tuple[str, str]]) -> Path:
    """Write a Markdown report of ``(heading, body)`` sections atomically."""
    parts = [f"# {title}", ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body, ""]
    write_text_atomic(path, "\n".join(parts))
    return path
