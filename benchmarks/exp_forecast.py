"""Issue 4's experiment: the forecaster against every baseline on real data, same split.

Austin (train on 2017-03-16, validate on the early hours of 2017-03-21, test on its
morning peak) and Auckland (routes with shapes in the June 2019 subset; train on the
morning of 2019-08-13, validate at midday, test on the evening). On Austin one line is
held out of training: at prediction time it goes to the unknown row, and its error is
reported. Baselines are fitted on the same training period and scored on the
same test windows.

    .venv/bin/python benchmarks/exp_forecast.py --out runs/exp_forecast --seed 0

The model is :data:`TASK` (the settings shipped in ``transitnet/configs/forecast.yaml``),
chosen on the validation splits only. Its P10/P90 band is calibrated (split-conformal,
per horizon) on the validation split during fit, and the calibration travels in the
checkpoint. The band as served is recalibrated online
(:mod:`transitnet.online_calibration`: the scales recomputed every minute from the
outcomes resolved in the trailing hour, as a live system would; the validation band
until an hour of outcomes is in); its test coverage is reported beside the
validation-only band's and the raw band's. Auckland's evaluation also scores ETAs
against the observed arrivals in its TripUpdates, and every forecaster's position error
on the shape. Its ``schedule_delay`` baseline (OneBusAway style) runs on the day's
timetable recovered from the same TripUpdates (scheduled = time - delay;
:func:`add_schedule_delay`), since the static subset holds June trips, not the day's.

Choosing settings never reads the test period: ``--eval-split val`` scores the validation
period instead, ``--set KEY=JSON`` overrides a setting of :data:`TASK`, and the
``auckland_val`` / ``auckland_shift`` datasets are validation-only protocols (the
validation period split in two; an early-morning fit scored on the validation period).
``--refit`` trains again on train+val for the epoch count chosen on validation
(:mod:`exp_refit`).

Writes ``OUT/<dataset>/report.md`` (+ metrics.json, plots) and ``OUT/summary.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from exp_common import DATA, machine_facts, prepare_store, quiet_lightning
from exp_forecast_report import format_summary
from exp_refit import refit

from transitnet.baselines import ScheduleDelay, build_timetable
from transitnet.datamodules.loading import read_trip_shapes, schedule_share
from transitnet.datamodules.transit import TransitDataModule
from transitnet.evaluate import (
    Evaluation,
    run_evaluation,
    summarise,
    write_evaluation_report,
    write_metrics,
)
from transitnet.gtfs.artefacts import load_or_build_artefacts
from transitnet.gtfs.realtime_timetable import (
    build_stop_times_from_trip_updates,
    build_timetable_from_trip_updates,
    select_trip_shapes,
)
from transitnet.gtfs.timetable import write_timetable
from transitnet.metrics import summarise_by_horizon
from transitnet.realtime.trip_updates import derive_observed_arrivals, read_trip_updates
from transitnet.store.atomic import write_text_atomic
from transitnet.tasks.forecasting import ForecastingTask

logger = logging.getLogger("exp_forecast")

DATASETS: dict[str, dict[str, Any]] = {
    "austin": {
        "feed": "austin",
        "inputs": [
            DATA / "austin-capmetro/vehicle_positions/2017-03-16.csv",
            DATA / "austin-capmetro/vehicle_positions/2017-03-21.csv",
        ],
        "static": DATA / "austin-capmetro/gtfs_2017-01",
        "timezone": "America/Chicago",
        "train": ["2017-03-16"],
        "val": ["2017-03-21T00:00..2017-03-21T06:30"],
        "test": ["2017-03-21T06:30..2017-03-21T11:00"],
        "train_val": ["2017-03-16", "2017-03-21T00:00..2017-03-21T06:30"],
        "held_out": "20",
    },
    "auckland": {
        "feed": "akl",
        "inputs": [DATA / "auckland-2019-08-13/vehicle_positions.tar.xz"],
        "trip_updates": DATA / "auckland-2019-08-13/trip_updates.tar.xz",
        "static": DATA / "auckland-2019-08-13/static_subset_2019-06",
        "timezone": "Pacific/Auckland",
        "train": ["2019-08-13T05:00..2019-08-13T13:00"],
        "val": ["2019-08-13T13:00..2019-08-13T15:30"],
        "test": ["2019-08-13T15:30..2019-08-14T00:00"],
        "train_val": ["2019-08-13T05:00..2019-08-13T15:30"],
        "held_out": None,
    },
}
#: Validation-only protocol for choices the validation split cannot score by itself
#: (e.g. refitting on train+val): Auckland's validation period split in two, the later
#: part as the "test"; the real test period is never read.
DATASETS["auckland_val"] = {
    **DATASETS["auckland"],
    "val": ["2019-08-13T13:00..2019-08-13T14:15"],
    "test": ["2019-08-13T14:15..2019-08-13T15:30"],
    "train_val": ["2019-08-13T05:00..2019-08-13T14:15"],
    "store_name": "auckland",
}
#: Validation-only protocol for robustness to a later time of day: train on the early
#: morning, stop early on 10:00-11:00, score on the validation period (13:00-15:30).
DATASETS["auckland_shift"] = {
    **DATASETS["auckland"],
    "train": ["2019-08-13T05:00..2019-08-13T10:00"],
    "val": ["2019-08-13T10:00..2019-08-13T11:00"],
    "test": ["2019-08-13T13:00..2019-08-13T15:30"],
    "train_val": ["2019-08-13T05:00..2019-08-13T11:00"],
    "store_name": "auckland",
}


#: The forecaster's settings (as in ``forecast.yaml``), chosen on validation MAE.
TASK: dict[str, Any] = {
    "hidden_dim": 256,
    "encoder_dim": 64,
    "trunk_layers": 2,
    "line_dim": 32,
    "balance_horizons": True,
    "calibrate": True,
    # the head predicts a correction to the schedule's forecast where a window has one
    "schedule_residual": True,
    # time of day and day of week do not carry over to hours/days absent from training
    # (Auckland trains on the morning and predicts the evening; Austin trains on one day)
    "ignore_context": ["tod_sin", "tod_cos", "dow_sin", "dow_cos"],
}
#: Epochs without a better validation MAE before training stops.
PATIENCE = 6


def fit(
    spec: dict[str, Any],
    store: Path,
    out: Path,
    seed: int,
    epochs: int,
    timetable: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train with early stopping on validation MAE; returns the best checkpoint path.

    ``timetable`` (a timetable file) feeds the schedule context features; without it
    they come from the static feed's stop_times (none usable on Austin). ``overrides``
    replace settings of :data:`TASK` (to compare variants on the validation split).
    """
    pl.seed_everything(seed, workers=True, verbose=False)
    dm = make_datamodule(spec, store, timetable, spec["train"], spec["val"])
    task = ForecastingTask(**{**TASK, **(overrides or {})}, max_epochs_hint=epochs)
    best = pl.callbacks.ModelCheckpoint(
        dirpath=out, filename="best", monitor="val_mae", mode="min", save_top_k=1
    )
    stop = pl.callbacks.EarlyStopping(monitor="val_mae", mode="min", patience=PATIENCE)
    for old in out.glob("best*.ckpt"):  # a rerun must not be scored on an older checkpoint
        old.unlink()
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        callbacks=[best, stop],
        enable_progress_bar=True,
        enable_model_summary=False,
        deterministic=True,
        default_root_dir=out,
    )
    started = time.perf_counter()
    trainer.fit(task, dm)
    return {
        "ckpt": best.best_model_path,
        "best_val_mae": round(float(best.best_model_score or float("nan")), 1),
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "fit_s": round(time.perf_counter() - started, 1),
        "train_windows": len(dm.windows["train"]),
        "lines": len(dm.vocab) - 1,
        "schedule_share": {
            split: round(schedule_share(dm.windows[split]), 3) for split in ("train", "val")
        },
    }


