"""Evaluate a forecasting checkpoint against every baseline on the same windows.

The checkpoint carries the DataModule's hyperparameters (store, periods, horizons) and
state (vocabulary, scalers). Evaluation rebuilds that DataModule, optionally pointed at
other data or dates, fits the baselines on the checkpoint's own training period, and
scores model and baselines on exactly the same test windows.
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from transitnet.baselines import compute_baselines
from transitnet.datamodules.transit import TransitDataModule
from transitnet.datasets.batches import ForecastBatch
from transitnet.datasets.windows import Windows
from transitnet.gtfs.artefacts import StaticArtefacts, load_or_build_artefacts
from transitnet.metrics import (
    compute_coverage,
    compute_mae,
    compute_masked_mean,
    compute_per_line_mae,
    compute_per_line_mean,
    compute_position_error,
    compute_rmse,
    summarise_by_horizon,
)
from transitnet.online_calibration import (
    OnlineCalibrationConfig,
    apply_scales,
    compute_anchor_seconds,
    compute_online_scales,
)
from transitnet.report import (
    format_eta_table,
    format_mae_table,
    plot_eta_bands,
    plot_mae_by_horizon,
    plot_per_line,
    save_figure,
    write_report,
)
from transitnet.store.atomic import write_text_atomic
from transitnet.tasks.forecasting import ForecastingTask

logger = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """Predictions of the model and baselines on one set of windows.

    Attributes:
        windows: The evaluated windows.
        model: ``(N, H, Q)`` model quantile forecasts (metres travelled).
        baselines: Baseline name → ``(N, H)`` point forecasts.
        quantiles: The model's quantile levels.
        artefacts: Static artefacts the windows were matched on (shapes, stops), when
            known; position errors and ETAs need them.
        raw: ``(N, H, Q)`` the model's uncalibrated forecasts, when known (for the
            coverage of the raw band and online recalibration).
        prior_scales: ``(H, Q)`` the checkpoint's validation-fitted calibration scales.
    """

    windows: Windows
    model: np.ndarray
    baselines: dict[str, np.ndarray]
    quantiles: tuple[float, ...]
    artefacts: StaticArtefacts | None = None
    raw: np.ndarray | None = None
    prior_scales: np.ndarray | None = None

    def point(self) -> np.ndarray:
        """``(N, H)`` median forecasts of the model."""
        return self.model[..., len(self.quantiles) // 2]


def load_datamodule(ckpt: dict[str, Any], **overrides: Any) -> TransitDataModule:
    """Rebuild the checkpoint's DataModule with ``overrides`` and restore its state.

    Every override given is applied, ``None`` included (to clear a period).
    """
    accepted = set(inspect.signature(TransitDataModule.__init__).parameters) - {"self"}
    saved = ckpt.get("datamodule_hyper_parameters", {})
    # LightningCLI adds bookkeeping keys (_class_path, _instantiator): keep real arguments.
    hparams = {k: v for k, v in saved.items() if k in accepted}
    hparams.update(overrides)
    dm = TransitDataModule(**hparams)
    state = ckpt.get(TransitDataModule.__qualname__)
    if state is None:
        raise ValueError("the checkpoint holds no TransitDataModule state (vocabulary, scalers)")
    dm.load_state_dict(state)
    return dm


@torch.no_grad()
def predict_windows(
    task: ForecastingTask, dm: TransitDataModule, split: str, *, calibrated: bool = True
) -> np.ndarray:
    """``(N, H, Q)`` forecasts for every window of ``split``, in window order.

    ``calibrated=False`` gives the raw quantiles (before the validation-fitted scales).
    """
    task.eval()
    dataset = dm.dataset(split)
    out = []
    for start in range(0, len(dataset), 4096):
        batch: ForecastBatch = dataset.__getitems__(range(start, min(start + 4096, len(dataset))))
        out.append(task(batch, calibrated=calibrated).numpy())
    n_h, n_q = len(dm.horizons_s), len(task.quantiles)
    return np.concatenate(out) if out else np.zeros((0, n_h, n_q), dtype=np.float32)


def run_evaluation(
    ckpt_path: Path,
    *,
    store: str | None = None,
    static: str | None = None,
    dates: list[str] | None = None,
) -> Evaluation:
    """Score a checkpoint and the baselines on the test period (or ``dates``)."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    task = ForecastingTask.load_from_checkpoint(ckpt_path, map_location="cpu")
    given = {"store": store, "static": static, "test_dates": dates}
    dm = load_datamodule(ckpt, **{k: v for k, v in given.items() if v is not None})
    dm.setup("test")
    test = dm.windows["test"]
    test = test.subset(test.target_mask.any(axis=1))
    dm.windows["test"] = test
    train_spec = dm.hparams.get("train_dates")
    if not train_spec:
        raise ValueError("the checkpoint's DataModule has no training period for the baselines")
    from transitnet.datamodules.loading import load_windows, resolve_timetable

    timetable = resolve_timetable(dm.store, dm.static, dm.hparams.get("timetable"))
    train = load_windows(
        dm.store,
        dm.static,
        {"train": train_spec},
        dm.window_config,
        feed_ids=dm.hparams.get("feed_ids"),
        timezone=dm.hparams.get("timezone"),
        include_lines=dm.hparams.get("include_lines"),
        exclude_lines=dm.hparams.get("exclude_lines"),
        timetable=timetable,
    )["train"]
    pred = predict_windows(task, dm, "test")
    artefacts = None
    if dm.static is not None:
        mode = dm.hparams.get("line_key_mode") or "route"
        artefacts = load_or_build_artefacts(dm.static, dm.store, line_key_mode=mode)
    else:
        logger.warning("no static feed: position errors and ETAs are not computed")
    own = timetable if dm.hparams.get("timetable") else None  # else the static one, as before
    baselines = compute_baselines(train, test, artefacts=artefacts, timetable=own)
    raw = predict_windows(task, dm, "test", calibrated=False)
    prior = task.net.calibration.scales.numpy() if task.net is not None else None
    return Evaluation(test, pred, baselines, task.quantiles, artefacts, raw, prior)


