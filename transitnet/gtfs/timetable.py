"""Timetables along the shape: where the schedule puts a vehicle, given its current delay.

A :class:`Timetable` holds scheduled stop times by distance along each trip's shape
(:class:`~transitnet.gtfs.service_days.ScheduleIndex`) and the shape those distances are
measured on. It serves the OneBusAway-style forecast "the vehicle keeps its current
delay and follows the timetable" (:func:`compute_schedule_ahead`), used both as a
baseline (:class:`transitnet.baselines.ScheduleDelay`) and as input features of the
forecaster (:mod:`transitnet.datasets.schedule`).

The timetable is public and fixed before the day it describes, so using it for test
windows leaks no outcome: only the delay at the anchor, taken from the vehicle's own
past, reflects the day.

A timetable file is a Parquet of :data:`TIMETABLE_COLUMNS`: the
:attr:`~transitnet.gtfs.artefacts.StaticArtefacts.stop_times` columns, keyed by the trip
id the windows carry (the realtime ``trip_id`` for a timetable recovered from
TripUpdates, :mod:`transitnet.gtfs.realtime_timetable`), plus the ``shape_id`` the stop
distances are measured on (one per trip).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from transitnet.gtfs.artefacts import StaticArtefacts
from transitnet.gtfs.service_days import (
    ScheduleIndex,
    build_schedule_index,
    compute_scheduled_s,
)
from transitnet.store.atomic import atomic_path

logger = logging.getLogger(__name__)

#: Columns of a timetable file: stop_times keyed by the windows' trip id, and its shape.
TIMETABLE_COLUMNS: tuple[str, ...] = (
    "trip_id",
    "stop_sequence",
    "stop_index",
    "stop_id",
    "arrival_s",
    "departure_s",
    "dist_m",
    "shape_id",
)
_NEEDED = ("trip_id", "stop_index", "arrival_s", "departure_s", "dist_m", "shape_id")


def build_timetable(stop_times: pd.DataFrame) -> ScheduleIndex:
    """Index scheduled stop times by distance along each trip, as the matcher does.

    Args:
        stop_times: ``trip_id, stop_index, arrival_s, departure_s, dist_m``
            (:attr:`StaticArtefacts.stop_times`); stops without a distance or a time
            are skipped, so times between timepoints are interpolated by distance.

    Returns:
        The :class:`~transitnet.gtfs.service_days.ScheduleIndex` of every trip.
    """
    st = stop_times.sort_values(["trip_id", "stop_index"], kind="stable")
    return build_schedule_index(
        st["trip_id"].to_numpy(dtype=object),
        *(st[c].to_numpy(dtype=np.float64, na_value=np.nan)
          for c in ("dist_m", "arrival_s", "departure_s")),
    )  # fmt: skip


def compute_timetable_dist(
    index: ScheduleIndex, trip: np.ndarray, time_s: np.ndarray
) -> np.ndarray:
    """Distance along its trip where the timetable puts a vehicle at each scheduled time.

    The inverse of :func:`~transitnet.gtfs.service_days.compute_scheduled_s`: the vehicle
    waits at each stop from its arrival to its departure and runs linearly in between;
    before the first departure it is at the first stop, after the last arrival at the last.

    Args:
        index: The timetable (:func:`build_timetable`).
        trip: (N,) int64 row of each query's trip in ``index`` (-1: none).
        time_s: (N,) scheduled seconds after service-day noon minus 12 h.

    Returns:
        (N,) float64 distances, NaN without a trip or a time.
    """
    out = np.full(len(time_s), np.nan)
    ok = np.flatnonzero((trip >= 0) & np.isfinite(time_s))
    if not len(ok) or not len(index.dist_m):
        return out
    counts = np.diff(index.offsets)
    group = np.repeat(np.arange(len(counts)), 2 * counts)
    times = np.column_stack([index.arrival_s, index.departure_s]).ravel()
    shift = group * 2.0 * (np.nanmax(np.abs(times)) + 1.0)
    times = np.maximum.accumulate(times + shift) - shift  # never back in time within a trip
    span = float(np.nanmax(times) - np.nanmin(times)) + 1.0
    key = times + group * span
    tr = trip[ok]
    first, last = times[2 * index.offsets[tr]], times[2 * index.offsets[tr + 1] - 1]
    query = np.clip(time_s[ok], first, last) + tr * span
    out[ok] = np.interp(query, key, np.repeat(index.dist_m, 2))
    return out


def compute_schedule_ahead(
    index: ScheduleIndex, trip: np.ndarray, dist: np.ndarray, offsets_s: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Distance the timetable moves a vehicle over each offset, keeping its current delay.

    At distance ``d0`` the timetable time is ``s0``; keeping the delay, the vehicle
    ``h`` seconds later is where the timetable puts it at ``s0 + h``. The result is that
    distance minus ``d0``, clipped at 0 (the delay cancels: no day origin is needed).

    Args:
        index: The timetable (:func:`build_timetable`).
        trip: (N,) int64 row of each vehicle's trip in ``index`` (-1: none).
        dist: (N,) distance along the trip's shape now.
        offsets_s: Offsets in seconds.

    Returns:
        ``(N, len(offsets_s))`` float64 metres ahead (NaN rows without a schedule) and
        the ``(N,)`` scheduled time ``s0`` at ``dist`` (s after service-day noon - 12 h).
    """
    s0 = compute_scheduled_s(index, trip, dist)
    out = np.full((len(dist), len(offsets_s)), np.nan)
    for j, h in enumerate(offsets_s):
        ahead = compute_timetable_dist(index, trip, s0 + float(h)) - dist
        out[:, j] = np.clip(ahead, 0.0, None)
    return out, s0


