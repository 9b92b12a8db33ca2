"""Baselines every learned forecast is measured against, on the same windows.

Each baseline predicts the along-route distance travelled from the anchor at every
horizon, as an (N, H) float array aligned with :class:`~transitnet.datasets.windows.Windows`.

- ``persistence``: the vehicle stays where it is.
- ``constant_speed``: it keeps its recent along-route speed (over the past window).
- ``historical_mean``: the mean distance travelled at each horizon by vehicles of the
  same line, in the same hour of the day, starting from the same segment of the shape,
  learned on the training windows, backing off to coarser groups when a group is sparse.
- ``schedule_delay`` (OneBusAway style): the vehicle keeps its current delay and follows
  the timetable; needs scheduled times along the shape (``stop_times.txt``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from transitnet.datasets.windows import CONTEXT_FEATURES, Windows

Baseline = Callable[[Windows], np.ndarray]


def predict_persistence(windows: Windows) -> np.ndarray:
    """Zero distance travelled at every horizon."""
    return np.zeros((len(windows), len(windows.horizons_s)), dtype=np.float32)


def predict_constant_speed(windows: Windows) -> np.ndarray:
    """Recent along-route speed (over the window's past fixes) times the horizon.

    Falls back to the anchor fix's own along-route speed when the window has one fix.
    """
    recent = windows.context[:, CONTEXT_FEATURES.index("recent_speed_mps")].astype(np.float64)
    anchor = windows.meta["speed_along_mps"].to_numpy(np.float64, na_value=0.0)
    speed = np.where(windows.lengths > 1, recent, anchor)
    speed = np.clip(np.nan_to_num(speed), 0.0, None)
    horizons = np.asarray(windows.horizons_s, dtype=np.float64)
    out: np.ndarray = (speed[:, None] * horizons[None, :]).astype(np.float32)
    return out


@dataclass
class HistoricalMean:
    """Mean distance travelled per line × hour of day × shape segment, per horizon.

    Attributes:
        segment_m: Length of the shape segments the anchor distance is binned into.
        min_count: Groups with fewer observed targets back off to the next coarser group
            (line × hour, then line, then all lines).
    """

    segment_m: float = 1000.0
    min_count: int = 5
    tables: list[pd.DataFrame] = field(default_factory=list)

    _LEVELS: tuple[tuple[str, ...], ...] = (
        ("line_key", "hour", "segment"),
        ("line_key", "hour"),
        ("line_key",),
        (),
    )

    def _keys(self, windows: Windows) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "line_key": windows.meta["line_key"].astype(str).to_numpy(),
                "hour": windows.meta["local_hour"].to_numpy(np.int64),
                "segment": np.floor(
                    windows.meta["dist_along_m"].to_numpy(np.float64) / self.segment_m
                ).astype(np.int64),
            }
        )

    def fit(self, windows: Windows) -> HistoricalMean:
        """Learn group means from (training) windows; masked targets are ignored."""
        keys = self._keys(windows)
        self.tables = []
        for level in self._LEVELS:
            frames = []
            for j in range(len(windows.horizons_s)):
                obs = keys.assign(target=windows.targets[:, j], ok=windows.target_mask[:, j])
                obs = obs[obs["ok"]]
                grouped = obs.groupby(list(level))["target"] if level else obs["target"]
                agg = grouped.agg(["mean", "count"])
                if not level:
                    agg = pd.DataFrame([agg], index=pd.Index([0], name="_all"))
                frames.append(agg.add_suffix(f"_{j}"))
            self.tables.append(pd.concat(frames, axis=1))
        return self

    def __call__(self, windows: Windows) -> np.ndarray:
        """Predict (N, H) distances; needs :meth:`fit` first."""
        if not self.tables:
            raise RuntimeError("HistoricalMean.fit() must be called before predicting")
        keys = self._keys(windows)
        n_h = len(windows.horizons_s)
        out = np.full((len(windows), n_h), np.nan)
        for level, table in zip(self._LEVELS, self.tables, strict=True):
            if level:
                joined = keys.join(table, on=list(level))
            else:
                joined = pd.DataFrame(
                    np.repeat(table.to_numpy(), len(keys), axis=0), columns=table.columns
                )
            for j in range(n_h):
                mean = joined[f"mean_{j}"].to_numpy(np.float64, na_value=np.nan)
                count = joined[f"count_{j}"].to_numpy(np.float64, na_value=0.0)
                usable = np.isnan(out[:, j]) & (count >= (self.min_count if level else 1))
                out[usable, j] = mean[usable]
        result: np.ndarray = np.nan_to_num(out).astype(np.float32)
        return result


def compute_baselines(
    train: Windows, test: Windows, *, extra: dict[str, Baseline] | None = None
) -> dict[str, np.ndarray]:
    """Fit every baseline on ``train`` and predict ``test``.

    Returns:
        Baseline name → (N_test, H) predicted distance travelled.
    """
    preds = {
        "persistence": predict_persistence(test),
        "constant_speed": predict_constant_speed(test),
        "historical_mean": HistoricalMean().fit(train)(test),
    }
    for name, baseline in (extra or {}).items():
        preds[name] = baseline(test)
    return preds