def summarise(evaluation: Evaluation, observed: pd.DataFrame | None = None) -> dict[str, Any]:
    """The ``metrics.json`` content: model and every baseline, per horizon and line.

    A forecaster that does not apply to every window (NaN rows: ``schedule_delay`` where
    the trip has no schedule) is scored only where it exists: its ``n`` counts those
    windows, and :func:`describe_availability` adds their share and the model's MAE on
    exactly them.

    Args:
        evaluation: Predictions on the test windows (metres travelled from the anchor).
        observed: Observed arrivals (:data:`~transitnet.realtime.trip_updates.OBSERVED_COLUMNS`:
            ``trip_id, stop_id, observed_time, source``); adds ``"eta"`` blocks when given
            and the evaluation has static artefacts.

    Returns:
        ``{"<forecaster>": {"mae_m", "rmse_m", "position_error_m", "n": {"<h>": …},
        "per_line": {"<line>": {"mae_m", "position_error_m", "n"}}, "eta": {…}}}``;
        the model also has ``"coverage"`` and, with ETAs, ``"eta_join"`` (join figures).
    """
    w = evaluation.windows
    h = w.horizons_s
    lines = w.meta["line_key"].astype(str).to_numpy()
    out: dict[str, Any] = {}
    for name, pred in forecasters(evaluation).items():
        mask = w.target_mask & np.isfinite(pred)  # NaN: the forecaster does not apply
        out[name] = {
            "mae_m": summarise_by_horizon(compute_mae(pred, w.targets, mask), h),
            "rmse_m": summarise_by_horizon(compute_rmse(pred, w.targets, mask), h),
            "per_line": compute_per_line_mae(pred, w.targets, mask, lines, h),
            "n": summarise_by_horizon(mask.sum(axis=0), h),
            **describe_availability(pred, evaluation),
        }
        if evaluation.artefacts is not None:
            add_position_error(out[name], evaluation, pred, lines)
    out["model"]["coverage"] = describe_coverage(evaluation)
    if observed is not None and evaluation.artefacts is not None:
        from transitnet.evaluate_eta import summarise_eta

        scores, join = summarise_eta(w, evaluation.artefacts, observed, forecasters(evaluation))
        for name, block in scores.items():
            out[name]["eta"] = block
        out["model"]["eta_join"] = join
    return out


