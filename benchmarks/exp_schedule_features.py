"""Choosing the schedule-aware forecaster on Auckland's validation split only.

Trains variants of :data:`exp_forecast.TASK` on the Auckland morning (windows with the
schedule features from the day's timetable, recovered from its TripUpdates) and scores
each on the midday validation split against ``schedule_delay`` on the same windows. The
``no_schedule`` variant hides the schedule features (an ablation: what they add). The
test split is never read here.

    PYTHONPATH=. .venv/bin/python benchmarks/exp_schedule_features.py --out runs/exp_sched_sweep

``--variants a b`` runs a subset; ``--quick`` runs 3 epochs per variant (a smoke run).
Writes ``OUT/validation.json`` and ``OUT/validation.md``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from exp_common import fit_forecaster, format_table, machine_facts, quiet_lightning, write_json
from exp_common import write_text as write_markdown
from exp_forecast import DATASETS, PATIENCE, TASK, write_day_timetable

from transitnet.baselines import ScheduleDelay
from transitnet.datamodules.transit import TransitDataModule
from transitnet.datasets.features import DIST_PERIODS_KM
from transitnet.datasets.schedule import SCHEDULE_FEATURES
from transitnet.evaluate import predict_windows
from transitnet.gtfs.timetable import read_timetable
from transitnet.metrics import compute_mae
from transitnet.realtime.trip_updates import read_trip_updates

logger = logging.getLogger("exp_schedule_features")

#: Sine/cosine encodings of the distance along the shape.
DIST_ENCODINGS = [f"dist_{fn}_{p:g}km" for p in DIST_PERIODS_KM for fn in ("sin", "cos")]
#: Variants of :data:`exp_forecast.TASK` (overrides), by name.
VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "no_schedule": {"ignore_context": [*TASK["ignore_context"], *SCHEDULE_FEATURES]},
    "no_on_time": {
        "ignore_context": [
            *TASK["ignore_context"],
            *(f for f in SCHEDULE_FEATURES if f.startswith("sched_on_time")),
        ]
    },
    "dropout_0.2": {"dropout": 0.2},
    "trunk_3": {"trunk_layers": 3},
    "lr_1e-3": {"lr": 1e-3},
    "wd_1e-3": {"weight_decay": 1e-3},
    # more windows on the unknown row: less line-specific (morning) speed memory
    "line_dropout_0.3": {"line_dropout": 0.3},
    "encoder_128": {"encoder_dim": 128},
    # where on the line (sine/cosine of the distance): morning speeds by location, which
    # the evening need not share; the timetable gives time-specific running times instead
    "no_dist_enc": {"ignore_context": [*TASK["ignore_context"], *DIST_ENCODINGS]},
    "no_position": {
        "ignore_context": [*TASK["ignore_context"], *DIST_ENCODINGS, "dist_km", "progress"]
    },
}


def build_datamodule(store: Path, timetable: Path, past_fixes: int) -> TransitDataModule:
    """Auckland's train and validation windows with the timetable's schedule features."""
    spec = DATASETS["auckland"]
    dm = TransitDataModule(
        str(store),
        str(spec["static"]),
        feed_ids=[spec["feed"]],
        train_dates=spec["train"],
        val_dates=spec["val"],
        timezone=spec["timezone"],
        batch_size=256,
        past_fixes=past_fixes,
        timetable=str(timetable),
    )
    dm.setup("fit")
    return dm


def score_variant(
    dm: TransitDataModule, name: str, args: argparse.Namespace, schedule: np.ndarray
) -> dict[str, Any]:
    """Fit one variant; validation MAE per horizon, beside ``schedule_delay``'s."""
    kwargs = {**TASK, **VARIANTS[name]}
    fitted = fit_forecaster(dm, kwargs, epochs=args.epochs, seed=args.seed,
                            ckpt=args.out / f"{name}.ckpt", patience=PATIENCE)  # fmt: skip
    val = dm.windows["val"]
    point = predict_windows(fitted.task, dm, "val")[..., len(fitted.task.quantiles) // 2]
    mask = val.target_mask & np.isfinite(schedule)
    model = compute_mae(point, val.targets, mask)
    base = compute_mae(schedule, val.targets, mask)
    logger.info("%s: val MAE %s (schedule_delay %s)", name, model.round(), base.round())
    return {
        "mae_m": model.tolist(),
        "schedule_delay_mae_m": base.tolist(),
        "better_by": (1 - model / base).tolist(),
        "mean_mae_m": float(np.mean(model)),
        "best_epoch": fitted.best_epoch,
        "steps": fitted.steps,
        "wall_s": fitted.wall_s,
    }


def main() -> int:
    """Run the sweep."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/exp_sched_sweep"), help="Report folder.")
    p.add_argument(
        "--work", type=Path, default=Path("runs/exp_work"), help="Import cache (stores, timetable)."
    )
    p.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=list(VARIANTS),
        help="Variants to train (default all).",
    )
    p.add_argument("--past-fixes", type=int, default=8, help="Past fixes per window.")
    p.add_argument("--seed", type=int, default=0, help="Seed of training (default 0).")
    p.add_argument("--epochs", type=int, default=40, help="Maximum epochs (early stopping).")
    p.add_argument("--quick", action="store_true", help="3 epochs per variant (smoke run)")
    args = p.parse_args()
    args.epochs = 3 if args.quick else args.epochs
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    quiet_lightning()
    torch.set_num_threads(1)
    spec = DATASETS["auckland"]
    store = args.work / "auckland" / "store"  # prepared by exp_forecast.py
    events = read_trip_updates(spec["trip_updates"]).events
    tt_path = write_day_timetable(spec, events, store, args.out / "timetable.parquet")
    dm = build_datamodule(store, tt_path, args.past_fixes)
    timetable = read_timetable(tt_path)
    if timetable is None:
        raise RuntimeError("the recovered timetable holds no usable trip")
    schedule = ScheduleDelay.from_timetable(timetable)(dm.windows["val"])
    results = {name: score_variant(dm, name, args, schedule) for name in args.variants}
    horizons = [f"{h // 60} min" for h in dm.horizons_s]
    rows = [[name, *r["mae_m"], r["mean_mae_m"], *(f"{g:.1%}" for g in r["better_by"])]
            for name, r in results.items()]  # fmt: skip
    header = ["variant", *horizons, "mean", *(f"vs sched {h}" for h in horizons)]
    command = "python benchmarks/exp_schedule_features.py " + " ".join(sys.argv[1:])
    text = f"# Validation (Auckland midday), seed {args.seed}\n\n`{command}`\n\n"
    write_markdown(args.out / "validation.md", text + format_table(header, rows))
    write_json(args.out / "validation.json", {"results": results, "machine": machine_facts(),
                                              "past_fixes": args.past_fixes})  # fmt: skip
    sys.stdout.write(text + format_table(header, rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
