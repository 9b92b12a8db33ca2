"""Issue 5's experiment: a new line opens. Real data, every init × tier, honest baselines.

Per dataset, real lines are held out of base training; the base forecaster (trained
without them) is then grown by those lines (:func:`transitnet.extend.train_extension`)
and trained on k levels of their data. Every init × tier is compared, per horizon, with
the unknown row (the base model as is), a model trained from scratch on the new line
only, joint retraining on everything (upper bound), naive fine-tuning of everything
(lower bound for forgetting) and the historical-mean baseline; forgetting on old lines
and compute (optimizer steps, CPU and wall seconds) are reported against joint
retraining, and the issue's bars are checked, pass or fail.

k levels (the new line's windows inside the training period): ``k=0`` (zero-shot), then
``trips:N`` (its first N trips by start time), ``until:HH:MM`` (anchored before that
local time on the first training day) and ``all`` (the whole training period). Each
extension run trains ``--ext-epochs`` over the level's new windows, capped at
``--ext-steps-frac`` of joint retraining's steps. The random init is drawn
``--random-draws`` times at the smallest levels.

How settings are chosen: each tier's extension settings are picked on a time-ordered
validation split before the test period is scored (:mod:`exp_new_line_select`: the new
line's last trips of its training day, the old lines' validation-period windows); the
choice, with every candidate's validation figures, is in the report. The model recipe
and the datasets are in :mod:`exp_new_line_setup`.

Usage: ``.venv/bin/python benchmarks/exp_new_line.py --out OUT [--quick]``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import exp_common as ec
import exp_new_line_select as sel
from exp_new_line_format import write_outputs
from exp_new_line_report import (
    TIERS,
    check_bars,
    describe_windows,
    new_line_mae,
    score,
    summarise,
)
from exp_new_line_setup import (
    DATASETS,
    INITS,
    Data,
    Settings,
    Spec,
    build_settings,
    line_dim_for,
    load_data,
    parse_args,
)

from transitnet.baselines import HistoricalMean, predict_constant_speed
from transitnet.datamodules.transit import TransitDataModule
from transitnet.datasets.windows import Windows, concat_windows
from transitnet.evaluate import predict_windows
from transitnet.extend import ExtensionConfig, train_extension
from transitnet.extend_inits import resolve_inits

__all__ = ["DATASETS", "INITS", "TIERS", "Data", "Experiment", "Settings", "Spec", "line_dim_for",
           "load_data", "main", "score"]  # fmt: skip
logger = logging.getLogger("exp_new_line")


class Experiment:
    """Trains the references, then runs every init × tier × level on one dataset."""

    def __init__(self, data: Data, settings: Settings, work: Path) -> None:
        self.data, self.s, self.work = data, settings, work
        self.task_kwargs = {
            "hidden_dim": settings.hidden_dim,
            "line_dim": line_dim_for(data, settings),
        }
        self.task_kwargs |= settings.task
        self.dms: dict[str, TransitDataModule] = {}
        self.bases: dict[str, ec.Fit] = {}
        self.ckpts: dict[str, dict[str, Any]] = {}
        self.result: dict[str, Any] = {"runs": [], "scratch": {}}
        self.chosen: dict[str, dict[str, Any]] = {}
        self.result["historical_mean"] = {}

    def fit(
        self, name: str, train: Windows, val: Windows, epochs: int, seed: int, min_steps: int = 0
    ) -> ec.Fit:
        """Train a fresh forecaster (own vocabulary and scalers), early-stopped on ``val``."""
        windows = {"train": train, "val": val, "test": self.data.test}
        dm = self.data.dm.with_windows(windows, keep_state=False)
        ckpt = self.work / f"{name}.ckpt"
        fit = ec.fit_forecaster(
            dm,
            self.task_kwargs,
            epochs=epochs,
            seed=seed,
            ckpt=ckpt,
            min_steps=min_steps,
            patience=self.s.patience,
        )
        self.dms[name] = dm
        logger.info(
            "%s %s: %d steps, best epoch %d, %.1f s CPU",
            self.data.spec.name,
            name,
            fit.steps,
            fit.best_epoch,
            fit.cpu_s,
        )
        return fit

    def references(self) -> None:
        """Base (held-out lines excluded), joint retraining, unknown row, baselines.

        With ``reference_seeds`` > 1, base and joint are also trained with other seeds
        (extensions start from the first): their spread is the noise floor of the bars.
        """
        d, s = self.data, self.s
        self.new_val = d.val.subset(d.val.meta["line_key"].isin(d.spec.new_lines).to_numpy())
        old_val = d.val.subset(~d.val.meta["line_key"].isin(d.spec.new_lines).to_numpy())
        everything = concat_windows([d.train_old, d.new_all])
        seeds: list[dict[str, Any]] = []
        for seed in range(s.seed, s.seed + max(1, s.reference_seeds)):
            tag = "" if seed == s.seed else f"_seed{seed}"
            base = self.fit("base" + tag, d.train_old, old_val, s.epochs, seed)
            joint = self.fit("joint" + tag, everything, d.val, s.epochs, seed)
            preds = [
                predict_windows(f.task, self.dms[n + tag], "test")
                for f, n in ((base, "base"), (joint, "joint"))
            ]
            seeds.append(
                {
                    "seed": seed,
                    "base": self.compute(base) | summarise(preds[0], d),
                    "joint": self.compute(joint) | summarise(preds[1], d),
                }
            )
            self.bases[tag] = base
            self.ckpts[tag] = torch.load(
                self.work / f"base{tag}.ckpt", map_location="cpu", weights_only=False
            )
            seeds[-1]["zero_shot"] = self.zero_shot(tag)
            if seed == s.seed:
                self.base_pred, joint_pred = preds[0], preds[1]
                self.result["joint"] = seeds[0]["joint"] | score(joint_pred, preds[0], d, 1)
        self.result["base"] = seeds[0]["base"]
        self.base = self.bases[""]
        self.result["reference_seeds"] = seeds
        test_new = d.test.subset(d.is_new_test)
        self.result["constant_speed_mae_m"] = new_line_mae(predict_constant_speed(test_new), d)
        # Floor: the cap must stay within the bar's budget (<= the share of joint's steps).
        self.ext_steps = max(1, math.floor(s.ext_steps_frac * self.result["joint"]["steps"]))
        self.result["ext_steps"] = {"cap": self.ext_steps}

    @staticmethod
    def compute(fit: ec.Fit) -> dict[str, Any]:
        """Steps, CPU and wall seconds, best epoch of a fit."""
        return {
            "steps": fit.steps,
            "cpu_s": fit.cpu_s,
            "wall_s": fit.wall_s,
            "best_epoch": fit.best_epoch,
        }

    def scratch(self, level: str, new_k: Windows) -> None:
        """A model trained on the new line's level-k windows only; the historical mean."""
        d, s = self.data, self.s
        test_new = d.test.subset(d.is_new_test)
        per_epoch = ec.batches_per_epoch(len(new_k), s.batch_size)
        epochs = max(s.epochs, math.ceil(self.result["joint"]["steps"] / per_epoch))
        name = "scratch_" + level.replace(":", "_")
        fit = self.fit(name, new_k, self.new_val, epochs, s.seed, min_steps=self.ext_steps)
        pred = predict_windows(fit.task, self.dms[name], "test")[d.is_new_test]
        mae = new_line_mae(pred[..., pred.shape[-1] // 2], d)
        self.result["scratch"][level] = self.compute(fit) | {"new_mae_m": mae}
        hist = HistoricalMean().fit(concat_windows([d.train_old, new_k]))(test_new)
        self.result["historical_mean"][level] = new_line_mae(hist, d)

    def steps_for(self, level: str, new_k: Windows | None) -> int:
        """Extension steps at a level: ``ext_epochs`` over its windows, capped by the budget."""
        if new_k is None:
            return 0
        per_epoch = ec.batches_per_epoch(len(new_k), self.s.batch_size)
        steps: int = min(self.ext_steps, self.s.ext_epochs * per_epoch)
        self.result["ext_steps"][level] = steps
        return steps

    def config(self, init: str, tier: str, steps: int, seed: int) -> ExtensionConfig:
        """The extension settings of one run."""
        s, d = self.s, self.data
        cfg = ExtensionConfig(
            new_lines=list(d.spec.new_lines),
            init=self.similar_init() if init == "similar" else init,
            tier=tier,
            max_steps=steps,
            new_row_lr=s.new_row_lr,
            layer_lr=s.layer_lr,
            distill_weight=s.distill_weight,
            anchor_weight=s.anchor_weight,
            replay_per_line=s.replay_per_line,
            replay_new_share=s.replay_new_share,
            distill_per_line=s.distill_per_line,
            lr_decay=s.lr_decay,
            early_stopping=s.early_stopping,
            batch_size=s.batch_size,
            seed=seed,
        )
        return replace(cfg, **self.chosen.get(tier, {}))

    def similar_init(self) -> str:
        """The ``similar`` init: the spec's lines, or ``similar:auto``'s choice (found once).

        ``["auto"]`` is resolved here from the spec's static feed with the library's rule
        (:func:`transitnet.extend_inits.resolve_inits`), because the experiment's own
        DataModule runs without the static feed (no timetable inputs in this recipe).
        """
        spec = self.data.spec
        if spec.similar != ["auto"]:
            return f"similar:{','.join(spec.similar)}"
        if "similar_lines" not in self.result:
            if len(spec.new_lines) != 1 or not spec.static:
                raise ValueError("similar: ['auto'] needs one new line and the spec's static feed")
            probe = self.dms["base"].with_windows({})  # the base's vocabulary: candidates
            probe.static = spec.static
            _, self.result["similar_lines"] = resolve_inits("similar:auto", probe, spec.new_lines)
        found = self.result["similar_lines"][spec.new_lines[0]]["similar"]
        return f"similar:{','.join(found)}"

    def grow(
        self, tag: str, train: Windows, cfg: ExtensionConfig, test: Windows | None = None
    ) -> tuple[Any, Any, Any, Any]:
        """Grow base ``tag`` by the new lines and train it on ``train`` (timed).

        The returned DataModule's ``test`` windows are ``test`` (default: the test period).
        """
        test = self.data.test if test is None else test
        dm = self.dms["base" + tag].with_windows({"train": train, "test": test})
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        with ec.Stopwatch() as sw:
            task, rep = train_extension(
                self.ckpts[tag],
                self.bases[tag].task,
                dm,
                list(cfg.new_lines),
                cfg,
                progress_bar=False,
            )
        return task, rep, dm, sw

    def draws(self) -> range:
        """Seeds of the random init's draws."""
        return range(self.s.seed, self.s.seed + max(1, self.s.random_draws))

    def zero_shot(self, tag: str) -> dict[str, Any]:
        """New-line MAE (mean over horizons) of every init with no training, on base ``tag``."""
        d, s = self.data, self.s
        out: dict[str, Any] = {}
        for init in s.inits:
            maes = []
            for seed in self.draws() if init == "random" else [s.seed]:
                task, _, dm, _ = self.grow(
                    tag, d.train_old, self.config(init, "zero-shot", 0, seed)
                )
                pred = predict_windows(task, dm, "test")[d.is_new_test]
                maes.append(new_line_mae(pred[..., pred.shape[-1] // 2], d)["mean"])
            out[init] = float(np.mean(maes))
        return out

    def extend(self, level: str, new_k: Windows | None, init: str, tier: str, seed: int) -> None:
        """One warm start: grow the base by the new lines, train under ``tier``, score on test."""
        d, s = self.data, self.s
        train = d.train_old if new_k is None else concat_windows([d.train_old, new_k])
        task, rep, dm, sw = self.grow(
            "", train, self.config(init, tier, self.steps_for(level, new_k), seed)
        )
        run: dict[str, Any] = {"level": level, "init": init, "tier": tier, "seed": seed}
        first = rep.step_choice.get("first_run_steps", 0)  # early stopping's first run
        run |= {"steps": rep.steps + first, "wall_s": sw.wall_s, "cpu_s": sw.cpu_s}
        if rep.step_choice:
            run["step_choice"] = rep.step_choice
        if rep.similar_lines:
            run["similar_lines"] = rep.similar_lines
        run |= {"train_windows": rep.train_windows, "replay_windows": rep.replay_windows}
        run |= score(predict_windows(task, dm, "test"), self.base_pred, d, s.min_line_windows)
        mae, forget = run["new_mae_m"]["mean"], 100 * run["forgetting"]["mean_rel"]
        logger.info("%s %s %s/%s seed %d: new-line MAE %.0f m, forgetting %+.2f %%",
                    d.spec.name, level, tier, init, seed, mae, forget)  # fmt: skip
        self.result["runs"].append(run)

    def select(self) -> None:
        """Choose each tier's settings on the validation split (:mod:`exp_new_line_select`).

        Candidates train on the old lines and the new line's last level minus its last
        trips (the real runs' step rule), and are scored on those trips and on the old
        lines' validation-period windows; nothing here sees the test period.
        """
        d, s = self.data, self.s
        fit, held_new = sel.split_last_trips(d.levels[d.spec.levels[-1]])
        old_val = d.val.subset(~d.val.meta["line_key"].isin(d.spec.new_lines).to_numpy())
        held = sel.Held(
            concat_windows([old_val, held_new]),
            np.arange(len(old_val) + len(held_new)) >= len(old_val),
        )
        dm = self.dms["base"].with_windows({"train": d.train_old, "test": held.test})
        base_pred = predict_windows(self.base.task, dm, "test")
        per_epoch = ec.batches_per_epoch(len(fit), s.batch_size)
        steps = min(self.ext_steps, s.ext_epochs * per_epoch)
        runs: list[dict[str, Any]] = []
        for tier in (t for t in s.tiers if t in sel.GRID):
            for overrides in sel.GRID[tier]:
                cfg = replace(self.config("unknown", tier, steps, s.seed), **overrides)
                task, rep, dm, sw = self.grow(
                    "", concat_windows([d.train_old, fit]), cfg, held.test
                )
                run = {"tier": tier, "overrides": overrides, "steps": rep.steps, "cpu_s": sw.cpu_s}
                run["cpu_ratio"] = sw.cpu_s / self.result["joint"]["cpu_s"]
                run |= score(
                    predict_windows(task, dm, "test"), base_pred, held, sel.VAL_MIN_WINDOWS
                )
                runs.append(run)
                f = run["forgetting"]
                logger.info("%s select %s %s: val new-line MAE %.0f m, forgetting %+.2f/%+.2f %%",
                            d.spec.name, tier, sel.label(overrides), run["new_mae_m"]["mean"],
                            100 * f["mean_rel"], 100 * f["worst_rel"])  # fmt: skip
        for tier in {r["tier"] for r in runs}:
            best = sel.choose([r for r in runs if r["tier"] == tier])
            best["chosen"] = True
            self.chosen[tier] = dict(best["overrides"])
        self.result["selection"] = {
            "fit_windows": len(fit), "held_windows": len(held_new), "old_val_windows": len(old_val),
            "steps": steps, "runs": runs, "chosen": self.chosen,
        }  # fmt: skip

    def run(self) -> dict[str, Any]:
        """Every reference, the settings' choice on validation, every run on test."""
        s, first = self.s, self.data.spec.levels[0]
        self.references()
        if s.select:
            self.select()
        draws = self.draws()
        for init in s.inits:
            for seed in draws if init == "random" else [s.seed]:
                self.extend("k=0", None, init, "zero-shot", seed)
        for level, new_k in self.data.levels.items():
            self.scratch(level, new_k)
            self.extend(level, new_k, "unknown", "naive", s.seed)
            for tier in s.tiers:
                for init in s.inits:
                    for seed in draws if init == "random" and level == first else [s.seed]:
                        self.extend(level, new_k, init, tier, seed)
        self.result["windows"] = describe_windows(self.data)
        self.result["line_dim"] = self.task_kwargs["line_dim"]
        return self.result


def main(argv: list[str] | None = None) -> int:
    """Run the experiment; write ``OUT/report.md``, ``OUT/report.json`` and the plots."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ec.quiet_lightning()
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = build_settings(args)
    names = args.datasets if args.datasets is not None else ["austin"] * args.quick or [*DATASETS]
    specs = [DATASETS[n] for n in names] + [Spec(**json.loads(p.read_text())) for p in args.spec]
    work = args.work or args.out / "work"
    results: dict[str, Any] = {}
    started = time.perf_counter()
    for spec in specs:
        if settings.quick:
            spec = replace(spec, levels=[spec.levels[0], spec.levels[-1]])
        (work / spec.name).mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        res = Experiment(load_data(spec, settings, work / spec.name), settings, work / spec.name)
        results[spec.name] = res.run() | {"spec": asdict(spec), "settings_seed": settings.seed}
        results[spec.name]["wall_s"] = round(time.perf_counter() - t0, 1)
        results[spec.name]["bars"] = check_bars(results[spec.name], spec.levels)
        report = {
            "command": " ".join(["python benchmarks/exp_new_line.py", *(argv or sys.argv[1:])]),
            "machine": ec.machine_facts(),
            "settings": asdict(settings),
            "total_wall_s": round(time.perf_counter() - started, 1),
            "datasets": results,
        }
        write_outputs(args.out, report)  # after each dataset: a later failure loses nothing
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
