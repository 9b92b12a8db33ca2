"""Tiny matched-trajectory stores built in code, for fast unit tests of the model path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def make_matched(
    n_vehicles: int = 6,
    n_fixes: int = 40,
    lines: tuple[str, ...] = ("A", "B", "C"),
    day: str = "2024-05-06",
    seed: int = 0,
) -> pd.DataFrame:
    """Matched fixes: each line has its own cruising speed, with noise and dwells."""
    rng = np.random.default_rng(seed)
    frames = []
    base_speed = {k: 4.0 + 3.0 * i for i, k in enumerate(lines)}
    for v in range(n_vehicles):
        line = lines[v % len(lines)]
        t0 = pd.Timestamp(f"{day} 07:00", tz="UTC") + pd.Timedelta(minutes=17 * v)
        dt = rng.uniform(20, 40, n_fixes)
        speed = np.clip(base_speed[line] + rng.normal(0, 1.0, n_fixes), 0, None)
        speed[rng.random(n_fixes) < 0.1] = 0.0
        dist = np.cumsum(speed * dt)
        times = t0 + pd.to_timedelta(np.cumsum(dt), unit="s")
        frames.append(
            pd.DataFrame(
                {
                    "feed_id": "syn",
                    "vehicle_id": f"v{v}",
                    "trip_id": f"t{v}",
                    "route_id": line,
                    "start_date": day.replace("-", ""),
                    "vehicle_timestamp": pd.Series(times).astype("datetime64[us, UTC]"),
                    "latitude": 0.0,
                    "longitude": 0.0,
                    "line_key": line,
                    "shape_id": f"s{line}",
                    "static_version": "syn",
                    "dist_along_m": dist,
                    "offset_m": rng.uniform(0, 10, n_fixes),
                    "progress": dist / dist[-1],
                    "speed_along_mps": speed,
                    "match_status": "ok",
                    "is_stale": False,
                    "is_dwell": speed == 0,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def write_matched_store(store: Path, matched: pd.DataFrame) -> Path:
    """Write ``matched`` as ``store/matched/feed=<id>/date=<UTC date>/part-0.parquet``."""
    dates = matched["vehicle_timestamp"].dt.strftime("%Y-%m-%d")
    for (feed, date), part in matched.groupby([matched["feed_id"], dates]):
        folder = store / "matched" / f"feed={feed}" / f"date={date}"
        folder.mkdir(parents=True, exist_ok=True)
        part.drop(columns=["feed_id"]).assign(feed_id=feed).to_parquet(folder / "part-0.parquet")
    return store


def fit_checkpoint(
    task: Any, dm: Any, root: Path, *, epochs: int = 1, name: str = "m.ckpt"
) -> Path:
    """Fit ``task`` on ``dm`` for ``epochs`` and save it as ``root/name`` (returned).

    No logger and no checkpoint callback: the tests' own fits, quiet and fast.
    """
    import pytorch_lightning as pl

    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(task, dm)
    ckpt = root / name
    trainer.save_checkpoint(ckpt)
    return ckpt


def train_base_checkpoint(tmp: Path, exclude: tuple[str, ...] = ("C",)) -> tuple[Path, Path]:
    """Train a tiny forecaster on 2024-05-06 without ``exclude`` lines; returns (ckpt, store).

    The store holds matched fixes of lines A, B, C on 2024-05-06, -07 and -08.
    """
    import pytorch_lightning as pl

    from transitnet.datamodules import TransitDataModule
    from transitnet.tasks import ForecastingTask

    store = write_matched_store(
        tmp / "store",
        pd.concat([make_matched(n_vehicles=9, day=f"2024-05-0{d}", seed=d) for d in (6, 7, 8)]),
    )
    pl.seed_everything(0)
    dm = TransitDataModule(
        str(store),
        train_dates=["2024-05-06"],
        val_dates=["2024-05-07"],
        horizons_s=[60, 120],
        past_fixes=4,
        batch_size=64,
        exclude_lines=list(exclude),
    )
    task = ForecastingTask(hidden_dim=16, line_dim=4)
    return fit_checkpoint(task, dm, tmp, epochs=2, name="base.ckpt"), store