def forecasters(evaluation: Evaluation) -> dict[str, np.ndarray]:
    """Name → (N, H) point forecasts: ``"model"`` (its median) and every baseline."""
    return {"model": evaluation.point(), **evaluation.baselines}


def add_position_error(
    block: dict[str, Any], evaluation: Evaluation, pred: np.ndarray, lines: np.ndarray
) -> None:
    """Add ``position_error_m`` (overall and per line) to one forecaster's metrics block."""
    if evaluation.artefacts is None:
        raise ValueError("position errors need the static artefacts (shapes)")
    w = evaluation.windows
    err = compute_position_error(
        evaluation.artefacts.shapes,
        w.meta["shape_id"],
        w.meta["dist_along_m"].to_numpy(np.float64),
        pred.astype(np.float64),
        w.targets.astype(np.float64),
    )
    mask = w.target_mask & np.isfinite(err)
    block["position_error_m"] = summarise_by_horizon(compute_masked_mean(err, mask), w.horizons_s)
    per_line = compute_per_line_mean(err, mask, lines, w.horizons_s)
    for line, values in per_line.items():
        block["per_line"][line]["position_error_m"] = values


def describe_coverage(evaluation: Evaluation) -> dict[str, Any]:
    """Coverage of the model's band per horizon, as served and in its variants.

    - ``by_horizon``: the band as served (``served`` says which): recalibrated online
      when the raw forecasts are known (what ``transitnet predict`` writes:
      :mod:`transitnet.online_calibration`, every minute from the
      outcomes resolved in the trailing hour, never one from after the forecast), else
      the validation-calibrated band;
    - ``validation_by_horizon``: the band calibrated once on the validation split;
    - ``raw_by_horizon``: the uncalibrated quantiles; ``online_by_horizon``: the online
      band (kept for readers of older reports).
    """
    w = evaluation.windows
    h = w.horizons_s
    lo, hi = evaluation.model[..., 0], evaluation.model[..., -1]
    validation = summarise_by_horizon(compute_coverage(lo, hi, w.targets, w.target_mask), h)
    out: dict[str, Any] = {
        "band": [evaluation.quantiles[0], evaluation.quantiles[-1]],
        "served": "validation",
        "by_horizon": validation,
        "validation_by_horizon": validation,
    }
    if evaluation.raw is None or evaluation.prior_scales is None or len(w) == 0:
        return out
    raw = evaluation.raw
    anchor_s = compute_anchor_seconds(w.meta["anchor_time"])
    scales = compute_online_scales(
        anchor_s, h, raw, w.targets, w.target_mask, evaluation.quantiles,
        evaluation.prior_scales,
    )  # fmt: skip
    online = apply_scales(raw, scales)
    raw_cov = compute_coverage(raw[..., 0], raw[..., -1], w.targets, w.target_mask)
    online_cov = summarise_by_horizon(
        compute_coverage(online[..., 0], online[..., -1], w.targets, w.target_mask), h
    )
    out.update(
        served="online",
        by_horizon=online_cov,
        raw_by_horizon=summarise_by_horizon(raw_cov, h),
        online_by_horizon=online_cov,
        online_settings=asdict(OnlineCalibrationConfig()),
    )
    return out


def describe_availability(pred: np.ndarray, evaluation: Evaluation) -> dict[str, Any]:
    """``available_share``: share of windows with a forecast in every horizon.

    Below 1 it adds ``model_mae_m_same_windows``, the model's MAE on the windows where
    the forecaster exists, so a partial baseline is compared with the model fairly.
    """
    w = evaluation.windows
    available = np.isfinite(pred).all(axis=1)
    out: dict[str, Any] = {"available_share": float(available.mean()) if len(w) else 1.0}
    if not available.all():
        mask = w.target_mask & available[:, None]
        mae = compute_mae(evaluation.point(), w.targets, mask)
        out["model_mae_m_same_windows"] = summarise_by_horizon(mae, w.horizons_s)
    return out


