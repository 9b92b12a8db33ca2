"""Score a route classifier on old and new classes, and write extension reports.

Accuracy here is class-incremental: every window is classified among *all* the model's
classes (no oracle telling old from new), and grouped by its true line afterwards.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transitnet.datasets.class_batches import ClassWindowDataset
from transitnet.datasets.class_windows import ClassWindows, is_member
from transitnet.store.atomic import write_text_atomic
from transitnet.tasks.classification import ClassificationTask


@dataclass
class ClassExtensionReport:
    """What an extension did (``report.json``)."""

    classes_added: list[str]
    init: str
    mode: str
    align: str
    shots: int | None
    masked: bool
    steps: int
    wall_seconds: float
    example_windows: int
    replay_windows: int
    bic_windows: int
    wa_factor: float | None = None
    wa_offset: float | None = None
    bic: dict[str, float] | None = None
    claim_gate: dict[str, float] | None = None
    evaluation: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, float | bool | None] = field(default_factory=dict)


@torch.no_grad()
def predict_names(
    task: ClassificationTask,
    windows: ClassWindows,
    scale: tuple[np.ndarray, np.ndarray],
    features: torch.Tensor | None = None,
) -> np.ndarray:
    """Predicted class name per window (object array), in eval mode.

    ``features`` (from :meth:`ClassificationTask.encode_dataset` of the same encoder)
    skips the encoder.
    """
    if features is None:
        features = task.encode_dataset(
            ClassWindowDataset(windows, np.full(len(windows), -1), scale)
        )
    logits = task.logits(features)
    rows = logits.argmax(dim=1).numpy() if len(features) else np.zeros(0, np.int64)
    names: np.ndarray = np.asarray(task.class_names, dtype=object)[rows]
    return names


def score_groups(
    pred: np.ndarray, truth: np.ndarray, new: list[str], old: list[str]
) -> dict[str, Any]:
    """Accuracy on old-class, new-class and all those windows (``{"acc", "n"}`` each)."""
    out: dict[str, Any] = {}
    for name, members in (("old", old), ("new", new), ("all", old + new)):
        sel = is_member(truth, members)
        hits = int((pred[sel] == truth[sel]).sum())
        out[name] = {"acc": hits / int(sel.sum()) if sel.any() else None, "n": int(sel.sum())}
    return out


def evaluate_windows(
    task: ClassificationTask,
    windows: ClassWindows | None,
    scale: tuple[np.ndarray, np.ndarray],
    classes: tuple[list[str], list[str]],
    features: torch.Tensor | None = None,
) -> tuple[dict[str, Any], np.ndarray, torch.Tensor | None]:
    """Scores (:func:`score_groups` of ``classes`` = (new, old)), predictions and features.

    ``features`` from the same encoder skip encoding; no windows give empty results.
    """
    if windows is None:
        return {}, np.zeros(0, dtype=object), None
    if features is None:
        features = task.encode_dataset(
            ClassWindowDataset(windows, np.full(len(windows), -1), scale)
        )
    pred = predict_names(task, windows, scale, features)
    return score_groups(pred, windows.labels, *classes), pred, features


def summarise(
    evaluation: dict[str, Any],
    base_pred: np.ndarray,
    add_pred: np.ndarray,
    evaluated: ClassWindows | None,
    old: list[str],
) -> dict[str, float | bool | None]:
    """Headline figures: old-class drop (pp), new-class accuracy, AIA, argmax unchanged.

    ``avg_incremental_accuracy`` is the mean of the base model's accuracy on the old
    classes (step 0) and the grown model's accuracy on old and new classes (step 1).
    """
    if not evaluation or evaluated is None:
        return {}
    b, a = evaluation["before"], evaluation["after"]
    is_old = is_member(evaluated.labels, old)
    drop = None if b["old"]["acc"] is None else 100 * (b["old"]["acc"] - a["old"]["acc"])
    aia = None
    if b["old"]["acc"] is not None and a["all"]["acc"] is not None:
        aia = (b["old"]["acc"] + a["all"]["acc"]) / 2
    return {
        "old_acc_drop_pp": drop,
        "new_acc": a["new"]["acc"],
        "avg_incremental_accuracy": aia,
        "old_argmax_unchanged_after_add": bool((base_pred[is_old] == add_pred[is_old]).all()),
    }


def write_reports(report: ClassExtensionReport, out_dir: Path) -> None:
    """Write ``report.json`` and a Markdown ``report.md`` atomically."""
    data = asdict(report)
    write_text_atomic(out_dir / "report.json", json.dumps(data, indent=2) + "\n")
    lines = ["# Class extension", ""]
    lines += [f"- **{k}**: {v}" for k, v in data.items() if k not in ("evaluation", "summary")]
    if report.evaluation:
        lines += [
            "",
            "| stage | old-class acc | new-class acc | all | n old | n new |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for stage, s in report.evaluation.items():
            cells = [_pct(s[g]["acc"]) for g in ("old", "new", "all")]
            lines.append(f"| {stage} | {' | '.join(cells)} | {s['old']['n']} | {s['new']['n']} |")
        lines += ["", *(f"- {k}: {v}" for k, v in report.summary.items())]
    write_text_atomic(out_dir / "report.md", "\n".join(lines) + "\n")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"
