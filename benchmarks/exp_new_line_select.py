"""Choosing :mod:`exp_new_line`'s extension settings on a validation split, never on test.

Per dataset and tier, every candidate of :data:`GRID` (overrides of the library defaults,
:class:`transitnet.extend.ExtensionConfig`) is trained on the new line's day of data
minus its last trips, with the step rule and budget of the real runs, and scored on
time-ordered validation windows: the new line's held-out last trips (new-line MAE) and
the old lines' windows of the validation period (forgetting against the base model).
The chosen candidate is the one with the lowest validation new-line MAE among those
that stay within the bar's compute budget with a margin (CPU seconds at most
:data:`MARGIN_CPU` × :data:`BUDGET` of joint retraining's) and whose validation
forgetting stays within :data:`MARGIN` of the issue's bars (mean 1 %, worst line 3 %);
when none does, forgetting comes first: the lowest MAE among those within the forgetting
margin whatever their compute, else the most conservative candidate (the first of
:data:`GRID`). The test period is scored once, afterwards, with the chosen settings
(init ``unknown`` during the choice; the choice then applies to every init and k level).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from transitnet.datasets.windows import Windows
from transitnet.extend_holdout import split_last_trips

__all__ = ["GRID", "Held", "choose", "eligible", "label", "split_last_trips"]

logger = logging.getLogger("exp_new_line")

#: Candidates per tier: the settings each sets (the rest are the library defaults), the
#: most conservative first (strongest anchor, fewest tuned layers): :func:`choose`'s fallback.
ALL_LAYERS = ["encoder", "trunk", "head"]
GRID: dict[str, tuple[dict[str, Any], ...]] = {
    "row-only": tuple({"new_row_lr": lr} for lr in (3e-3, 1e-2, 3e-2)),
    "partial": tuple(
        {"anchor_weight": a, "layer_lr": 1e-3, "distill_weight": w, "distill_per_line": n}
        for a, w, n in ((10.0, 1.0, 64), (1.0, 1.0, 64), (0.0, 1.0, 64), (0.0, 10.0, 256))
    ),
    "replay": tuple(
        {"anchor_weight": a, "layer_lr": lr, "replay_per_line": n, "tune_layers": layers}
        for a, lr, n, layers in (
            (10.0, 1e-3, 64, None),
            (1.0, 1e-3, 64, None),
            (0.0, 1e-3, 256, None),
            (0.0, 1e-3, 1024, None),
            (0.0, 3e-3, 1024, None),
            (0.0, 1e-3, 1024, ALL_LAYERS),
        )
    ),
    # The fork fine-tunes a copy (every layer by default, None) and routes the new line to
    # it: forgetting is 0 by construction, so the choice is new-line MAE within budget.
    "fork": tuple(
        {"new_row_lr": r, "layer_lr": lr, "tune_layers": layers}
        for r, lr, layers in (
            (1e-2, 1e-3, None),
            (1e-2, 3e-3, None),
            (3e-2, 1e-3, None),
            (1e-2, 3e-3, ["trunk", "head"]),
        )
    ),
}

#: Share of the new line's trips (the last ones by start time) held out for validation.
VAL_SHARE = 0.25
#: A candidate is eligible when its validation forgetting is within this share of the bars.
MARGIN = 0.5
BAR_MEAN, BAR_WORST = 0.01, 0.03
#: The bar's compute budget: CPU seconds at most this share of joint retraining's.
BUDGET = 0.10
#: ... and a candidate must measure at most this share of it on validation: CPU seconds
#: move by 10-30 % between runs on a shared machine (an all-layer fork at the step cap
#: measured 7.4-13.0 % of joint's on Austin 801), so, as for forgetting, the choice keeps
#: a margin to the bar.
MARGIN_CPU = 0.8
#: Old lines with fewer validation windows are left out of validation forgetting.
VAL_MIN_WINDOWS = 30


@dataclass
class Held:
    """Validation windows: old lines' validation-period windows and the new line's last trips."""

    test: Windows
    is_new_test: np.ndarray


def within_budget(run: dict[str, Any]) -> bool:
    """CPU seconds at most :data:`MARGIN_CPU` × :data:`BUDGET` of joint retraining's.

    ``run["cpu_ratio"]`` is the run's CPU seconds over joint retraining's.
    """
    return bool(run.get("cpu_ratio", 0.0) <= MARGIN_CPU * BUDGET)


def within_margin(run: dict[str, Any]) -> bool:
    """Validation forgetting within :data:`MARGIN` of the bars (NaN: no old line scored)."""
    f = run["forgetting"]
    if not math.isfinite(f["mean_rel"]):
        return True
    return bool(f["mean_rel"] <= MARGIN * BAR_MEAN and f["worst_rel"] <= MARGIN * BAR_WORST)


def eligible(run: dict[str, Any]) -> bool:
    """Within the compute budget, and validation forgetting within :data:`MARGIN` of the bars.

    ``run["cpu_ratio"]`` is the run's CPU seconds over joint retraining's (row-only's
    forgetting is 0, never NaN; a NaN forgetting, no old line scored, counts as within).
    """
    return within_budget(run) and within_margin(run)


def choose(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The chosen candidate among one tier's validation runs (see the module docstring).

    The lowest validation new-line MAE among eligible runs. When none is, forgetting
    comes before compute: the lowest MAE among the runs whose validation forgetting is
    within the margin (over the budget: that tier then fails the compute bar, never the
    forgetting one); when none is, the most conservative candidate (the first of
    :data:`GRID`, which lists each tier's strongest anchor first).
    """
    for pool in ([r for r in runs if eligible(r)], [r for r in runs if within_margin(r)]):
        if pool:
            return min(pool, key=lambda r: r["new_mae_m"]["mean"])
    return runs[0]


def label(overrides: dict[str, Any]) -> str:
    """A short label of a candidate's overrides."""
    return ", ".join(f"{k}={v}" for k, v in overrides.items() if v is not None) or "defaults"
