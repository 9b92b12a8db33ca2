"""Issue 4's experiment: the forecaster against every baseline on real data, same split.

Austin (train on 2017-03-16, validate on the early hours of 2017-03-21, test on its
morning peak) and Auckland (routes with shapes in the June 2019 subset; train on the
morning of 2019-08-13, validate at midday, test on the evening). One line is held out
of training on each dataset: at prediction time it goes to the unknown row, and its
error is reported. Baselines are fitted on the same training period and scored on the
same test windows.

    .venv/bin/python benchmarks/exp_forecast.py --out runs/exp_forecast --seed 0

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

import pytorch_lightning as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))

from exp_common import DATA, machine_facts, prepare_store, quiet_lightning

from transitnet.datamodules.transit import TransitDataModule
from transitnet.evaluate import (
    run_evaluation,
    summarise,
    write_evaluation_report,
    write_metrics,
)
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
        "held_out": "20",
    },
    "auckland": {
        "feed": "akl",
        "inputs": [DATA / "auckland-2019-08-13/vehicle_positions.tar.xz"],
        "static": DATA / "auckland-2019-08-13/static_subset_2019-06",
        "timezone": "Pacific/Auckland",
        "train": ["2019-08-13T05:00..2019-08-13T13:00"],
        "val": ["2019-08-13T13:00..2019-08-13T15:30"],
        "test": ["2019-08-13T15:30..2019-08-14T00:00"],
        "held_out": None,
    },
}


def fit(spec: dict[str, Any], store: Path, out: Path, seed: int, epochs: int) -> dict[str, Any]:
    """Train with early stopping on validation MAE; returns the best checkpoint path."""
    pl.seed_everything(seed, workers=True, verbose=False)
    dm = TransitDataModule(
        str(store),
        str(spec["static"]),
        feed_ids=[spec["feed"]],
        train_dates=spec["train"],
        val_dates=spec["val"],
        test_dates=spec["test"],
        timezone=spec["timezone"],
        exclude_lines=[spec["held_out"]] if spec["held_out"] else None,
        batch_size=256,
    )
    task = ForecastingTask(hidden_dim=64, line_dim=16, max_epochs_hint=epochs)
    best = pl.callbacks.ModelCheckpoint(
        dirpath=out, filename="best", monitor="val_mae", mode="min", save_top_k=1
    )
    stop = pl.callbacks.EarlyStopping(monitor="val_mae", mode="min", patience=4)
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
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "fit_s": round(time.perf_counter() - started, 1),
        "train_windows": len(dm.windows["train"]),
        "lines": len(dm.vocab) - 1,
    }


def score(metrics: dict[str, Any], held_out: str | None) -> dict[str, Any]:
    """Improvement over the best baseline per horizon, coverage, and the held-out line."""
    base_names = [k for k in metrics if k != "model"]
    rows: dict[str, Any] = {}
    for h, model_mae in metrics["model"]["mae_m"].items():
        best = min(base_names, key=lambda k: metrics[k]["mae_m"][h])
        best_mae = metrics[best]["mae_m"][h]
        rows[h] = {
            "model": model_mae,
            "best_baseline": best,
            "baseline": best_mae,
            "improvement": 1 - model_mae / best_mae,
        }
    out: dict[str, Any] = {
        "by_horizon": rows,
        "coverage": metrics["model"]["coverage"]["by_horizon"],
    }
    if held_out:
        out["held_out_line"] = {
            name: metrics[name]["per_line"].get(held_out) for name in ["model", *base_names]
        }
    return out


def run_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Prepare, fit, evaluate one dataset."""
    spec = DATASETS[name]
    out = args.out / name
    store = args.work / name / "store"
    prep = prepare_store(store, spec["feed"], spec["inputs"], str(spec["static"]))
    logger.info("%s: store ready (%s)", name, prep)
    fitted = fit(spec, store, out, args.seed, args.epochs)
    metrics = summarise(run_evaluation(Path(fitted["ckpt"])))
    write_metrics(metrics, out)
    write_evaluation_report(metrics, out, f"{name} (seed {args.seed})")
    result = {"fit": fitted, "prepare": prep, **score(metrics, spec["held_out"])}
    (out / "experiment.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def format_summary(results: dict[str, Any], command: str) -> str:
    """Markdown summary of every dataset."""
    lines = ["# Forecasting experiment", "", f"Command: `{command}`", ""]
    for name, res in results.items():
        lines += [
            f"## {name}",
            "",
            "| horizon | model MAE (m) | best baseline | its MAE (m) | "
            "model better by | P10–P90 coverage |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for h, row in res["by_horizon"].items():
            lines.append(
                f"| {int(h) // 60} min | {row['model']:,.0f} | {row['best_baseline']} | "
                f"{row['baseline']:,.0f} | {row['improvement']:.1%} | "
                f"{res['coverage'][h]:.1%} |"
            )
        if "held_out_line" in res:
            lines += ["", f"Held-out line (unknown row): {json.dumps(res['held_out_line'])}"]
        lines += ["", f"Fit: {json.dumps(res['fit'])}", ""]
    return "\n".join(lines)


def main() -> int:
    """Run the experiment."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=[*DATASETS, "all"], default="all")
    p.add_argument("--out", type=Path, default=Path("runs/exp_forecast"))
    p.add_argument(
        "--work",
        type=Path,
        default=Path("runs/exp_work"),
        help="Where prepared stores are kept (reused between runs).",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=25)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    quiet_lightning()
    names = list(DATASETS) if args.dataset == "all" else [args.dataset]
    results = {name: run_dataset(name, args) for name in names}
    command = "python benchmarks/exp_forecast.py " + " ".join(sys.argv[1:])
    summary = format_summary(results, command)
    (args.out / "summary.md").write_text(summary)
    (args.out / "machine.json").write_text(json.dumps(machine_facts(), indent=2))
    sys.stdout.write(summary + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
