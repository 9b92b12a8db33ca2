"""``transitnet extend-lines``: add new lines to a trained forecaster and warm-start it."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

INITS = (
    "unknown | mean | mean_cov | similar:<line,…> | similar:auto (the mean row of every known "
    "line driving part of the new line's path the same way, from the static feed) | random"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``extend-lines`` subcommand."""
    p = sub.add_parser(
        "extend-lines",
        help="Grow a forecasting checkpoint by new lines (embedding rows) and warm-start it.",
        description=(
            "Loads CKPT, adds the new line keys as embedding rows (by key), trains them under "
            "the chosen tier on the new data, and writes OUT/model.ckpt, OUT/report.json and "
            "OUT/report.md. Extra --data.KEY VALUE arguments override the checkpoint's "
            "DataModule arguments (e.g. --data.train_dates '[2017-03-21]' for the new data)."
        ),
    )
    p.add_argument("--ckpt", required=True, type=Path, help="Base checkpoint from `fit`.")
    p.add_argument("--config", type=Path, help="LightningCLI YAML whose data section applies.")
    p.add_argument(
        "--new-lines",
        default="auto",
        help="'auto' (keys in the new data missing from the vocabulary) or comma-separated keys.",
    )
    p.add_argument("--init", default="unknown", help=f"New-row initialisation: {INITS}.")
    p.add_argument(
        "--tier",
        default="row-only",
        choices=["zero-shot", "row-only", "partial", "replay", "fork", "naive"],
        help="What trains: zero-shot (nothing; old outputs bit-identical), row-only (new rows "
        "only; old outputs bit-identical), partial (+ later layers with distillation), replay "
        "(partial + old-line replay), fork (a fine-tuned copy serves the new lines, the "
        "untouched base every other line; old outputs bit-identical), naive (everything; "
        "experiments only).",
    )
    p.add_argument("--max-steps", type=int, default=300, help="Optimizer steps (default 300).")
    add_training_options(p)
    p.add_argument("--min-windows", type=int, default=20, help="'auto': min windows per line.")
    p.add_argument("--seed", type=int, default=0, help="Seed (init, sampling, training).")
    p.add_argument(
        "--eval-dates",
        nargs="+",
        help="Report old- and new-line MAE before and after on these (later) dates.",
    )
    p.add_argument("--out", required=True, type=Path, help="Output folder.")
    p.set_defaults(func=run, accepts_extra=True)


def add_training_options(p: argparse.ArgumentParser) -> None:
    """Add the learning-rate, distillation, anchor and replay options of an extension.

    Every option defaults to the tier's settings that ``benchmarks/exp_new_line.py`` chose
    on validation and measured (:data:`transitnet.extend.TIER_DEFAULTS`), else to
    :class:`transitnet.extend.ExtensionConfig`'s.
    """
    default = " (default: the tier's validated setting, transitnet.extend.TIER_DEFAULTS)."
    p.add_argument("--new-row-lr", type=float, help="Learning rate of the new rows" + default)
    p.add_argument(
        "--layer-lr",
        type=float,
        help="Learning rate of the fine-tuned layers (partial/replay/fork/naive)" + default,
    )
    p.add_argument(
        "--lr-decay",
        action=argparse.BooleanOptionalAction,
        help="Decay every learning rate to 0 along a cosine over --max-steps" + default,
    )
    p.add_argument(
        "--distill-weight",
        type=float,
        help="partial/replay: weight of the distillation towards the frozen base model's "
        "outputs" + default,
    )
    p.add_argument(
        "--anchor-weight",
        type=float,
        help="partial/replay: weight of the L2 anchor of tuned layers to the base weights"
        + default,
    )
    p.add_argument(
        "--distill-per-line",
        type=int,
        help="partial: also distil on this many old-line windows per line (inputs only, "
        "never their targets; 0 = the new lines' inputs only)" + default,
    )
    p.add_argument(
        "--replay-per-line",
        type=int,
        help="replay: old-line windows per line in the replay buffer" + default,
    )
    p.add_argument(
        "--replay-new-share",
        type=float,
        help="replay/partial with old-line windows: repeat the new lines' windows until "
        "they are at least this share of the training set, in [0, 1)" + default,
    )
    p.add_argument(
        "--tune-layers",
        nargs="+",
        choices=["encoder", "trunk", "head"],
        help="partial/replay/fork: the network parts fine-tuned besides the new rows" + default,
    )
    p.add_argument(
        "--early-stopping",
        choices=["auto", "on", "off"],
        help="Choose the number of steps on the new lines' own last trips (held out of a "
        "first run, scored at step 0 and every few steps; the final run trains on every "
        "trip for the best step count, 0 keeping the initialisation). auto: on when a new "
        "line has at least 2 and fewer than --few-trips trips (default: auto).",
    )
    p.add_argument(
        "--few-trips",
        type=int,
        help="A new line with fewer trips is a few-trip line: auto early stopping turns on "
        "and the fork tier tunes its new rows only (default 10).",
    )


def training_options(args: argparse.Namespace) -> dict[str, Any]:
    """``ExtensionConfig`` fields given on the command line (the rest keep their defaults)."""
    names = ["new_row_lr", "layer_lr", "lr_decay", "distill_weight", "anchor_weight"]
    names += ["distill_per_line", "replay_per_line", "replay_new_share", "tune_layers"]
    names += ["early_stopping", "few_trips"]
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def run(args: argparse.Namespace) -> int:
    """Run the extension and write the report."""
    from transitnet.cli.overrides import parse_data_overrides
    from transitnet.extend import config_for_tier, extend_lines, report_dict
    from transitnet.store.atomic import write_text_atomic

    overrides = parse_data_overrides(getattr(args, "extra", []), args.config)
    lines = "auto" if args.new_lines == "auto" else [k for k in args.new_lines.split(",") if k]
    cfg = config_for_tier(
        args.tier,
        new_lines=lines,
        init=args.init,
        max_steps=args.max_steps,
        min_windows=args.min_windows,
        seed=args.seed,
        **training_options(args),
    )
    report = extend_lines(
        args.ckpt, args.out, cfg, data_overrides=overrides, eval_dates=args.eval_dates
    )
    data = report_dict(report)
    write_text_atomic(args.out / "report.json", json.dumps(data, indent=2) + "\n")
    rows = [f"- **{k}**: {v}" for k, v in data.items() if k != "evaluation"]
    write_text_atomic(args.out / "report.md", "# Line extension\n\n" + "\n".join(rows) + "\n")
    logger.info("added %s; wrote %s", ", ".join(report.lines_added), args.out / "model.ckpt")
    return 0
