"""Turn a static GTFS feed into a realistic, clearly simulated VehiclePositions stream.

Each trip running in the window (:mod:`transitnet.realtime.sim_plan`) is driven along its
shape (:func:`simulate_trip`):

- **delays** persist and are correlated along the trip: a trip-wide speed factor, an
  AR(1) factor per segment, and an initial departure delay; a vehicle cannot start its
  next trip (same ``block_id``) before it has finished the previous one, so lateness
  propagates along the block;
- between stops the vehicle accelerates and brakes (smoothstep profile), its top speed
  capped at 25 m/s (or 1.6× the scheduled segment speed for fast rail);
- it **dwells** at each stop (scheduled dwell scaled, plus an exponential extra) and
  waits at the first stop before departing;
- fixes carry **GPS noise** (Gaussian, metres), a vehicle timestamp a few seconds behind
  the header, bearing and speed with noise;
- some fixes are **missing** (the vehicle is absent from a snapshot) and some are
  **stale** (the previous fix is repeated unchanged).

Everything is drawn from ``numpy`` generators seeded by ``(seed, trip_id)``, so the
stream is deterministic for a given seed and does not change when other trips are added
or limited away. Output is marked simulated: entity and vehicle ids start with ``sim-``,
``FeedHeader.feed_version`` is ``transitnet-simulated seed=<seed>``, and a log line
says so.
"""

from __future__ import annotations

import logging
import tempfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import gtfs_kit
import numpy as np
import pyarrow as pa
import pyproj
from google.transit import gtfs_realtime_pb2

from transitnet.realtime.encode import encode_feed_message
from transitnet.realtime.replay_sources import Snapshot
from transitnet.realtime.sim_network import build_default_network
from transitnet.realtime.sim_plan import (
    StaticFeedError,
    TripPlan,
    check_feed,
    metric_transformer,
    plan_trips,
)
from transitnet.store.atomic import write_bytes_atomic

logger = logging.getLogger(__name__)

SIM_PREFIX = "sim-"
_STOPPED = gtfs_realtime_pb2.VehiclePosition.STOPPED_AT
_IN_TRANSIT = gtfs_realtime_pb2.VehiclePosition.IN_TRANSIT_TO
_SEGMENT_KNOTS = np.linspace(0.0, 1.0, 9)
_INVERSE = pyproj.enums.TransformDirection.INVERSE


@dataclass(frozen=True)
class SimConfig:
    """Simulation settings.

    Attributes:
        start: First snapshot time (tz-aware); None = now, rounded down to ``step_s``.
        duration_s: Length of the simulated window.
        step_s: Seconds between snapshots (header timestamps).
        seed: Random seed; the same seed and settings give the same bytes.
        max_trips: Keep only the first N trips (by scheduled start).
        max_vehicles: Keep only the first N vehicles (blocks, or trips without blocks).
        gps_noise_m: Standard deviation of the position noise per axis.
        p_missing: Probability that a vehicle is absent from a snapshot.
        p_stale: Probability that a vehicle repeats its previous fix unchanged.
        initial_delay_s: Mean and spread of the first departure delay.
        max_speed_mps: Top speed between stops (raised for fast scheduled segments).
    """

    start: datetime | None = None
    duration_s: float = 3600.0
    step_s: float = 30.0
    seed: int = 0
    max_trips: int | None = None
    max_vehicles: int | None = None
    gps_noise_m: float = 5.0
    p_missing: float = 0.03
    p_stale: float = 0.05
    initial_delay_s: tuple[float, float] = (45.0, 60.0)
    max_speed_mps: float = 25.0

    def resolve_start(self) -> datetime:
        """The start time, tz-aware UTC."""
        if self.start is not None:
            if self.start.tzinfo is None:
                raise ValueError("the simulation start must be tz-aware")
            return self.start.astimezone(UTC)
        now = datetime.now(UTC).timestamp()
        return datetime.fromtimestamp(now - now % self.step_s, UTC)


