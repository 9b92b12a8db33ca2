"""Experiment: choose the route classifier's backbone and statistical-WA target on validation.

For each dataset and backbone variant (auxiliary place × heading objective, cosine
margin), on the same data and split of lines as :mod:`exp_route_classifier`, train the
base classifier on the old lines, then add the new lines with n example trajectories
each (frozen encoder, imprint init, no old data) and score on the **validation** period
(time-ordered, before the test period, which this script never reads): old-class drop,
new-class accuracy, for plain frozen, statistical WA at several claim-rate targets and
the prototype head; joint retraining at the largest n gives bar 2's reference.
The test figures are then measured once by ``exp_route_classifier.py`` with the chosen
settings.

Usage: ``.venv/bin/python benchmarks/exp_route_classifier_select.py --out OUT --work DIR
[--datasets austin auckland] [--variants plain aux] [--rates 0.01 0.003]``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import exp_route_classifier as erc

from transitnet.datasets.class_batches import concat_class_windows, sample_trajectories
from transitnet.datasets.class_windows import is_member
from transitnet.evaluate_classes import predict_names, score_groups
from transitnet.extend_classes import ExtensionData, run_class_extension
from transitnet.extend_classes_config import ClassExtensionConfig
from transitnet.store.atomic import write_text_atomic

logger = logging.getLogger("exp_route_classifier_select")

#: Without the window descriptor (the experiment's default now has one).
PLAIN: dict[str, Any] = {"geo_dim": 0, "blind_features": ()}
#: Descriptor settings of the geo variants (128 features, width 0.05, weight 1) unless named.
GEO: dict[str, Any] = {
    "geo_dim": 128,
    "geo_length": 0.05,
    "geo_heading": 0.5,
    "geo_weight": 1.0,
    "blind_features": (),
}
VARIANT_PATH: dict[str, Any] = {**PLAIN, "aux_cells": 512, "aux_weight": 0.5, "aux_path": True}

#: Backbone variants: overrides of :class:`exp_route_classifier.Settings`.
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": PLAIN,
    "aux": {**PLAIN, "aux_cells": 256, "aux_weight": 0.5},
    "aux1": {**PLAIN, "aux_cells": 256, "aux_weight": 1.0},
    "margin": {**PLAIN, "margin": 0.2},
    "aux+margin": {**PLAIN, "aux_cells": 256, "aux_weight": 0.5, "margin": 0.2},
    "path": VARIANT_PATH,
    "margin0.1": {**PLAIN, "margin": 0.1},
    "path+margin0.1": {**VARIANT_PATH, "margin": 0.1},
    "geo": GEO,
    "geo-fine": {**GEO, "geo_length": 0.02},
    "geo-coarse": {**GEO, "geo_length": 0.1},
    "geo-w2": {**GEO, "geo_weight": 2.0},
    "geo-w0.5": {**GEO, "geo_weight": 0.5},
    "geo-coarse-w2": {**GEO, "geo_length": 0.1, "geo_weight": 2.0},
    "geo256-coarse": {**GEO, "geo_dim": 256, "geo_length": 0.1},
    "geo-coarser": {**GEO, "geo_length": 0.2},
    "geo256-coarse-notod": {
        **GEO,
        "geo_dim": 256,
        "geo_length": 0.1,
        "blind_features": ("tod_sin", "tod_cos"),
    },
}


#: Old-class statistics pseudo-features and statistical WA draw from: config overrides.
SOURCES: dict[str, dict[str, bool]] = {
    "stds": {"full_covariance": False, "mixture": False},
    "full": {"full_covariance": True, "mixture": False},
    "mix": {"full_covariance": True, "mixture": True},
}


def extension_grid(
    s: erc.Settings,
    rates: list[float],
    n: int,
    sources: tuple[str, ...] = ("stds", "full"),
    gates: tuple[float, ...] = (),
) -> list[ClassExtensionConfig]:
    """Frozen imprint, statistical WA per rate (+pseudo), the prototype head, old-data at max n.

    Pseudo-features come from each of ``sources``: per-dimension stds, (``/full``) full
    covariances or (``/mix``) sub-centres. Each claim gate of ``gates`` adds frozen +
    pseudo-features with no WA and with WA at every rate (full covariance), gated.
    """
    base = ClassExtensionConfig(
        init="imprint",
        mode="frozen",
        max_steps=s.max_steps,
        seed=s.seed,
        batch_size=64,
        claim_gate=0.0,
    )
    grid = [replace(base, align="none", pseudo_ratio=0.0)]
    for pseudo in (0.0, 1.0):
        grid += [
            replace(base, align="wa", pseudo_ratio=pseudo, wa_claim_rate=r, **SOURCES[src])
            for r in rates
            for src in sources
        ]
    for q in gates:
        pseudo = replace(base, align="none", pseudo_ratio=1.0, claim_gate=q)
        grid += [pseudo] + [replace(pseudo, align="wa", wa_claim_rate=r) for r in rates]
    grid.append(replace(base, mode="prototype", align="none"))
    if n == max(s.shots):
        grid.append(
            replace(base, align="none", pseudo_ratio=0.0, old_negatives=True, replay_per_class=200)
        )
    return grid


def label(cfg: ClassExtensionConfig) -> str:
    """Short method name of one extension config."""
    if cfg.mode == "prototype":
        return "prototype"
    name = "frozen" + ("+pseudo" if cfg.pseudo_ratio > 0 else "")
    name += "+old-data" if cfg.old_negatives else ""
    wa = f"+wa{'/class' if cfg.wa_per_class else ''}@{cfg.wa_claim_rate:g}"
    drawn = cfg.align == "wa" or cfg.pseudo_ratio > 0
    source = "/mix" if cfg.mixture else "/full" if cfg.full_covariance else ""
    gate = f"+gate@{cfg.claim_gate:g}" if cfg.claim_gate > 0 else ""
    return name + (wa if cfg.align == "wa" else "") + (source if drawn else "") + gate


def run_variant(
    spec: erc.DatasetSpec,
    s: erc.Settings,
    prep: dict[str, Any],
    rates: list[float],
    sources: tuple[str, ...] = ("stds", "full"),
    gates: tuple[float, ...] = (),
) -> dict[str, Any]:
    """Base, joint at max n and the extension grid of one backbone variant, on validation."""
    started = time.perf_counter()
    dm_all, old, new = prep["dm"], prep["old"], prep["new"]
    val, old_train, new_train = prep["val"], prep["old_train"], prep["new_train"]
    base_dm = erc.clone_dm(dm_all, old, old_train)
    base, base_s = erc.train(base_dm, s)
    base_scores = score_groups(predict_names(base, val, base_dm.scale), val.labels, new, old)
    n_max = max(s.shots)
    examples = sample_trajectories(new_train, new, n_max, s.seed)
    joint_dm = erc.clone_dm(dm_all, old + new, concat_class_windows([old_train, examples]))
    joint, _ = erc.train(joint_dm, s)
    joint_scores = score_groups(predict_names(joint, val, joint_dm.scale), val.labels, new, old)
    rows = []
    for n in s.shots:
        examples = sample_trajectories(new_train, new, n, s.seed)
        data = ExtensionData(concat_class_windows([old_train, examples]), val, base_dm.scale)
        for cfg in extension_grid(s, rates, n, sources, gates):
            _, report = run_class_extension(base, data, new, cfg)
            ev = report.evaluation["after"]
            rows.append(
                {
                    "n": n,
                    "method": label(cfg),
                    "old_drop_pp": report.summary["old_acc_drop_pp"],
                    "new_acc": ev["new"]["acc"],
                    "wa_offset": report.wa_offset,
                }
            )
    out = {
        "base_old_acc": base_scores["old"]["acc"],
        "base_train_s": round(base_s, 1),
        "joint_n_max": {"old": joint_scores["old"]["acc"], "new": joint_scores["new"]["acc"]},
        "runs": rows,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    logger.info("%s %s: %s", spec.name, s, json.dumps({k: out[k] for k in list(out)[:3]}))
    return out


def prepare(spec: erc.DatasetSpec, s: erc.Settings, work: Path) -> dict[str, Any]:
    """Load the dataset once: lines, old/new split (as the main experiment) and val windows."""
    store = erc.ensure_store(spec, work)
    dm_all = erc.make_dm(spec, store, s)
    dm_all.setup("fit")
    classes = list(dm_all.classes)
    train_all = dm_all.windows["train"].subset(is_member(dm_all.windows["train"].labels, classes))
    new = erc.pick_new(train_all, classes, s.k_new, s.seed, max(s.shots))
    old = [c for c in classes if c not in new]
    val = dm_all.windows["val"].subset(is_member(dm_all.windows["val"].labels, classes))
    if len(val) > s.max_test_windows:
        rng = np.random.default_rng(s.seed)
        val = val.subset(np.sort(rng.choice(len(val), s.max_test_windows, replace=False)))
    return {
        "dm": dm_all,
        "old": old,
        "new": new,
        "val": val,
        "old_train": train_all.subset(is_member(train_all.labels, old)),
        "new_train": train_all.subset(is_member(train_all.labels, new)),
    }


def summary_table(results: dict[str, Any], n: int) -> str:
    """Markdown: per dataset × variant × method at ``n``, old drop and new accuracy."""
    lines = ["| dataset | variant | base old | joint new | method | old drop (pp) | new acc |"]
    lines.append("|" + " --- |" * 7)
    for ds, variants in results.items():
        for var, res in variants.items():
            for r in (r for r in res["runs"] if r["n"] == n):
                lines.append(
                    f"| {ds} | {var} | {100 * res['base_old_acc']:.1f} | "
                    f"{100 * res['joint_n_max']['new']:.1f} | {r['method']} | "
                    f"{r['old_drop_pp']:+.1f} | {100 * (r['new_acc'] or 0):.1f} |"
                )
    return "\n".join(lines)


def score_method(per: dict[str, Any], method: str) -> tuple[float, str]:
    """Worst share of joint's new accuracy at max n over datasets (-1 if any drop > 1 pp).

    ``per``: dataset → one variant's results. Also returns the per-dataset figures.
    """
    cells, worst = [], 1.0
    for ds, res in per.items():
        rows = [r for r in res["runs"] if r["method"] == method]
        n_max = max(r["n"] for r in rows)
        drop = max(r["old_drop_pp"] for r in rows)
        new = next(r["new_acc"] or 0.0 for r in rows if r["n"] == n_max)
        ratio = new / max(res["joint_n_max"]["new"] or 0.0, 1e-9)
        worst = min(worst, ratio) if drop <= 1.0 else -1.0
        cells.append(f"{ds}: {drop:.2f} / {100 * new:.1f} % ({100 * ratio:.0f} %)")
    return worst, "; ".join(cells)


def best_table(results: dict[str, Any]) -> str:
    """Markdown: per variant, the best imprint + WA method (no old data) with drop ≤ 1 pp.

    The drop must stay ≤ 1 pp at every n on every dataset.

    Ranked by the worst (over datasets) new-class accuracy at the largest n as a share of
    joint retraining's; also lists the frozen + old-data ceiling per dataset.
    """
    lines = [
        "| variant | best method (≤ 1 pp at every n, every dataset) | max drop over n (pp) / "
        "new acc at max n (% of joint) | frozen+old-data ceiling: drop / new |",
        "|" + " --- |" * 4,
    ]
    for var in sorted({v for per in results.values() for v in per}):
        per = {ds: res[var] for ds, res in results.items() if var in res}
        runs = [r for res in per.values() for r in res["runs"]]
        methods = sorted({r["method"] for r in runs if "+wa" in r["method"]})  # bar 1: WA
        scores = {m: score_method(per, m) for m in methods}
        best = max(methods, key=lambda m: scores[m][0])
        ceiling = "; ".join(
            f"{ds}: {r['old_drop_pp']:+.1f} pp / {100 * (r['new_acc'] or 0):.1f} %"
            for ds, res in per.items()
            for r in res["runs"]
            if r["method"] == "frozen+old-data"
        )
        name = best if scores[best][0] >= 0 else "none"
        lines.append(f"| {var} | {name} | {scores[best][1]} | {ceiling} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = erc.build_parser(__doc__.split("\n")[0])
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["plain", "aux"],
        choices=VARIANTS,
        help="Backbone variants to train and compare on validation.",
    )
    parser.add_argument(
        "--rates",
        nargs="+",
        type=float,
        default=[0.03, 0.01, 0.003],
        help="Statistical-WA claim rates to compare on validation.",
    )
    parser.add_argument(
        "--sources",
        nargs="+",
        default=["stds", "full"],
        choices=SOURCES,
        help="Old-class statistics the pseudo-features and statistical WA draw from: "
        "stds, full (covariance) or mix (sub-centres).",
    )
    parser.add_argument(
        "--gates",
        nargs="+",
        type=float,
        default=[],
        help="Claim-gate quantiles to add to the grid (frozen + pseudo-features, gated).",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "transitnet"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    s0 = replace(erc.QUICK if args.quick else erc.Settings(), seed=args.seed)
    facts = erc.machine_facts()
    results: dict[str, Any] = {}
    for ds in args.datasets:
        spec = erc.DATASETS[ds]
        prep = prepare(spec, s0, args.work or args.out / "work")
        results[ds] = {}
        for var in args.variants:
            s = replace(s0, **VARIANTS[var])
            results[ds][var] = {
                "settings": asdict(s),
                **run_variant(spec, s, prep, args.rates, tuple(args.sources), tuple(args.gates)),
            }
            write_text_atomic(
                args.out / "select.json",
                json.dumps({"machine": facts, "argv": sys.argv[1:], "results": results}, indent=1),
            )
    table = "\n\n".join([best_table(results)] + [summary_table(results, n) for n in s0.shots])
    write_text_atomic(args.out / "select.md", f"# Validation selection\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
