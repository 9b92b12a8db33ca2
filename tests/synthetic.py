"""Tiny matched-trajectory stores built in code, for fast unit tests of the model path."""

from __future__ import annotations

from pathlib import Path

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
