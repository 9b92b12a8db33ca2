"""Baselines every learned forecast is measured against, on the same windows.

Each baseline predicts the along-route distance travelled from the anchor at every
horizon, as an (N, H) float array aligned with :class:`~transitnet.datasets.windows.Windows`.

- ``persistence``: the vehicle stays where it is.
- ``constant_speed``: it keeps its recent along-route speed (over the past window).
- ``historical_mean``: the mean distance travelled at each horizon by vehicles of the
  same line, in the same hour of the day, starting from the same segment of the shape,
  learned on the training windows, backing off to coarser groups when a group is sparse.
- ``schedule_delay`` (OneBusAway style): the vehicle keeps its current delay and follows
  the timetable; needs scheduled times along the shape (``stop_times.txt``). Windows
  whose trip has no usable schedule get NaN rows: the evaluation scores this baseline on
  the windows where it exists and reports that share, never filling in another baseline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from transitnet.datasets.windows import CONTEXT_FEATURES, Windows
from transitnet.gtfs.artefacts import StaticArtefacts
from transitnet.gtfs.service_days import ScheduleIndex
from transitnet.gtfs.timetable import (
    Timetable,
    build_timetable,
    compute_schedule_ahead,
    compute_timetable_dist,
)

__all__ = [
    "Baseline",
    "HistoricalMean",
    "ScheduleDelay",
    "build_timetable",
    "compute_baselines",
    "compute_timetable_dist",
    "predict_constant_speed",
    "predict_persistence",
]

logger = logging.getLogger(__name__)

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


@dataclass
class ScheduleDelay:
    """OneBusAway-style forecast: the vehicle keeps its current delay on the timetable.

    At the anchor the scheduled time ``s0`` at the anchor's distance gives the delay
    ``anchor time - s0``; keeping it, the vehicle at ``anchor time + h`` is where the
    timetable puts it at ``s0 + h``. The forecast is that distance minus the anchor's,
    clipped at 0 (the delay cancels, so no service-day origin or time zone is needed).

    A window gets NaN when its trip is not in the timetable (``static_trip_id`` when the
    windows carry it, else ``trip_id``), has fewer than two scheduled stops, or is matched
    on another shape than the trip's (stop distances would not be comparable).

    Attributes:
        index: The timetable (:func:`build_timetable`).
        trip_shapes: Static ``trip_id`` → ``shape_id`` of the stop distances.
    """

    index: ScheduleIndex
    trip_shapes: pd.Series

    @classmethod
    def from_artefacts(cls, art: StaticArtefacts) -> ScheduleDelay | None:
        """The baseline of a static feed, or None when it has no usable stop_times."""
        timetable = Timetable.from_artefacts(art)
        return None if timetable is None else cls.from_timetable(timetable)

    @classmethod
    def from_timetable(cls, timetable: Timetable) -> ScheduleDelay:
        """The baseline of a :class:`~transitnet.gtfs.timetable.Timetable`."""
        return cls(timetable.index, timetable.trip_shapes)

    def find_trips(self, windows: Windows) -> np.ndarray:
        """(N,) row of each window's trip in the timetable (-1: no usable schedule).

        Uses ``meta`` columns ``static_trip_id`` (falling back to ``trip_id``) or
        ``trip_id``, and ``shape_id``.
        """
        meta = windows.meta
        trips = meta["trip_id"].astype(object).to_numpy()
        shapes = meta["shape_id"].astype(object).to_numpy()
        timetable = Timetable(self.index, self.trip_shapes)
        if "static_trip_id" in meta.columns:
            return timetable.find_trips(meta["static_trip_id"].astype(object).to_numpy(),
                                        shapes, trips)  # fmt: skip
        return timetable.find_trips(trips, shapes)

    def __call__(self, windows: Windows) -> np.ndarray:
        """(N, H) float32 distance travelled; NaN rows where no schedule applies."""
        code = self.find_trips(windows)
        d0 = windows.meta["dist_along_m"].to_numpy(np.float64, na_value=np.nan)
        out, _ = compute_schedule_ahead(self.index, code, d0, tuple(windows.horizons_s))
        covered = float(np.isfinite(out[:, 0]).mean()) if len(out) else 0.0
        logger.info("schedule_delay: a schedule for %.1f%% of %d windows", 100 * covered, len(out))
        result: np.ndarray = out.astype(np.float32)
        return result


def compute_baselines(
    train: Windows,
    test: Windows,
    *,
    artefacts: StaticArtefacts | None = None,
    timetable: Timetable | None = None,
    extra: dict[str, Baseline] | None = None,
) -> dict[str, np.ndarray]:
    """Fit every baseline on ``train`` and predict ``test``.

    Args:
        train: Training windows (``meta``: ``line_key, local_hour, dist_along_m``).
        test: Windows to predict (also ``trip_id``/``static_trip_id``, ``shape_id``).
        artefacts: The static feed; with stop_times it adds ``schedule_delay`` (NaN rows
            where a window's trip has no schedule). Left out (logged) when None or when
            no window's trip has a schedule.
        timetable: A timetable for ``schedule_delay`` instead of the static feed's
            stop_times (e.g. the day's, recovered from TripUpdates).
        extra: More baselines by name, each called on ``test``.

    Returns:
        Baseline name → (N_test, H) predicted distance travelled.
    """
    preds = {
        "persistence": predict_persistence(test),
        "constant_speed": predict_constant_speed(test),
        "historical_mean": HistoricalMean().fit(train)(test),
    }
    schedule = None
    if timetable is not None:
        schedule = ScheduleDelay.from_timetable(timetable)
    elif artefacts is not None:
        schedule = ScheduleDelay.from_artefacts(artefacts)
    scheduled = schedule(test) if schedule is not None else None
    if scheduled is not None and np.isfinite(scheduled).any():
        preds["schedule_delay"] = scheduled
    elif artefacts is not None or timetable is not None:
        source = "the timetable" if timetable is not None else f"static {artefacts.version}"  # type: ignore[union-attr]
        logger.info("schedule_delay left out: no schedule for any of the %d windows' trips "
                    "in %s", len(test), source)  # fmt: skip
    for name, baseline in (extra or {}).items():
        preds[name] = baseline(test)
    return preds
