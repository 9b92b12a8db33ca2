"""The end-to-end demo: simulate (or replay) → ingest run → compact → match → fit → evaluate.

A fresh machine has no feed to poll and no internet, so the demo serves a feed itself on
127.0.0.1: by default a simulated day on the package's built-in network (clearly marked
simulated), or a recorded archive given with ``archive``. Everything lands in ``out``:
the store, the static feed, the checkpoint and the evaluation report.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from transitnet.store.atomic import write_text_atomic

logger = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """Demo settings.

    Attributes:
        out: Output folder (store, network, checkpoint, report).
        archive: A recorded archive (folder or tar of .pb snapshots) to replay instead of
            simulating; the model steps need ``static`` then.
        static: Static GTFS for the archive, or a real feed to simulate instead of the
            built-in network.
        hours: Simulated service hours (from 06:00 local, yesterday).
        poll_s: Seconds between ``ingest run`` ticks (the replay advances on every poll).
        epochs: Training epochs.
        seed: Seed for simulation and training.
        train_model: Run match → fit → evaluate after ingestion.
    """

    out: Path
    archive: Path | None = None
    static: Path | None = None
    hours: float = 8.0
    poll_s: float = 0.05
    epochs: int = 8
    seed: int = 0
    train_model: bool = True


def build_snapshots(cfg: DemoConfig) -> tuple[list[Any], Path | None, str]:
    """Snapshots to serve, the static feed for matching, and the agency timezone."""
    from transitnet.realtime.replay import load_snapshots
    from transitnet.realtime.sim_network import TIMEZONE, build_default_network
    from transitnet.realtime.simulate import SimConfig, read_static, simulate_snapshots

    if cfg.archive is not None:
        logger.info("replaying recorded archive %s", cfg.archive)
        return load_snapshots(cfg.archive), cfg.static, "UTC"
    static = cfg.static or build_default_network(cfg.out / "network.zip")
    feed = read_static(static)
    tz = str(feed.agency["agency_timezone"].iloc[0]) if cfg.static else TIMEZONE
    day = dt.datetime.now(ZoneInfo(tz)).date() - dt.timedelta(days=1)
    start = dt.datetime.combine(day, dt.time(6, 0), ZoneInfo(tz))
    sim = SimConfig(start=start, duration_s=cfg.hours * 3600, step_s=30.0, seed=cfg.seed)
    logger.info("SIMULATED feed: %s, %.0f h from %s (%s)", static.name, cfg.hours, start, tz)
    return simulate_snapshots(feed, sim), static, tz


def ingest_over_http(snapshots: list[Any], store: Path, poll_s: float) -> dict[str, Any]:
    """Serve ``snapshots`` on 127.0.0.1 and poll them with ``ingest run`` until all served."""
    from data_pipelines.config import parse_config
    from data_pipelines.ingest import run_forever
    from transitnet.realtime.replay import ReplayServer

    with ReplayServer(snapshots, speed=0) as server:
        config = parse_config({"feeds": [{
            "id": "demo", "url": server.url, "interval_s": poll_s,
            "connect_timeout_s": poll_s * 0.5, "read_timeout_s": poll_s * 0.95,
        }]})  # fmt: skip
        stop = threading.Event()
        loop = threading.Thread(target=run_forever, args=(config, store),
                                kwargs={"stop_event": stop}, daemon=True)  # fmt: skip
        logger.info("ingest run polling %s every %.2f s (%d snapshots)", server.url, poll_s,
                    len(snapshots))  # fmt: skip
        loop.start()
        try:
            server.wait_done(timeout=3600)
            time.sleep(10 * poll_s + 0.5)
        finally:
            stop.set()
            loop.join(timeout=120)
        return dict(server.status())


def summarise_store(store: Path) -> dict[str, Any]:
    """Rows, vehicles, trips and raised rule flags of the stored positions."""
    from transitnet.schema import FLAG_COLUMNS
    from transitnet.store.parquet import read_positions

    df = read_positions(store)
    flags = {c.removeprefix("flag_").upper(): int(df[c].fillna(False).sum())
             for c in FLAG_COLUMNS if c in df and df[c].fillna(False).any()}  # fmt: skip
    return {"rows": len(df), "vehicles": int(df["vehicle_id"].nunique()),
            "trips": int(df["trip_id"].nunique()), "flags": flags}  # fmt: skip


def time_splits(store: Path, tz: str) -> dict[str, list[str]]:
    """Local-time train/val/test ranges: the first 60 %, next 20 % and last 20 % of fixes."""
    from transitnet.store.parquet import read_positions

    times = read_positions(store, columns=["vehicle_timestamp"])["vehicle_timestamp"].dropna()
    local = times.dt.tz_convert(tz).dt.tz_localize(None)
    q = local.quantile([0.0, 0.6, 0.8, 1.0]).dt.floor("min").tolist()
    q[-1] += pd.Timedelta(minutes=1)
    fmt = "%Y-%m-%dT%H:%M"
    return {name: [f"{q[i].strftime(fmt)}..{q[i + 1].strftime(fmt)}"]
            for i, name in enumerate(("train", "val", "test"))}  # fmt: skip


def fit_and_evaluate(cfg: DemoConfig, store: Path, static: Path, tz: str) -> Path:
    """Train a small forecaster on the store and write the evaluation report."""
    import pytorch_lightning as pl

    from transitnet.datamodules.transit import TransitDataModule
    from transitnet.evaluate import (
        run_evaluation,
        summarise,
        write_evaluation_report,
        write_metrics,
    )
    from transitnet.tasks.forecasting import ForecastingTask

    splits = time_splits(store, tz)
    logger.info("time-ordered splits (local): %s", splits)
    pl.seed_everything(cfg.seed, workers=True)
    dm = TransitDataModule(str(store), str(static), train_dates=splits["train"],
                           val_dates=splits["val"], test_dates=splits["test"], timezone=tz,
                           batch_size=256)  # fmt: skip
    task = ForecastingTask(hidden_dim=48, line_dim=8, max_epochs_hint=cfg.epochs)
    trainer = pl.Trainer(max_epochs=cfg.epochs, logger=False, enable_checkpointing=False,
                         default_root_dir=cfg.out, enable_model_summary=False)  # fmt: skip
    trainer.fit(task, dm)
    ckpt = cfg.out / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    report_dir = cfg.out / "report"
    metrics = summarise(run_evaluation(ckpt))
    write_metrics(metrics, report_dir)
    write_evaluation_report(metrics, report_dir, ckpt.name)
    return report_dir


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the whole demo; returns a summary (also logged)."""
    from data_pipelines.compact import run_compaction

    cfg.out.mkdir(parents=True, exist_ok=True)
    store = cfg.out / "store"
    snapshots, static, tz = build_snapshots(cfg)
    served = ingest_over_http(snapshots, store, cfg.poll_s)
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    run_compaction(store, before=tomorrow)
    summary: dict[str, Any] = {"served": served, "stored": summarise_store(store)}
    if cfg.train_model and static is not None:
        summary["report"] = str(fit_and_evaluate(cfg, store, static, tz) / "report.md")
    write_text_atomic(cfg.out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    return summary
