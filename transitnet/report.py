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


def plot_mae_by_horizon(
    metrics: dict[str, Any],
    title: str = "MAE by horizon",
    key: str = "mae_m",
    ylabel: str = "MAE along route (m)",
) -> Figure:
    """Line plot: ``key`` (MAE, m) against horizon (min) for the model and every baseline."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, block in metrics.items():
        mae = block.get(key) if isinstance(block, dict) else None
        if not mae:
            continue
        xs = [int(h) / 60 for h in mae]
        ys = [v if v is not None else float("nan") for v in mae.values()]
        ax.plot(xs, ys, marker="o", lw=2.5 if name == "model" else 1.2, label=name)
    ax.set_xlabel("horizon (min)")
    ax.set_ylabel(ylabel)
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


def format_mae_table(metrics: dict[str, Any], key: str = "mae_m") -> str:
    """Markdown table: one row per forecaster, one column per horizon (``key``, in m)."""
    horizons = list(metrics["model"][key])
    head = (
        "| forecaster | "
        + " | ".join(f"{int(h) // 60} min" if int(h) % 60 == 0 else f"{h} s" for h in horizons)
        + " |"
    )
    rows = [head, "|" + " --- |" * (len(horizons) + 1)]
    for name, block in metrics.items():
        if not isinstance(block, dict) or key not in block:
            continue
        cells = [_number(block[key][h]) for h in horizons]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


ETA_BANDS: tuple[str, ...] = ("0-3", "3-6", "6-10", "10-15")


def _pct(value: float | None) -> str:
    return "–" if value is None or value != value else f"{value:.1%}"


def _number(value: float | None) -> str:
    """Format a number with no decimals; "–" for None or NaN."""
    return "–" if value is None or value != value else f"{value:,.0f}"


def format_eta_table(metrics: dict[str, Any]) -> str:
    """Markdown table of ETA accuracy: Transit-app band shares, score, MAE (s), per forecaster.

    Reads each forecaster's ``"eta"`` block (see :func:`transitnet.evaluate_eta.score_eta`).
    """
    head = (
        "| forecaster | "
        + " | ".join(f"{b} min" for b in ETA_BANDS)
        + " | score | MAE (s) | median error (s) | not reached | score, arrivals only | n |"
    )
    rows = [head, "|" + " --- |" * (len(ETA_BANDS) + 7)]
    for name, block in metrics.items():
        eta = block.get("eta") if isinstance(block, dict) else None
        if not eta:
            continue
        cells = [_pct(eta.get(b)) for b in ETA_BANDS]
        cells += [_pct(eta.get("score")), _number(eta.get("mae_s"))]
        cells += [_number(eta.get("median_error_s")), _pct(eta.get("unreached"))]
        cells += [_pct(eta.get("arrival_events", {}).get("score")), f"{eta.get('n', 0):,.0f}"]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot_eta_bands(metrics: dict[str, Any]) -> Figure:
    """Grouped bars: share of ETAs inside the Transit-app band, per band and forecaster."""
    names = [k for k, v in metrics.items() if isinstance(v, dict) and v.get("eta")]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        eta = metrics[name]["eta"]
        ys = [eta.get(b) if eta.get(b) is not None else float("nan") for b in ETA_BANDS]
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(ETA_BANDS))]
        ax.bar(xs, ys, width, label=name)
    ax.set_xticks(range(len(ETA_BANDS)), [f"{b} min" for b in ETA_BANDS])
    ax.set_xlabel("time to the observed arrival")
    ax.set_ylabel("share inside the Transit-app band")
    ax.set_ylim(0, 1)
    ax.set_title("ETA accuracy")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return fig


def write_report(path: Path, title: str, sections: list[tuple[str, str]]) -> Path:
    """Write a Markdown report of ``(heading, body)`` sections atomically."""
    parts = [f"# {title}", ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body, ""]
    write_text_atomic(path, "\n".join(parts))
    return path