def read_static(path: Path | None) -> Any:
    """Read a static GTFS feed with gtfs-kit (the built-in network when ``path`` is None).

    Frequency-based trips are expanded into scheduled ones.

    Raises:
        StaticFeedError: when the path does not exist, cannot be read as GTFS, or lacks a
            table the simulator needs (agency, routes, trips, stops, stop_times, calendar).
    """
    if path is None:
        with tempfile.TemporaryDirectory(prefix="transitnet-sim-") as folder:
            logger.info("using the built-in simulated network (build_default_network)")
            return read_static(build_default_network(Path(folder) / "network.zip"))
    if not path.exists():
        raise StaticFeedError(f"static feed not found: {path}")
    try:
        feed = gtfs_kit.read_feed(path, dist_units="m")
    except Exception as exc:  # gtfs-kit raises many kinds for malformed feeds
        raise StaticFeedError(f"{path}: not a readable GTFS feed: {exc}") from exc
    check_feed(feed)
    if getattr(feed, "frequencies", None) is not None and not feed.frequencies.empty:
        feed = gtfs_kit.expand_frequencies(feed)
    return feed


def simulate_snapshots(feed: Any, config: SimConfig) -> list[Snapshot]:
    """Simulate the feed's vehicles and encode one FeedMessage per step.

    Returns:
        Snapshots named ``sim-YYYYMMDDTHHMMSSZ.pb`` in time order (empty ones included).

    Raises:
        StaticFeedError: when no trip runs in the window.
    """
    start = config.resolve_start()
    end = start + timedelta(seconds=config.duration_s)
    plans = _limit(plan_trips(feed, start, end), config)
    steps = np.arange(start.timestamp(), end.timestamp(), config.step_s)
    fixes = simulate_fixes(plans, steps, config, metric_transformer(feed))
    logger.info("SIMULATED feed: %d trips, %d snapshots from %s (seed %d); ids prefixed %r",
                len(plans), len(steps), start.isoformat(), config.seed, SIM_PREFIX)  # fmt: skip
    return _encode_steps(fixes, steps, config.seed)


def _limit(plans: list[TripPlan], config: SimConfig) -> list[TripPlan]:
    if config.max_trips is not None:
        plans = plans[: config.max_trips]
    if config.max_vehicles is not None:
        vehicles = list(dict.fromkeys(vehicle_id(p) for p in plans))[: config.max_vehicles]
        plans = [p for p in plans if vehicle_id(p) in set(vehicles)]
    return plans


def vehicle_id(plan: TripPlan) -> str:
    """The simulated vehicle of a trip: its block, else the trip itself."""
    return f"{SIM_PREFIX}{plan.block_id or plan.trip_id}"


@dataclass(frozen=True)
class TripRun:
    """One realised trip: when the vehicle is where.

    Attributes:
        knot_t: Times (epoch s, non-decreasing) of the distance-time profile.
        knot_d: Distance along the shape (m) at each knot.
        arrive: Actual arrival per stop; ``depart`` actual departure per stop.
        appear: When the vehicle shows up at the first stop; ``vanish`` when it leaves
            the feed after the last stop.
    """

    knot_t: np.ndarray
    knot_d: np.ndarray
    arrive: np.ndarray
    depart: np.ndarray
    appear: float
    vanish: float


def simulate_trip(plan: TripPlan, rng: np.random.Generator, config: SimConfig,
                  free_at: float = -np.inf) -> TripRun:  # fmt: skip
    """Realise one trip: persistent, correlated delays, dwells, speed-capped driving.

    Args:
        plan: The scheduled trip.
        rng: Its random generator.
        config: Delay and speed settings.
        free_at: When the vehicle finished its previous trip (block chaining).
    """
    n = len(plan.stop_ids)
    sched_travel = np.maximum(plan.arrival[1:] - plan.departure[:-1], 1.0)
    seg = np.diff(plan.stop_dist)
    ar = np.zeros(n - 1)
    shocks = rng.normal(0.0, 0.15, n - 1)
    for k in range(n - 1):
        ar[k] = (0.7 * ar[k - 1] if k else 0.0) + np.sqrt(1 - 0.7**2) * shocks[k]
    travel = sched_travel * np.exp(rng.normal(0.0, 0.08) + ar)
    cap = np.maximum(config.max_speed_mps, 1.6 * seg / sched_travel)
    travel = np.maximum(travel, 1.5 * seg / cap)  # smoothstep peak speed = 1.5 × mean
    dwell = np.maximum(plan.departure - plan.arrival, 0.0) * rng.uniform(0.5, 1.5, n)
    dwell += rng.exponential(10.0, n)
    mean, spread = config.initial_delay_s
    delay = float(np.clip(rng.normal(mean, spread), -30.0, 300.0))
    depart0 = max(float(plan.departure[0]) + delay, free_at + 60.0)
    arrive, depart = np.empty(n), np.empty(n)
    arrive[0], depart[0] = depart0 - 60.0, depart0
    for k in range(1, n):
        arrive[k] = depart[k - 1] + travel[k - 1]
        depart[k] = arrive[k] + (dwell[k] if k < n - 1 else 0.0)
    knot_t, knot_d = _profile(arrive, depart, plan.stop_dist)
    return TripRun(knot_t, knot_d, arrive, depart, max(depart0 - 180.0, free_at + 1.0),
                   float(arrive[-1]) + 60.0)  # fmt: skip


