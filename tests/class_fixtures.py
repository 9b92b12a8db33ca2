"""Tiny position stores built in code, for fast unit tests of route classification."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from transitnet.store.parquet import write_positions

ORIGIN = (30.27, -97.74)
LINES = ("A", "B", "C", "D", "E")


def make_positions(
    lines: tuple[str, ...] = LINES,
    day: str = "2024-05-06",
    trips_per_line: int = 4,
    n_fixes: int = 24,
    seed: int = 0,
    feed_id: str = "syn",
) -> pd.DataFrame:
    """Vehicles on straight lines across a city, one line per angle, fixes every ~30 s.

    Each line runs 6 km at its own angle, offset sideways by 800 m per line so that the
    lines do not all cross at one point; trips alternate direction and start every 20
    minutes from 07:00 UTC. Positions carry ~5 m of GPS noise.
    """
    rng = np.random.default_rng(seed)
    frames = []
    for i, line in enumerate(lines):
        angle = np.pi * i / len(lines)
        for trip in range(trips_per_line):
            sign = 1 if trip % 2 == 0 else -1
            t0 = pd.Timestamp(f"{day} 07:00", tz="UTC") + pd.Timedelta(minutes=20 * trip + i)
            dt = rng.uniform(25, 35, n_fixes)
            along = sign * (-3000 + np.cumsum(rng.uniform(5, 9, n_fixes) * dt))
            side = 800.0 * (i - (len(lines) - 1) / 2)
            x = along * np.cos(angle) - side * np.sin(angle) + rng.normal(0, 5, n_fixes)
            y = along * np.sin(angle) + side * np.cos(angle) + rng.normal(0, 5, n_fixes)
            lat = ORIGIN[0] + np.degrees(y / 6_371_008.8)
            lon = ORIGIN[1] + np.degrees(x / (6_371_008.8 * np.cos(np.radians(ORIGIN[0]))))
            times = t0 + pd.to_timedelta(np.cumsum(dt), unit="s")
            frames.append(
                pd.DataFrame(
                    {
                        "feed_id": feed_id,
                        "vehicle_id": f"v{line}{trip}",
                        "trip_id": f"t{line}{trip}-{day}",
                        "route_id": line,
                        "latitude": lat,
                        "longitude": lon,
                        "bearing": np.nan,
                        "vehicle_timestamp": pd.Series(times).astype("datetime64[us, UTC]"),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def write_store(store: Path, positions: pd.DataFrame) -> Path:
    """Write ``positions`` into ``store/positions/`` with the ingestion writer."""
    write_positions(store, pa.Table.from_pandas(positions, preserve_index=False))
    return store


def make_store(
    tmp: Path, days: tuple[str, ...] = ("2024-05-06", "2024-05-07", "2024-05-08"), **kwargs: object
) -> Path:
    """A store holding :func:`make_positions` for each day (seeded by the day)."""
    frames = [make_positions(day=d, seed=k, **kwargs) for k, d in enumerate(days)]  # type: ignore[arg-type]
    return write_store(tmp / "store", pd.concat(frames, ignore_index=True))


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Train with one thread (2 shared cores: more threads only spin), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