def make_datamodule(
    spec: dict[str, Any],
    store: Path,
    timetable: Path | None,
    train: list[str],
    val: list[str],
) -> TransitDataModule:
    """The experiment's DataModule on ``store`` for the given training/validation periods."""
    return TransitDataModule(
        str(store),
        str(spec["static"]),
        feed_ids=[spec["feed"]],
        train_dates=train,
        val_dates=val or None,
        test_dates=spec["test"],
        timezone=spec["timezone"],
        exclude_lines=[spec["held_out"]] if spec["held_out"] else None,
        batch_size=256,
        timetable=str(timetable) if timetable is not None else None,
    )


def score(metrics: dict[str, Any], held_out: str | None) -> dict[str, Any]:
    """Improvement over the toughest baseline per horizon, coverage, and the held-out line.

    Every baseline is compared with the model on exactly the windows it forecasts (all of
    them, except ``schedule_delay`` where a trip has no timetable), and the baseline the
    model beats by the least at a horizon is that horizon's best baseline. Baselines on a
    subset of windows are also listed under ``partial`` with their share.
    """
    names = [k for k in metrics if k != "model"]
    full = [k for k in names if metrics[k].get("available_share", 1.0) >= 1.0]

    def model_on(k: str, h: str) -> float:
        same = metrics[k].get("model_mae_m_same_windows")
        return float(same[h] if same else metrics["model"]["mae_m"][h])

    rows: dict[str, Any] = {}
    for h in metrics["model"]["mae_m"]:
        best = max(names, key=lambda k: model_on(k, h) / metrics[k]["mae_m"][h])
        rows[h] = {
            "model": model_on(best, h),
            "best_baseline": best,
            "baseline": metrics[best]["mae_m"][h],
            "improvement": 1 - model_on(best, h) / metrics[best]["mae_m"][h],
            "share": metrics[best].get("available_share", 1.0),
        }
    coverage = metrics["model"]["coverage"]
    out: dict[str, Any] = {
        "by_horizon": rows,
        "coverage": coverage["by_horizon"],
        "coverage_raw": coverage.get("raw_by_horizon", {}),
        "coverage_validation": coverage.get("validation_by_horizon", {}),
        "partial": {
            k: {
                "available_share": metrics[k]["available_share"],
                "mae_m": metrics[k]["mae_m"],
                "model_mae_m": metrics[k]["model_mae_m_same_windows"],
            }
            for k in names
            if k not in full
        },
    }
    if held_out:
        out["held_out_line"] = {
            name: metrics[name]["per_line"].get(held_out) for name in ["model", *names]
        }
    return out