def _profile(
    arrive: np.ndarray, depart: np.ndarray, dist: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distance-time knots: dwell at each stop, smoothstep between stops."""
    smooth = 3 * _SEGMENT_KNOTS**2 - 2 * _SEGMENT_KNOTS**3
    times, dists = [], []
    for k in range(len(dist) - 1):
        span = arrive[k + 1] - depart[k]
        times.append(np.concatenate([[arrive[k]], depart[k] + span * _SEGMENT_KNOTS]))
        dists.append(np.concatenate([[dist[k]], dist[k] + (dist[k + 1] - dist[k]) * smooth]))
    times.append(np.array([arrive[-1], depart[-1]]))
    dists.append(np.array([dist[-1], dist[-1]]))
    return np.maximum.accumulate(np.concatenate(times)), np.concatenate(dists)


def trip_rng(seed: int, trip_id: str) -> np.random.Generator:
    """The generator of one trip: independent of the other trips simulated."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(trip_id.encode())]))


def simulate_fixes(plans: list[TripPlan], steps: np.ndarray, config: SimConfig,
                   to_metric: pyproj.Transformer) -> pa.Table:  # fmt: skip
    """Sample every vehicle at every step.

    Returns:
        One row per published fix: positions columns (``entity_id`` ... ``current_status``,
        ``vehicle_timestamp_raw``) plus ``step`` (index into ``steps``).
    """
    free_at: dict[str, float] = {}
    parts: list[dict[str, Any]] = []
    for plan in plans:
        vid = vehicle_id(plan)
        rng = trip_rng(config.seed, plan.trip_id)
        run = simulate_trip(plan, rng, config, free_at.get(vid, -np.inf))
        free_at[vid] = run.vanish
        part = _sample_trip(plan, run, steps, rng, config)
        if part is not None:
            part["vehicle_id"] = vid
            parts.append(part)
    return _assemble(parts, to_metric)


def _sample_trip(plan: TripPlan, run: TripRun, steps: np.ndarray, rng: np.random.Generator,
                 config: SimConfig) -> dict[str, Any] | None:  # fmt: skip
    idx = np.flatnonzero((steps >= run.appear) & (steps <= run.vanish))
    if idx.size == 0:
        return None
    lag = rng.uniform(0.0, min(10.0, config.step_s), idx.size)
    t_fix = np.floor(np.maximum(steps[idx] - lag, run.appear))
    fate = rng.uniform(size=idx.size)
    new = fate >= config.p_missing + config.p_stale
    new[0] = True
    source = np.maximum.accumulate(np.where(new, np.arange(idx.size), 0))
    keep = fate >= config.p_missing
    t_pub = t_fix[source]
    dist = np.interp(t_pub, run.knot_t, run.knot_d)
    speed = (
        np.interp(t_pub + 1, run.knot_t, run.knot_d) - np.interp(t_pub - 1, run.knot_t, run.knot_d)
    ) / 2
    noise = rng.normal(0.0, 1.0, (idx.size, 4))[source]
    at_stop = np.clip(np.searchsorted(run.arrive, t_pub, side="right") - 1, 0, None)
    stopped = (t_pub <= run.depart[at_stop]) | (at_stop == len(plan.stop_ids) - 1)
    next_stop = np.clip(np.where(stopped, at_stop, at_stop + 1), 0, len(plan.stop_ids) - 1)
    return {"plan": plan, "step": idx[keep], "t": t_pub[keep], "dist": dist[keep],
            "speed": np.maximum(speed + 0.3 * noise[:, 2], 0.0)[keep] * ~stopped[keep],
            "noise": noise[keep] * config.gps_noise_m, "bearing_noise": 5.0 * noise[keep, 3],
            "stopped": stopped[keep], "stop": next_stop[keep]}  # fmt: skip


def _assemble(parts: list[dict[str, Any]], to_metric: pyproj.Transformer) -> pa.Table:
    columns: dict[str, list[Any]] = {name: [] for name in _FIX_COLUMNS}
    for part in parts:
        plan: TripPlan = part["plan"]
        n = len(part["step"])
        x, y, dx, dy = _locate(plan, part["dist"])
        noisy_x, noisy_y = x + part["noise"][:, 0], y + part["noise"][:, 1]
        lon, lat = to_metric.transform(noisy_x, noisy_y, direction=_INVERSE)
        bearing = (np.degrees(np.arctan2(dx, dy)) + part["bearing_noise"]) % 360.0
        stop = part["stop"]
        values = {
            "step": part["step"], "vehicle_timestamp_raw": part["t"].astype(np.uint64),
            "latitude": lat, "longitude": lon, "bearing": np.round(bearing, 1),
            "speed": np.round(part["speed"], 2),
            "stop_id": [plan.stop_ids[k] for k in stop],
            "current_stop_sequence": plan.stop_sequence[stop],
            "current_status": np.where(part["stopped"], _STOPPED, _IN_TRANSIT),
        }  # fmt: skip
        for name, value in values.items():
            columns[name].extend(list(value))
        for name, constant in _trip_constants(plan, part["vehicle_id"]).items():
            columns[name].extend([constant] * n)
    return pa.table({name: pa.array(columns[name], _FIX_TYPES.get(name)) for name in _FIX_COLUMNS})


def _trip_constants(plan: TripPlan, vehicle: str) -> dict[str, Any]:
    """Columns that are the same for every fix of one trip."""
    return {"entity_id": vehicle, "vehicle_id": vehicle,
            "vehicle_label": "SIM " + vehicle.removeprefix(SIM_PREFIX),
            "trip_id": plan.trip_id, "route_id": plan.route_id,
            "direction_id": plan.direction_id, "start_time": plan.start_time,
            "start_date": plan.service_date, "schedule_relationship": 0}  # fmt: skip


_FIX_TYPES: dict[str, pa.DataType] = {
    "step": pa.int64(), "vehicle_timestamp_raw": pa.uint64(), "latitude": pa.float64(),
    "longitude": pa.float64(), "bearing": pa.float64(), "speed": pa.float64(),
    "current_stop_sequence": pa.int64(), "current_status": pa.int32(), "direction_id": pa.int32(),
    "schedule_relationship": pa.int32(),
}  # fmt: skip
_FIX_COLUMNS = ("step", "entity_id", "vehicle_id", "vehicle_label", "trip_id", "route_id",
                "direction_id", "start_time", "start_date", "schedule_relationship", "latitude",
                "longitude", "bearing", "speed", "stop_id", "current_stop_sequence",
                "current_status", "vehicle_timestamp_raw")  # fmt: skip


def _locate(plan: TripPlan, dist: np.ndarray) -> tuple[np.ndarray, ...]:
    """Point (x, y) at each distance along the shape, and the unit tangent (dx, dy)."""
    cum, xy = plan.cum, plan.xy
    seg = np.clip(np.searchsorted(cum, dist, side="right") - 1, 0, len(cum) - 2)
    length = np.maximum(cum[seg + 1] - cum[seg], 1e-9)
    frac = np.clip((dist - cum[seg]) / length, 0.0, 1.0)
    delta = xy[seg + 1] - xy[seg]
    point = xy[seg] + delta * frac[:, None]
    return point[:, 0], point[:, 1], delta[:, 0] / length, delta[:, 1] / length


def _encode_steps(fixes: pa.Table, steps: np.ndarray, seed: int) -> list[Snapshot]:
    step_column = fixes.column("step").to_numpy()
    order = np.argsort(step_column, kind="stable")
    fixes = fixes.take(pa.array(order)).drop_columns(["step"])
    bounds = np.searchsorted(step_column[order], np.arange(len(steps) + 1))
    snapshots = []
    for i, header in enumerate(steps):
        rows = fixes.slice(int(bounds[i]), int(bounds[i + 1] - bounds[i]))
        body = encode_feed_message(rows, header_timestamp_raw=int(header), version="2.0",
                                   incrementality=0,
                                   feed_version=f"transitnet-simulated seed={seed}")  # fmt: skip
        name = f"sim-{datetime.fromtimestamp(float(header), UTC):%Y%m%dT%H%M%SZ}.pb"
        snapshots.append(Snapshot(name, int(header), body))
    return snapshots


def write_snapshot_files(snapshots: list[Snapshot], out_dir: Path) -> list[Path]:
    """Write each snapshot as ``out_dir/<name>`` atomically; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for snap in snapshots:
        path = out_dir / snap.name
        write_bytes_atomic(path, snap.read())
        paths.append(path)
    logger.info("wrote %d SIMULATED snapshots to %s", len(paths), out_dir)
    return paths
