"""``transitnet extend-classes``: add lines to a trained route classifier by name."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``extend-classes`` subcommand."""
    p = sub.add_parser(
        "extend-classes",
        help="Grow a route-classifier checkpoint by new classes (lines) without losing old ones.",
        description=(
            "Loads CKPT, adds the new line keys as classes (by name) initialised by --init, "
            "trains them under --mode on SHOTS example trajectories each from the new data, "
            "aligns (--align), and writes OUT/model.ckpt, OUT/report.json and OUT/report.md. "
            "Extra --data.KEY VALUE arguments override the checkpoint's DataModule arguments "
            "(e.g. --data.train_dates '[2017-03-21]' for the new data)."
        ),
    )
    p.add_argument("--ckpt", required=True, type=Path, help="Base checkpoint from `fit`.")
    p.add_argument("--config", type=Path, help="LightningCLI YAML whose data section applies.")
    p.add_argument(
        "--new-classes",
        default="auto",
        help="'auto' (line keys in the new data the classifier lacks) or comma-separated keys.",
    )
    p.add_argument(
        "--init",
        default="imprint",
        choices=["imprint", "mean", "low_bias", "random"],
        help="New-row init: imprint (normalised mean feature of the examples), mean (of the "
        "old rows), low_bias (old argmax unchanged until trained), random (ablation).",
    )
    p.add_argument(
        "--mode",
        default="frozen",
        choices=["none", "frozen", "replay", "naive", "prototype"],
        help="What trains: none (nothing), frozen (new rows only, no old data needed), replay "
        "(everything, old-class replay + distillation), naive (everything on new data; "
        "experiments only), prototype (class means, no training; answers by nearest mean).",
    )
    p.add_argument(
        "--align",
        default="wa",
        choices=["none", "wa", "bic"],
        help="After training: wa (linear head: rescale new rows to the old rows' mean norm; "
        "cosine head: lower the new biases until at most --wa-claim-rate of old-class "
        "pseudo-features drawn from the stored statistics go to new classes), bic (two "
        "scalars on new logits fitted on held-out windows; mode replay only) or none.",
    )
    p.add_argument(
        "--wa-claim-rate", type=float, default=0.0005, help="Statistical WA target (cosine head)."
    )
    p.add_argument(
        "--claim-gate",
        type=float,
        default=0.2,
        metavar="Q",
        help="After aligning, the new classes only take windows where the old classes' "
        "largest probability is below its Q-quantile over the base model's correct training "
        "windows (default 0.2; 0 = off, at most 0.5): old predictions the base model was sure "
        "of never change.",
    )
    p.add_argument(
        "--old-stats",
        default="covariance",
        choices=["mixture", "covariance", "stds"],
        help="Which stored statistics of the old classes their pseudo-features (frozen mode) "
        "and statistical WA draw from: mixture (each class's sub-centres), covariance (one "
        "Gaussian per class, full covariance; the default, chosen on validation) or stds (one "
        "Gaussian, per-dimension stds).",
    )
    p.add_argument("--shots", type=int, help="Example trajectories per new class (default all).")
    p.add_argument("--mask", action="store_true", help="Add the new classes masked until trained.")
    p.add_argument("--max-steps", type=int, default=200, help="Optimizer steps (default 200).")
    p.add_argument("--batch-size", type=int, default=128, help="Windows per step (default 128).")
    p.add_argument("--new-row-lr", type=float, default=1e-2, help="LR of the new rows.")
    p.add_argument("--layer-lr", type=float, default=3e-4, help="LR of encoder and old rows.")
    p.add_argument("--distill-weight", type=float, default=1.0, help="Distillation weight.")
    p.add_argument("--replay-per-class", type=int, default=20, help="Replay windows per class.")
    p.add_argument("--bic-per-class", type=int, default=10, help="BiC held-out windows per class.")
    p.add_argument("--min-windows", type=int, default=10, help="'auto': min windows per line.")
    p.add_argument("--seed", type=int, default=0, help="Seed (sampling, init, training).")
    p.add_argument(
        "--eval-dates",
        nargs="+",
        help="Report old- and new-class accuracy before and after on these (later) dates.",
    )
    p.add_argument("--out", required=True, type=Path, help="Output folder.")
    p.set_defaults(func=run, accepts_extra=True)


def run(args: argparse.Namespace) -> int:
    """Run the extension; the reports are written by :func:`extend_classes`."""
    from transitnet.cli.overrides import parse_data_overrides
    from transitnet.extend_classes import extend_classes
    from transitnet.extend_classes_config import ClassExtensionConfig

    overrides = parse_data_overrides(getattr(args, "extra", []), args.config)
    names = args.new_classes
    cfg = ClassExtensionConfig(
        new_classes="auto" if names == "auto" else [k for k in names.split(",") if k],
        init=args.init,
        mode=args.mode,
        align=args.align,
        shots=args.shots,
        mask=args.mask,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        new_row_lr=args.new_row_lr,
        layer_lr=args.layer_lr,
        distill_weight=args.distill_weight,
        replay_per_class=args.replay_per_class,
        bic_per_class=args.bic_per_class,
        wa_claim_rate=args.wa_claim_rate,
        mixture=args.old_stats == "mixture",
        claim_gate=args.claim_gate,
        full_covariance=args.old_stats != "stds",
        min_windows=args.min_windows,
        seed=args.seed,
        progress=True,
    )
    report = extend_classes(
        args.ckpt, args.out, cfg, data_overrides=overrides, eval_dates=args.eval_dates
    )
    logger.info(
        "added %s (%s, %s, %s); wrote %s",
        ", ".join(report.classes_added),
        report.init,
        report.mode,
        report.align,
        args.out / "model.ckpt",
    )
    return 0
