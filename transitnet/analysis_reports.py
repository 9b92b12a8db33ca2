"""Forecast evaluations for notebooks: ``metrics.json`` tables and plots, ETA bands.

``metrics.json`` is what ``transitnet evaluate`` (:func:`transitnet.evaluate.summarise`)
writes: ``{forecaster: {"mae_m": {"<horizon s>": metres}, "rmse_m", "n", "per_line":
{line: {"mae_m", "n"}}}}`` with ``coverage`` on the model. The experiments' reports
(new line, new classes) are read by :mod:`transitnet.analysis_experiments`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from transitnet.analysis_plots import new_figure
from transitnet.metrics import compute_eta_band_accuracy

if TYPE_CHECKING:
    from transitnet.datasets.windows import Windows
    from transitnet.evaluate import Evaluation

ETA_BANDS: tuple[str, ...] = ("0-3", "3-6", "6-10", "10-15")


def read_json_report(path: Path) -> dict[str, Any]:
    """Read a JSON report (``metrics.json``, an experiment's ``report.json``).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when it is not a JSON object.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def horizon_label(horizon_s: str | int) -> str:
    """``"300"`` → ``"5 min"`` (``"90 s"`` when not whole minutes)."""
    seconds = int(horizon_s)
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"


def _forecasters(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {k: v for k, v in metrics.items() if isinstance(v, dict) and "mae_m" in v}
    if "model" not in found:
        raise ValueError("not a metrics.json: no 'model' entry with 'mae_m'")
    return found


def _by_horizon(values: dict[str, Any]) -> list[tuple[str, Any]]:
    """``{"<seconds>": value}`` items in increasing horizon (JSON keys sort as text)."""
    return sorted(values.items(), key=lambda kv: int(kv[0]))


def _value(value: Any) -> float:
    return float(value) if value is not None else math.nan


def tabulate_metrics(metrics: dict[str, Any], key: str = "mae_m") -> pd.DataFrame:
    """One row per forecaster, one column per horizon (``"5 min"``) of ``key``.

    Args:
        metrics: ``metrics.json`` content.
        key: ``mae_m``, ``rmse_m`` or ``n``.

    Returns:
        Index ``forecaster`` (model first), float values (NaN where null).

    Raises:
        ValueError: when ``metrics`` is not a metrics.json or lacks ``key``.
    """
    blocks = _forecasters(metrics)
    if key not in blocks["model"]:
        raise ValueError(f"metrics have no {key!r}; keys: {sorted(blocks['model'])}")
    table = pd.DataFrame({name: {horizon_label(h): _value(v) for h, v in _by_horizon(b[key])}
                          for name, b in blocks.items() if key in b}).T  # fmt: skip
    table = table.loc[["model", *sorted(n for n in table.index if n != "model")]]
    table.index.name = "forecaster"
    return table


def tabulate_improvement(metrics: dict[str, Any]) -> pd.DataFrame:
    """Per horizon: model MAE, the best baseline, its MAE and the model's relative gain.

    Returns:
        Index ``horizon``; columns ``model_mae_m, best_baseline, baseline_mae_m,
        improvement`` (``1 − model / baseline``), ``coverage`` (model's quantile band).
    """
    table = tabulate_metrics(metrics)
    baselines = table.drop(index="model")
    coverage = metrics["model"].get("coverage", {}).get("by_horizon", {})
    cov = {horizon_label(h): _value(v) for h, v in coverage.items()}
    rows = []
    model_row = table.to_numpy(dtype=float)[0]  # the model comes first
    for column, model in zip(table.columns, model_row, strict=True):
        best = str(baselines[column].idxmin()) if baselines[column].notna().any() else ""
        base = float(baselines[column].min()) if best else math.nan
        rows.append({"horizon": column, "model_mae_m": model, "best_baseline": best,
                     "baseline_mae_m": base, "improvement": 1 - model / base if best else math.nan,
                     "coverage": cov.get(column, math.nan)})  # fmt: skip
    return pd.DataFrame(rows).set_index("horizon")


def tabulate_per_line(metrics: dict[str, Any], horizon: str | int) -> pd.DataFrame:
    """Per line: windows and every forecaster's MAE at one horizon, and the model's gain.

    Returns:
        Index ``line``, sorted by windows: ``n``, one MAE column per forecaster,
        ``best_baseline`` (lowest baseline MAE on that line) and ``improvement``.
    """
    blocks = {k: v for k, v in _forecasters(metrics).items() if "per_line" in v}
    h = str(int(horizon))
    rows = []
    for line, entry in blocks["model"]["per_line"].items():
        row: dict[str, Any] = {"line": line, "n": int(entry.get("n", 0))}
        for name, block in blocks.items():
            row[name] = _value(block["per_line"].get(line, {}).get("mae_m", {}).get(h))
        rows.append(row)
    table = pd.DataFrame(rows).set_index("line").sort_values("n", ascending=False)
    base = table[[n for n in blocks if n != "model"]]
    table["best_baseline"] = base.idxmin(axis=1, skipna=True).where(base.notna().any(axis=1))
    table["improvement"] = 1 - table["model"] / base.min(axis=1)
    return table


def plot_error_by_horizon(metrics: dict[str, Any], title: str = "") -> Figure:
    """MAE by horizon for every forecaster, and the model's quantile-band coverage."""
    table = tabulate_metrics(metrics)
    fig, (ax, bx) = new_figure(1, 2, figsize=(10, 3.8), width_ratios=[3, 2])
    minutes = [int(h) / 60 for h, _ in _by_horizon(metrics["model"]["mae_m"])]
    for name, row in table.iterrows():
        ax.plot(minutes, row.to_numpy(dtype=float), marker="o", label=str(name),
                lw=2.5 if name == "model" else 1.2)  # fmt: skip
    ax.set_xlabel("horizon (min)")
    ax.set_ylabel("MAE along the route (m)")
    ax.set_title(title or "Error by horizon")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    cov = metrics["model"].get("coverage")
    if cov:
        lo, hi = cov["band"]
        items = _by_horizon(cov["by_horizon"])
        bx.bar([horizon_label(h) for h, _ in items], [100 * _value(v) for _, v in items])
        bx.axhline(100 * (hi - lo), color="r", ls=":", label=f"nominal {100 * (hi - lo):.0f} %")
        bx.set_ylabel(f"targets inside P{round(100 * lo)}–P{round(100 * hi)} (%)")
        bx.set_ylim(0, 100)
        bx.legend(fontsize=8)
    bx.set_title("Coverage of the quantile band")
    return fig


def plot_per_line_error(metrics: dict[str, Any], horizon: str | int, min_n: int = 30) -> Figure:
    """Per line, the model's MAE against the best baseline's (points below the diagonal: better).

    Lines with fewer than ``min_n`` windows are left out; marker area follows windows.
    """
    table = tabulate_per_line(metrics, horizon)
    table = table[(table["n"] >= min_n) & table["model"].notna()]
    base = table[[c for c in table.columns if c not in ("n", "model", "best_baseline",
                                                         "improvement")]].min(axis=1)  # fmt: skip
    fig, ax = new_figure(figsize=(5.5, 5))
    ax.scatter(base, table["model"], s=10 + 200 * table["n"] / max(1, table["n"].max()), alpha=0.6)
    top = float(np.nanmax([base.max(), table["model"].max(), 1.0])) if len(table) else 1.0
    ax.plot([0, top], [0, top], "k--", lw=1)
    for line in table.index[:8]:
        ax.annotate(str(line), (base[line], table.loc[line, "model"]), fontsize=7)
    better = float((table["model"] < base).mean()) if len(table) else math.nan
    ax.set_xlabel(f"best baseline MAE at {horizon_label(horizon)} (m)")
    ax.set_ylabel(f"model MAE at {horizon_label(horizon)} (m)")
    ax.set_title(f"Per line ({len(table)} lines with ≥ {min_n} windows; model better on "
                 f"{100 * better:.0f} %)")  # fmt: skip
    ax.grid(alpha=0.3)
    return fig


def compute_arrival_errors(windows: Windows, forecast: np.ndarray) -> pd.DataFrame:
    """Arrival-time errors implied by distance forecasts.

    A forecast of ``d`` metres at horizon ``h`` predicts that the vehicle reaches ``d``
    after ``h`` seconds. The observed time to reach ``d`` is read off the observed
    distances at the horizons (linear between them, from 0 m at the anchor, made
    non-decreasing). Where the vehicle was not observed reaching ``d`` (the forecast lies
    beyond the last observed target), the pair is left out, and so is a forecast of no
    movement (``d <= 0`` names no place ahead, so it has no arrival time).

    Args:
        windows: ``targets`` (N, H) metres travelled, ``target_mask``, ``horizons_s``.
        forecast: (N, H) point forecasts of metres travelled.

    Returns:
        One row per (window, horizon) observed: ``window, horizon_s, predicted_s``
        (the horizon), ``actual_s``, ``error_s`` (predicted − actual: negative is early).
    """
    n, n_h = np.shape(windows.targets)
    horizons = np.asarray(windows.horizons_s, dtype=float)
    seen = np.column_stack([np.ones(n, bool), np.asarray(windows.target_mask, dtype=bool)])
    last = np.maximum.accumulate(np.where(seen, np.arange(n_h + 1), 0), axis=1)
    rows = np.arange(n)[:, None]
    t = np.broadcast_to(np.concatenate([[0.0], horizons]), (n, n_h + 1))[rows, last]
    d = np.column_stack([np.zeros(n), np.asarray(windows.targets, dtype=float)])[rows, last]
    d = np.maximum.accumulate(np.nan_to_num(d, nan=0.0), axis=1)
    frames = []
    for j, h in enumerate(horizons):
        p = np.asarray(forecast[:, j], dtype=float)
        ok = np.isfinite(p) & (p > 0) & (p <= d[:, -1]) & seen[:, 1:].any(axis=1)
        p = np.where(ok, p, 0.0)
        k = np.clip((d < p[:, None]).sum(axis=1), 1, n_h)
        i = np.flatnonzero(ok)
        lo_t, hi_t, lo_d, hi_d = t[i, k[i] - 1], t[i, k[i]], d[i, k[i] - 1], d[i, k[i]]
        span = np.where(hi_d > lo_d, hi_d - lo_d, 1.0)
        actual = lo_t + (hi_t - lo_t) * (p[i] - lo_d) / span
        frames.append(pd.DataFrame({"window": i, "horizon_s": int(h), "predicted_s": h,
                                    "actual_s": actual, "error_s": h - actual}))  # fmt: skip
    return pd.concat(frames, ignore_index=True).sort_values(["window", "horizon_s"],
                                                            ignore_index=True)  # fmt: skip


def tabulate_eta_bands(evaluation: Evaluation) -> pd.DataFrame:
    """Transit-app ETA accuracy of the model and every baseline on the same windows.

    Errors come from :func:`compute_arrival_errors`; predictions are bucketed by the
    observed time to arrival (0-3, 3-6, 6-10, 10-15 min), each with its early/late band
    (:data:`transitnet.metrics.TRANSIT_APP_BANDS`).

    Returns:
        Index ``forecaster``; columns the four buckets' accuracy, ``score`` (their mean)
        and ``n`` (predictions scored).
    """
    rows = {}
    for name, pred in {"model": evaluation.point(), **evaluation.baselines}.items():
        errors = compute_arrival_errors(evaluation.windows, pred)
        actual = errors["actual_s"].to_numpy(dtype=float)
        predicted = errors["predicted_s"].to_numpy(dtype=float)
        rows[name] = compute_eta_band_accuracy(predicted, actual, actual)
    table = pd.DataFrame(rows).T
    table.index.name = "forecaster"
    table["n"] = table["n"].astype(int)
    return table[[*ETA_BANDS, "score", "n"]]


def plot_eta_bands(bands: pd.DataFrame) -> Figure:
    """Grouped bars of ETA accuracy per bucket and forecaster (from ``tabulate_eta_bands``)."""
    fig, ax = new_figure(figsize=(7, 3.8))
    width = 0.8 / max(1, len(bands))
    x = np.arange(len(ETA_BANDS) + 1)
    for j, (name, row) in enumerate(bands.iterrows()):
        values = [100 * float(row[b]) for b in (*ETA_BANDS, "score")]
        ax.bar(x + (j - (len(bands) - 1) / 2) * width, values, width, label=str(name))
    ax.set_xticks(x, [f"{b} min" for b in ETA_BANDS] + ["score"])
    ax.set_ylabel("predictions inside the band (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Arrival-time accuracy (Transit app bands), from distance forecasts")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return fig
