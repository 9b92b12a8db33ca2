"""Scheduled job: watch new data for unseen lines and extend the model when one has enough.

This is the operational answer to "when do I retrain?": run it daily after compaction
(see ``examples/crontab``). It counts matched fixes per line key over the recent days,
and when a line the current model does not know has at least ``--min-fixes`` fixes it
runs :func:`transitnet.extend.extend_lines` and moves the ``current.json`` pointer in
``--models`` to the new checkpoint (atomically). Lines below the threshold keep using
the unknown row until they have enough data.

Usage::

    python -m data_pipelines.extend_lines --models /var/lib/transitnet/models
        --store /var/lib/transitnet --static /etc/transitnet/gtfs.zip --days 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from transitnet.cli import configure_logging
from transitnet.cli.extend import add_training_options, training_options
from transitnet.datamodules.loading import ensure_matched
from transitnet.datasets.vocab import LineVocabulary
from transitnet.extend import ExtensionConfig, config_for_tier, extend_lines, report_dict
from transitnet.store.atomic import write_text_atomic

logger = logging.getLogger(__name__)

POINTER = "current.json"


def read_current(models: Path) -> Path:
    """The checkpoint ``models/current.json`` points at."""
    pointer = models / POINTER
    if not pointer.exists():
        raise FileNotFoundError(f'{pointer} is missing: write {{"ckpt": PATH}} for the base model')
    ckpt = Path(json.loads(pointer.read_text())["ckpt"])
    return ckpt if ckpt.is_absolute() else models / ckpt


def count_unseen_fixes(
    ckpt_path: Path, store: Path, static: str | None, dates: list[str]
) -> dict[str, int]:
    """Matched fixes per line key absent from the checkpoint's vocabulary."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    vocab = LineVocabulary.from_state_dict(ckpt["TransitDataModule"]["vocab"])
    matched = ensure_matched(store, static, None, set(dates))
    ok = matched[matched["match_status"].astype(str).str.startswith(("ok", "fallback"))]
    counts = ok["line_key"].dropna().astype(str).value_counts()
    return {str(k): int(n) for k, n in counts.items() if str(k) not in vocab}


def run_job(
    models: Path,
    store: Path,
    *,
    static: str | None,
    dates: list[str],
    min_fixes: int,
    config: ExtensionConfig,
) -> Path | None:
    """Extend the current model when unseen lines have enough fixes; returns the new ckpt."""
    current = read_current(models)
    unseen = count_unseen_fixes(current, store, static, dates)
    ready = sorted(k for k, n in unseen.items() if n >= min_fixes)
    for key, n in sorted(unseen.items()):
        logger.info("unseen line %s: %d fixes (%s)", key, n, "ready" if n >= min_fixes else "wait")
    if not ready:
        logger.info("no unseen line has %d fixes yet: the model stays as it is", min_fixes)
        return None
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = models / f"extended-{stamp}"
    cfg = ExtensionConfig(**{**config.__dict__, "new_lines": ready})
    report = extend_lines(
        current,
        out,
        cfg,
        data_overrides={"store": str(store), "static": static, "train_dates": dates},
    )
    write_text_atomic(out / "report.json", json.dumps(report_dict(report), indent=2) + "\n")
    pointer: dict[str, Any] = {
        "ckpt": str(out / "model.ckpt"),
        "previous": str(current),
        "lines_added": ready,
    }
    write_text_atomic(models / POINTER, json.dumps(pointer, indent=2) + "\n")
    logger.info("model extended with %s: %s", ", ".join(ready), out / "model.ckpt")
    return out / "model.ckpt"


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of the job."""
    p = argparse.ArgumentParser(
        prog="python -m data_pipelines.extend_lines",
        description="Extend the current forecasting model when new lines have enough data.",
    )
    p.add_argument(
        "--models",
        required=True,
        type=Path,
        help='Folder with current.json ({"ckpt": PATH}) and extended checkpoints.',
    )
    p.add_argument("--store", required=True, type=Path, help="The transitnet store.")
    p.add_argument("--static", help="Static GTFS used to match positions (zip, folder or URL).")
    p.add_argument(
        "--days",
        type=int,
        default=1,
        help="Look back this many UTC days before today (default 1: yesterday).",
    )
    p.add_argument(
        "--min-fixes",
        type=int,
        default=500,
        help="Matched fixes a new line needs before it is added (default 500).",
    )
    p.add_argument(
        "--tier",
        default="row-only",
        choices=["zero-shot", "row-only", "partial", "replay", "fork"],
        help="Extension tier (default row-only: old lines provably unchanged).",
    )
    p.add_argument("--init", default="unknown", help="New-row initialisation (default unknown).")
    p.add_argument("--max-steps", type=int, default=300, help="Optimizer steps (default 300).")
    add_training_options(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; exit 0 whether or not a line was added, 2 on bad input."""
    args = build_parser().parse_args(argv)
    configure_logging("INFO")
    today = dt.datetime.now(dt.UTC).date()
    dates = [str(today - dt.timedelta(days=k)) for k in range(args.days, 0, -1)]
    cfg = config_for_tier(
        args.tier, init=args.init, max_steps=args.max_steps, **training_options(args)
    )
    try:
        run_job(
            args.models,
            args.store,
            static=args.static,
            dates=dates,
            min_fixes=args.min_fixes,
            config=cfg,
        )
    except (ValueError, OSError) as exc:
        logger.error("%s: %s", type(exc).__name__, exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