def run_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Prepare, fit, evaluate one dataset."""
    spec = DATASETS[name]
    out = args.out / name
    store = args.work / spec.get("store_name", name) / "store"
    prep = prepare_store(store, spec["feed"], spec["inputs"], str(spec["static"]))
    logger.info("%s: store ready (%s)", name, prep)
    timetable, events = None, None
    if spec.get("trip_updates"):  # the day's timetable, for the model's schedule features
        events = read_trip_updates(spec["trip_updates"]).events
        timetable = write_day_timetable(spec, events, store, out / "timetable.parquet")
    fitted = fit(spec, store, out, args.seed, args.epochs, timetable, args.set)
    ckpt = Path(fitted["ckpt"])
    if args.refit:  # train again on train+val for the epochs chosen on val
        settings = {**TASK, **args.set, "max_epochs_hint": args.epochs}
        dm = make_datamodule(spec, store, timetable, spec["train_val"], [])
        fitted["refit"] = refit(dm, settings, ckpt, out, args.seed)
        ckpt = Path(fitted["refit"]["ckpt"])
    # --eval-split val scores the validation period instead (choosing settings)
    dates = spec["val"] if args.eval_split == "val" else None
    evaluation = run_evaluation(ckpt, dates=dates)
    fitted["schedule_share"]["test"] = round(schedule_share(evaluation.windows), 3)
    observed = None
    if events is not None:  # observed arrivals: ETA accuracy (Transit-app bands)
        observed = derive_observed_arrivals(events)
        add_schedule_delay(evaluation, events, spec["timezone"])
    metrics = summarise(evaluation, observed)
    write_metrics(metrics, out)
    write_evaluation_report(metrics, out, f"{name} (seed {args.seed}, {args.eval_split})")
    result = {"fit": fitted, "prepare": prep, **score(metrics, spec["held_out"])}
    result["extra"] = {  # position error and ETA accuracy of every forecaster
        k: {x: v[x] for x in ("position_error_m", "eta", "eta_join") if x in v}
        for k, v in metrics.items()
    }
    result["calibration"] = describe_calibration(evaluation)
    result["settings"] = {
        "task": {**TASK, **args.set},
        "scored_split": args.eval_split,
        "refit": args.refit,
    }
    write_text_atomic(out / "experiment.json", json.dumps(result, indent=2, default=str))
    return result


def write_day_timetable(
    spec: dict[str, Any], events: pd.DataFrame, store: Path, path: Path
) -> Path:
    """Write the day's timetable recovered from TripUpdates stop ``events``.

    As ``transitnet timetable`` does: on the shapes the trips were matched on in
    ``store``. Public and fixed before the day, so the model may use it on test windows.
    """
    art = load_or_build_artefacts(str(spec["static"]), store)
    pairs = read_trip_shapes(store, [spec["feed"]])
    rows = build_timetable_from_trip_updates(events, art, pairs, spec["timezone"])
    return write_timetable(rows, path)


def add_schedule_delay(evaluation: Evaluation, events: pd.DataFrame, timezone: str) -> None:
    """Score ``schedule_delay`` on the day's timetable recovered from its TripUpdates.

    The static subset holds June trips, not the day's, so its stop_times cover no test
    window. The day's timetable (scheduled = event time - delay, at every stop a trip
    reported: :mod:`transitnet.gtfs.realtime_timetable`) is public and fixed in advance,
    so using it leaks no outcome. The test windows' trips are placed on the shapes they
    were matched on; windows without a recovered schedule get NaN rows, and the summary
    compares the baseline with the model on exactly its windows (``partial``).

    Args:
        evaluation: Its ``baselines`` gains (or has replaced) ``schedule_delay``; uses
            ``windows.meta`` (``trip_id, shape_id, dist_along_m``) and ``artefacts``.
        events: TripUpdates stop events (``STOP_EVENT_COLUMNS``).
        timezone: IANA zone of the service day.
    """
    if evaluation.artefacts is None:
        logger.warning("schedule_delay from TripUpdates needs static artefacts: left out")
        return
    pairs = evaluation.windows.meta[["trip_id", "shape_id"]]
    stop_times = build_stop_times_from_trip_updates(events, evaluation.artefacts, pairs, timezone)
    shapes = select_trip_shapes(pairs).set_index("trip_id")["shape_id"].astype(object)
    shapes.index = shapes.index.astype(object)
    timetable = build_timetable(stop_times)
    pred = ScheduleDelay(timetable, shapes)(evaluation.windows) if len(timetable.trip_ids) else None
    if pred is None or not np.isfinite(pred).any():
        logger.warning("schedule_delay from TripUpdates covers no test window: left out")
        return
    evaluation.baselines["schedule_delay"] = pred


def describe_calibration(evaluation: Evaluation) -> dict[str, Any]:
    """The P10/P90 scales fitted on the validation split (stored in the checkpoint)."""
    scales, horizons = evaluation.prior_scales, evaluation.windows.horizons_s
    if scales is None:
        return {}
    return {
        "lower_scale": summarise_by_horizon(scales[:, 0], horizons),
        "upper_scale": summarise_by_horizon(scales[:, -1], horizons),
    }


def parse_setting(text: str) -> tuple[str, Any]:
    """``KEY=JSON`` → ``(KEY, value)``; a value that is not JSON stays a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main() -> int:
    """Run the experiment."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--dataset", choices=[*DATASETS, "all"], default="all", help="Dataset to run (default all)."
    )
    p.add_argument("--out", type=Path, default=Path("runs/exp_forecast"), help="Report folder.")
    p.add_argument(
        "--work",
        type=Path,
        default=Path("runs/exp_work"),
        help="Where prepared stores are kept (reused between runs).",
    )
    p.add_argument("--seed", type=int, default=0, help="Seed of training (default 0).")
    p.add_argument("--epochs", type=int, default=40, help="Maximum epochs (early stopping).")
    p.add_argument(
        "--set",
        type=parse_setting,
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="Override a setting of TASK (e.g. schedule_residual=false); repeatable.",
    )
    p.add_argument(
        "--refit",
        action="store_true",
        help="Refit on train+val for the epoch count chosen on val (exp_refit.py).",
    )
    p.add_argument(
        "--eval-split",
        choices=["test", "val"],
        default="test",
        help="Score the test period (default) or the validation period (to choose settings).",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="Torch CPU threads (1 is fastest on a 2-core machine shared with other jobs).",
    )
    args = p.parse_args()
    args.set = dict(args.set)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    quiet_lightning()
    torch.set_num_threads(args.threads)
    names = ["austin", "auckland"] if args.dataset == "all" else [args.dataset]
    results = {name: run_dataset(name, args) for name in names}
    command = "python benchmarks/exp_forecast.py " + " ".join(sys.argv[1:])
    summary = format_summary(results, command)
    write_text_atomic(args.out / "summary.md", summary + "\n")
    write_text_atomic(args.out / "machine.json", json.dumps(machine_facts(), indent=2) + "\n")
    sys.stdout.write(summary + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
