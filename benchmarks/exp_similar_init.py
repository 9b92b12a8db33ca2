"""Which ``similar:auto`` rule to ship: zero-shot new-line MAE of each candidate rule.

For each dataset of :mod:`exp_new_line` (its specs, stores and the base checkpoint it
trained, ``WORK/<name>/base.ckpt``: run ``exp_new_line.py`` first), the base model is grown
by the held-out line with no training (``zero-shot``) and scored on the new line's windows
of one split (``--split val`` by default: the choice was made on validation). Rules, from
the direction-aware path overlap of :mod:`transitnet.gtfs.similar_lines`: the single
best-overlapping line (``top1``), the mean row of the best three (``top3``), of those
sharing at least 20 % of the path (``ge20``), of every line sharing any of it (``all``,
shipped); references: ``unknown``, ``mean`` and ``random`` (mean of 5 draws).

Usage: ``.venv/bin/python benchmarks/exp_similar_init.py --work runs/work [--split val]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import exp_common as ec
from exp_new_line_setup import DATASETS, Settings, Spec, load_data

from transitnet.evaluate import predict_windows
from transitnet.extend import ExtensionConfig, train_extension
from transitnet.gtfs.artefacts import load_or_build_artefacts
from transitnet.gtfs.similar_lines import rank_similar_lines
from transitnet.metrics import compute_mae
from transitnet.tasks import ForecastingTask

logger = logging.getLogger("exp_similar_init")
SPECS = Path(__file__).resolve().parent / "specs"


def score_rules(name: str, spec: Spec, work: Path, split: str) -> dict[str, Any]:
    """Zero-shot new-line MAE (mean over horizons, m) of every rule on ``split``."""
    data = load_data(spec, Settings(), work / name)
    base_dm = data.dm.with_windows({"train": data.train_old}, keep_state=False)
    base_dm.setup("fit")  # the base's vocabulary and scalers, as exp_new_line fitted them
    path = work / name / "base.ckpt"
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    base = ForecastingTask.load_from_checkpoint(path, map_location="cpu")
    windows = data.val if split == "val" else data.test
    new = windows.subset(windows.meta["line_key"].isin(spec.new_lines).to_numpy())
    key = spec.new_lines[0]

    def mae(init: str, seed: int = 0) -> float:
        dm = base_dm.with_windows({"train": data.train_old, "test": new})
        cfg = ExtensionConfig(init=init, tier="zero-shot", seed=seed)
        task, _ = train_extension(ckpt, base, dm, [key], cfg, progress_bar=False)
        pred = predict_windows(task, dm, "test")[..., len(task.quantiles) // 2]
        return float(np.nanmean(compute_mae(pred, new.targets, new.target_mask)))

    known = [k for k in base_dm.vocab.keys[1:] if k != key]
    ranked = rank_similar_lines(load_or_build_artefacts(spec.static or "", data.dm.store),
                                key, known)  # fmt: skip
    shared = ranked[ranked["overlap"] > 0]
    rules = {
        "top1": shared["line_key"].iloc[:1],
        "top3": shared["line_key"].iloc[:3],
        "ge20": shared["line_key"][shared["overlap"] >= 0.2],
        "all": shared["line_key"],
    }
    out: dict[str, Any] = {"windows": len(new), "unknown": mae("unknown"), "mean": mae("mean")}
    out["random"] = float(np.mean([mae("random", seed) for seed in range(5)]))
    for rule, keys in rules.items():
        out[rule] = mae("similar:" + ",".join(keys)) if len(keys) else None
    out["lines"] = {rule: list(keys) for rule, keys in rules.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    """Print (and log) every rule's zero-shot MAE per dataset as JSON."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ec.quiet_lightning()
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--work", type=Path, required=True, help="exp_new_line's --work folder.")
    p.add_argument("--split", choices=["val", "test"], default="val", help="Default val.")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    specs = {
        "austin": DATASETS["austin"],
        "auckland": DATASETS["auckland"],
        "austin_801": Spec(**json.loads((SPECS / "new_line_austin_801.json").read_text())),
        "auckland_07005": Spec(**json.loads((SPECS / "new_line_auckland_07005.json").read_text())),
    }
    results = {}
    for name, spec in specs.items():
        if not (args.work / name / "base.ckpt").exists():
            logger.warning(
                "%s: no base checkpoint under %s (run exp_new_line first)", name, args.work
            )
            continue
        results[name] = score_rules(name, spec, args.work, args.split)
        logger.info("%s %s: %s", name, args.split, json.dumps(results[name]))
    sys.stdout.write(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