def write_metrics(metrics: dict[str, Any], out_dir: Path) -> Path:
    """Write ``out_dir/metrics.json`` atomically (NaN as null)."""
    path = out_dir / "metrics.json"
    text = json.dumps(metrics, indent=2, sort_keys=True, allow_nan=True).replace("NaN", "null")
    write_text_atomic(path, text + "\n")
    return path


def write_evaluation_report(metrics: dict[str, Any], out: Path, title: str) -> Path:
    """The Markdown report with its plots, as ``transitnet evaluate`` writes it."""
    save_figure(plot_mae_by_horizon(metrics), out / "mae_by_horizon.png")
    horizons = list(metrics["model"]["mae_m"])
    focus = "300" if "300" in horizons else horizons[len(horizons) // 2]
    save_figure(plot_per_line(metrics, focus), out / "per_line.png")
    cov = metrics["model"]["coverage"]
    sections = [
        ("MAE along route (m)", format_mae_table(metrics) + "\n\n![](mae_by_horizon.png)"),
        *_position_section(metrics, out),
        (
            f"P{round(cov['band'][0] * 100)}–P{round(cov['band'][1] * 100)} coverage",
            format_coverage(cov),
        ),
        *_eta_section(metrics, out),
        ("Per line", "![](per_line.png)"),
    ]
    return write_report(out / "report.md", f"Forecast evaluation: {title}", sections)


def format_coverage(coverage: dict[str, Any]) -> str:
    """Markdown table of the band's coverage per horizon: as served (online), validation, raw."""
    served = coverage.get("served", "validation")
    rows = [
        ("recalibrated online, trailing hour (as served)", "online_by_horizon"),
        ("calibrated on validation only", "validation_by_horizon"),
        ("raw quantiles", "raw_by_horizon"),
    ]
    if served != "online":
        rows = [("calibrated on validation (as served)", "by_horizon"), rows[2]]
    horizons = list(coverage["by_horizon"])
    lines = [
        "| band | " + " | ".join(f"{int(h) // 60} min" for h in horizons) + " |",
        "|" + " --- |" * (len(horizons) + 1),
    ]
    for label, key in rows:
        values = coverage.get(key)
        if values:
            cells = [f"{v:.1%}" if v is not None else "–" for v in values.values()]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _position_section(metrics: dict[str, Any], out: Path) -> list[tuple[str, str]]:
    """The position-error table and plot, when the metrics have them."""
    if "position_error_m" not in metrics["model"]:
        return []
    fig = plot_mae_by_horizon(
        metrics, "Position error by horizon", "position_error_m", "mean position error (m)"
    )
    save_figure(fig, out / "position_error_by_horizon.png")
    text = (
        "Straight-line distance between the predicted and the observed position, both "
        "placed on the shape.\n\n"
        + format_mae_table(metrics, "position_error_m")
        + "\n\n![](position_error_by_horizon.png)"
    )
    return [("Position error (m)", text)]


def _eta_section(metrics: dict[str, Any], out: Path) -> list[tuple[str, str]]:
    """The ETA table, join figures and band plot, when the metrics have them."""
    if "eta" not in metrics["model"]:
        return []
    from transitnet.evaluate_eta import format_join_figures

    save_figure(plot_eta_bands(metrics), out / "eta_bands.png")
    text = (
        "Share of arrival predictions inside the Transit-app band of their horizon "
        "(observed arrivals 0–15 min after the anchor). Forecast curves are continued "
        "5 min past the last horizon at their last speed; one that still does not reach "
        'the stop counts as a miss ("not reached").\n\n'
        + format_eta_table(metrics)
        + "\n\nJoin: "
        + format_join_figures(metrics["model"].get("eta_join", {}))
        + "\n\n![](eta_bands.png)"
    )
    return [("ETA accuracy (Transit-app bands)", text)]
