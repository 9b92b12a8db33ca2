"""How a forecaster is extended by new lines: :class:`ExtensionConfig` and tier defaults.

Kept apart from :mod:`transitnet.extend` (which runs the extension) so the CLI, the
scheduled job and experiments can build a configuration without the training code;
:mod:`transitnet.extend` re-exports every name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class ExtensionConfig:
    """How to extend (:func:`config_for_tier` gives a tier's validated settings).

    Attributes:
        new_lines: ``"auto"`` (line keys in the new data that the vocabulary lacks) or keys.
        init: Row init: ``unknown``, ``mean``, ``mean_cov``, ``similar:<key,…>``,
            ``similar:auto`` (the known lines on the new line's path, from the static feed:
            :mod:`transitnet.extend_inits`), ``random``.
        tier: ``zero-shot``, ``row-only``, ``partial``, ``replay``, ``fork`` or ``naive``.
        max_steps: Optimizer steps (ignored for ``zero-shot``).
        new_row_lr: Learning rate of the new rows.
        layer_lr: Learning rate of fine-tuned layers.
        distill_weight: Distillation weight (``partial``/``replay``).
        anchor_weight: L2 anchor weight (``partial``/``replay``).
        replay_per_line: Old-line windows per line in the replay buffer.
        replay_new_share: ``replay`` (and ``partial`` with ``distill_per_line``) repeats
            the new lines' windows until they are at least this share of the training set
            (0: no repetition; with few new windows the old-line windows would otherwise
            fill nearly every batch).
        distill_per_line: ``partial`` also distils on this many old-line windows per line
            (their inputs only: they never enter the forecast loss), sampled like the
            replay buffer, so the tuned layers are held to the base model on old lines'
            own inputs too (0: distil on the new lines' inputs only).
        lr_decay: Decay the learning rates to 0 along a cosine over ``max_steps``.
        tune_layers: ``ForecastNet`` submodules ``partial``/``replay``/``fork`` fine-tune
            (``None``: ``trunk`` and ``head``; for ``fork`` every layer, ``[]`` its new
            rows only).
        min_windows: ``auto`` only adds lines with at least this many training windows.
        batch_size: Windows per step.
        seed: Seed for initialisation, sampling and training.
        early_stopping: Choose the number of steps on the new lines' own last trips
            (:mod:`transitnet.extend_holdout`): ``on``, ``off``, or ``auto`` (on for a
            few-trip line, see ``few_trips``, with at least two trips). A first run trains
            on the earlier trips, scoring the held-out trips at step 0 and every few
            steps; the extension then trains on every trip for the step count with the
            lowest held-out MAE (0 keeps the initialisation). Costs up to one more run;
            both runs' steps and time are in the report.
        few_trips: A new line with fewer trips than this in the training windows is a
            few-trip line: ``auto`` early stopping turns on, and ``fork`` tunes its new
            rows only (its layers are trained on the new line alone, with no anchor: from
            a few trips, of one part of the day, they learn that part of the day; the
            validation-chosen layer settings are for a day of data).
    """

    new_lines: str | list[str] = "auto"
    init: str = "unknown"
    tier: str = "row-only"
    max_steps: int = 300
    new_row_lr: float = 1e-2
    layer_lr: float = 1e-3
    distill_weight: float = 1.0
    anchor_weight: float = 10.0
    replay_per_line: int = 64
    replay_new_share: float = 0.5
    distill_per_line: int = 64
    lr_decay: bool = True
    tune_layers: list[str] | None = None
    min_windows: int = 20
    batch_size: int = 256
    seed: int = 0
    early_stopping: str = "auto"
    few_trips: int = 10


#: Per-tier settings chosen on validation by ``benchmarks/exp_new_line.py`` (candidates of
#: ``exp_new_line_select.GRID``). Each of its four datasets (Austin 803 and 801, Auckland
#: 07006 and 07005, seed 0) chose per tier on its own validation split; these are the
#: choices made most often, ties going to the stronger anchor (the README lists every
#: dataset's choice). :func:`config_for_tier` applies them over the dataclass defaults.
TIER_DEFAULTS: dict[str, dict[str, Any]] = {
    "row-only": {"new_row_lr": 3e-2},
    "partial": {
        "anchor_weight": 10.0,
        "layer_lr": 1e-3,
        "distill_weight": 1.0,
        "distill_per_line": 64,
    },
    "replay": {"anchor_weight": 10.0, "layer_lr": 1e-3, "replay_per_line": 64, "tune_layers": None},
    # fork: Austin 803 and 801 and Auckland 07005 chose this (runs j_nl_*, README); 07006 all
    # layers at 1e-3 (new rows 3e-2).
    "fork": {"new_row_lr": 1e-2, "layer_lr": 3e-3, "tune_layers": ["trunk", "head"]},
}


def config_for_tier(tier: str = "row-only", **given: Any) -> ExtensionConfig:
    """An :class:`ExtensionConfig` for ``tier`` with its validated settings, then ``given``.

    Args:
        tier: The extension tier (``zero-shot``/``naive`` have no validated settings).
        **given: Any other :class:`ExtensionConfig` field; these win over the tier's.
    """
    return ExtensionConfig(**{**TIER_DEFAULTS.get(tier, {}), "tier": tier, **given})