@dataclass(frozen=True)
class Timetable:
    """Scheduled stop times by distance along trips, with each trip's shape.

    Attributes:
        index: The timetable (:func:`build_timetable`).
        trip_shapes: ``trip_id`` → ``shape_id`` the stop distances are measured on.
    """

    index: ScheduleIndex
    trip_shapes: pd.Series

    @classmethod
    def from_stop_times(cls, stop_times: pd.DataFrame) -> Timetable | None:
        """The timetable of :data:`TIMETABLE_COLUMNS` rows, or None with no usable trip.

        Raises:
            ValueError: When ``stop_times`` lacks a needed column.
        """
        missing = sorted(set(_NEEDED) - set(stop_times.columns))
        if missing:
            raise ValueError(f"a timetable needs columns {missing}")
        index = build_timetable(stop_times)
        if not len(index.trip_ids):
            return None
        shapes = stop_times.dropna(subset=["shape_id"]).drop_duplicates("trip_id")
        series = pd.Series(
            shapes["shape_id"].astype(object).to_numpy(),
            index=pd.Index(shapes["trip_id"].astype(object).to_numpy()),
        )
        return cls(index, series)

    @classmethod
    def from_artefacts(cls, art: StaticArtefacts) -> Timetable | None:
        """The timetable of a static feed, or None when it has no usable stop_times."""
        if art.stop_times is None or art.stop_times.empty:
            return None
        return cls.from_stop_times(attach_shapes(art.stop_times, art.trips))

    def find_trips(
        self, trip_ids: np.ndarray, shape_ids: np.ndarray, fallback_ids: np.ndarray | None = None
    ) -> np.ndarray:
        """(N,) row of each vehicle's trip in the timetable (-1: no usable schedule).

        A trip is usable when it has at least two scheduled stops and the vehicle is on
        the shape its stop distances are measured on (distances on another shape would
        not be comparable).

        Args:
            trip_ids: (N,) trip ids looked up first.
            shape_ids: (N,) shape each vehicle is matched on.
            fallback_ids: (N,) trip ids tried where ``trip_ids`` finds no row (e.g. the
                realtime id where the static id is unknown).
        """
        trips = pd.Index(self.index.trip_ids)
        code = trips.get_indexer(np.asarray(trip_ids, dtype=object))
        if fallback_ids is not None:
            other = trips.get_indexer(np.asarray(fallback_ids, dtype=object))
            code = np.where(code >= 0, code, other)
        code[np.diff(self.index.offsets)[np.maximum(code, 0)] < 2] = -1
        found = self.index.trip_ids[np.maximum(code, 0)] if len(trips) else trip_ids
        shape = pd.Series(self.trip_shapes.reindex(found).to_numpy(), dtype="string")
        window_shape = pd.Series(np.asarray(shape_ids, dtype=object), dtype="string")
        same = shape.eq(window_shape).fillna(False).to_numpy(dtype=bool)
        return np.where(same & (code >= 0), code, -1).astype(np.int64)


def attach_shapes(stop_times: pd.DataFrame, trips: pd.DataFrame) -> pd.DataFrame:
    """``stop_times`` with each trip's ``shape_id`` (from ``trips``: ``trip_id, shape_id``)."""
    shapes = trips.drop_duplicates("trip_id").set_index("trip_id")["shape_id"]
    return stop_times.assign(shape_id=stop_times["trip_id"].map(shapes).astype("string"))


def write_timetable(stop_times: pd.DataFrame, path: Path) -> Path:
    """Write :data:`TIMETABLE_COLUMNS` rows to a Parquet file, atomically.

    Args:
        stop_times: :data:`TIMETABLE_COLUMNS` (e.g. recovered stop_times with a
            ``shape_id`` per trip).
        path: Output file.

    Raises:
        ValueError: When a column is missing.
    """
    missing = sorted(set(TIMETABLE_COLUMNS) - set(stop_times.columns))
    if missing:
        raise ValueError(f"a timetable file needs columns {missing}")
    frame = stop_times[list(TIMETABLE_COLUMNS)].reset_index(drop=True)
    with atomic_path(Path(path)) as tmp:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
    return Path(path)


def read_timetable(path: str | Path) -> Timetable | None:
    """Read a timetable file (:func:`write_timetable`); None when it holds no usable trip.

    Raises:
        FileNotFoundError: When the file does not exist.
        ValueError: When it is not a timetable file (a needed column is missing).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"timetable file {path} does not exist")
    frame = pq.read_table(path).to_pandas()
    timetable = Timetable.from_stop_times(frame)
    if timetable is None:
        logger.warning("timetable %s holds no trip with a usable schedule", path)
    else:
        logger.info("timetable %s: %d trips", path, len(timetable.index.trip_ids))
    return timetable
