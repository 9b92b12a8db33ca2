"""Route-classification windows: a few consecutive fixes of one vehicle on one trip.

A window is the last ``K`` fixes (at most) of a *trajectory* up to an anchor fix; its
label is the trajectory's line key (:func:`transitnet.gtfs.lines.compute_line_keys`;
the route id itself never enters the features). A trajectory is one vehicle on one
trip on one service date, split where two fixes are more than ``max_gap_s`` apart.

Per-fix features (:data:`CLASS_FEATURES`):

- ``x_km``, ``y_km``: position relative to one fixed, city-wide origin (the median
  training fix, kept with the model), on an equirectangular projection at the origin's
  latitude (under 0.5 % scale error within 50 km). A fixed origin is what makes lines
  separable: a window-relative origin would throw away *where* the bus is;
- ``dx_m``, ``dy_m``: displacement since the vehicle's previous fix (0 at a
  trajectory's first fix);
- ``heading_sin``, ``heading_cos``: of that displacement (compass convention, sin is
  east) when it is at least ``min_move_m``; else of the reported ``bearing`` when valid;
  else 0 with ``has_heading`` 0;
- ``speed_mps``: displacement over time, capped at ``max_speed_mps``;
- ``dt_s``: seconds since the previous fix; ``tod_sin``, ``tod_cos``: local time of day.

Input columns (as :func:`transitnet.store.parquet.read_positions` returns them):
``feed_id, vehicle_id, trip_id, route_id, latitude, longitude, vehicle_timestamp``
(required); ``vehicle_label, entity_id, direction_id, start_date, bearing`` (optional).
Bad fixes are never silently lost: every dropped row is counted by reason in
:attr:`ClassWindows.dropped` and logged; fixes with no route (unassigned vehicles) are
kept, with a null label, so they can be classified.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from transitnet.datasets.windows import compute_service_date
from transitnet.gtfs.lines import compute_line_keys

logger = logging.getLogger(__name__)

CLASS_FEATURES: tuple[str, ...] = (
    "x_km",
    "y_km",
    "dx_m",
    "dy_m",
    "heading_sin",
    "heading_cos",
    "has_heading",
    "speed_mps",
    "dt_s",
    "tod_sin",
    "tod_cos",
)
#: Columns a window cannot be cut without.
REQUIRED_INPUTS: tuple[str, ...] = ("feed_id", "vehicle_id", "trip_id", "route_id")
REQUIRED_INPUTS += ("latitude", "longitude", "vehicle_timestamp")
#: Columns used when present (vehicle-id fallbacks, direction, service date, bearing).
OPTIONAL_INPUTS = ("vehicle_label", "entity_id", "direction_id", "start_date", "bearing")
#: Columns read from the positions store.
POSITION_INPUTS: tuple[str, ...] = REQUIRED_INPUTS + OPTIONAL_INPUTS
EARTH_RADIUS_M = 6_371_008.8
META_COLUMNS = (
    "feed_id",
    "vehicle_key",
    "trip_id",
    "route_id",
    "line_key",
    "trajectory",
    "service_date",
    "start_time",
    "anchor_time",
    "n_fixes",
)


@dataclass(frozen=True)
class ClassWindowConfig:
    """How classification windows are cut.

    Attributes:
        window_fixes: K, the most fixes in a window (the anchor included).
        min_fixes: Fewest fixes in a window; a trajectory's first windows grow to K.
        stride: Fixes between consecutive anchors of a trajectory.
        max_gap_s: A longer gap between two fixes starts a new trajectory.
        min_move_m: A smaller displacement has no heading of its own.
        max_speed_mps: Speeds above this (GPS jumps) are capped and counted.
        line_key_mode: ``route`` or ``route_direction`` (see ``transitnet.gtfs.lines``).
        timezone: Agency timezone, for service dates and the time of day.
    """

    window_fixes: int = 8
    min_fixes: int = 4
    stride: int = 4
    max_gap_s: float = 600.0
    min_move_m: float = 1.0
    max_speed_mps: float = 40.0
    line_key_mode: str = "route"
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if not 1 <= self.min_fixes <= self.window_fixes or self.stride < 1:
            raise ValueError(
                f"need 1 ≤ min_fixes ≤ window_fixes and stride ≥ 1, got min_fixes="
                f"{self.min_fixes}, window_fixes={self.window_fixes}, stride={self.stride}"
            )
        if self.line_key_mode not in ("route", "route_direction"):
            raise ValueError(
                f"line_key_mode must be route or route_direction, not {self.line_key_mode!r}"
            )


@dataclass
class ClassWindows:
    """Windows as aligned arrays (N windows, K fixes, F features).

    Attributes:
        features: ``(N, K, F)`` float32, left-aligned (oldest fix first); padding is 0.
        lengths: ``(N,)`` int64 valid fixes per window, in ``[min_fixes, K]``.
        meta: One row per window: :data:`META_COLUMNS` (``line_key`` null when the
            vehicle had no route; times tz-aware UTC).
        dropped: Fixes left out, by reason (``bad_position``, ``no_timestamp``,
            ``no_vehicle``, ``repeated_fix``, ``not_in_window``: trajectories shorter than
            ``min_fixes``, or gaps when ``stride > K``) and counts of fixes kept but worth
            knowing (``unlabelled``, ``speed_capped``).
    """

    features: np.ndarray
    lengths: np.ndarray
    meta: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def subset(self, index: Any) -> ClassWindows:
        """The windows at ``index`` (bool mask or integer positions)."""
        idx = np.asarray(index)
        rows = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64)
        meta = self.meta.iloc[rows].reset_index(drop=True)
        return ClassWindows(self.features[rows], self.lengths[rows], meta, dict(self.dropped))

    @property
    def labels(self) -> np.ndarray:
        """Line key per window as an object array (None when unlabelled)."""
        keys = self.meta["line_key"].astype(object)
        return np.asarray(keys.where(keys.notna(), None), dtype=object)


def compute_origin(positions: pd.DataFrame) -> tuple[float, float]:
    """Median ``(latitude, longitude)`` of the valid fixes (columns ``latitude, longitude``).

    Raises:
        ValueError: When no fix has a valid position.
    """
    lat, lon = _coords(positions)
    ok = _valid_position(lat, lon)
    if not ok.any():
        raise ValueError("no valid positions to place the origin on")
    return float(np.median(lat[ok])), float(np.median(lon[ok]))


def project_local(
    lat: np.ndarray, lon: np.ndarray, origin: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Equirectangular ``(x east, y north)`` metres of positions relative to ``origin``."""
    lat0, lon0 = origin
    x = EARTH_RADIUS_M * np.cos(np.radians(lat0)) * np.radians(lon - lon0)
    y = EARTH_RADIUS_M * np.radians(lat - lat0)
    return x, y


def clean_fixes(positions: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop fixes that cannot be placed in a trajectory, counting each reason.

    Args:
        positions: Position rows (columns in the module docstring).

    Returns:
        The kept rows (same columns plus ``vehicle_key``) and the counts dropped by reason.

    Raises:
        ValueError: When a required column is missing.
    """
    missing = [c for c in REQUIRED_INPUTS if c not in positions.columns]
    if missing:
        raise ValueError(f"positions lack columns {missing}; read them with read_positions")
    lat, lon = _coords(positions)
    vehicle = positions["vehicle_id"].astype("string")
    for fallback in ("vehicle_label", "entity_id"):
        if fallback in positions.columns:
            vehicle = vehicle.fillna(positions[fallback].astype("string"))
    checks = {
        "no_timestamp": positions["vehicle_timestamp"].isna().to_numpy(),
        "bad_position": ~_valid_position(lat, lon),
        "no_vehicle": vehicle.isna().to_numpy(),
    }
    bad = np.zeros(len(positions), dtype=bool)
    dropped: dict[str, int] = {}
    for reason, hit in checks.items():
        dropped[reason] = int((hit & ~bad).sum())
        bad |= hit
    kept = positions.loc[~bad].copy()
    kept["vehicle_key"] = vehicle[~bad].to_numpy()
    return kept, dropped


def prepare_class_trajectories(
    positions: pd.DataFrame, config: ClassWindowConfig
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Clean, label and order fixes into trajectories.

    Args:
        positions: Position rows (columns in the module docstring).
        config: Window settings.

    Returns:
        Rows sorted by trajectory and time, with ``vehicle_key``, ``line_key``,
        ``service_date``, ``t_s`` (seconds since the epoch) and ``trajectory`` (int) added,
        and the counts of dropped or notable fixes.
    """
    df, dropped = clean_fixes(positions)
    direction = df["direction_id"] if "direction_id" in df.columns else None
    df["line_key"] = compute_line_keys(df["route_id"], direction, mode=config.line_key_mode)
    df["line_key"] = df["line_key"].astype(object).where(df["line_key"].notna(), None)
    dropped["unlabelled"] = int(df["line_key"].isna().sum())
    start = df["start_date"] if "start_date" in df.columns else None
    df["service_date"] = compute_service_date(df["vehicle_timestamp"], config.timezone, start)
    epoch = pd.Timestamp("1970-01-01", tz="UTC")
    df["t_s"] = (df["vehicle_timestamp"] - epoch) / pd.Timedelta("1s")
    parts = [df["feed_id"], df["vehicle_key"], df["trip_id"], df["line_key"], df["service_date"]]
    key = parts[0].astype(str)
    for part in parts[1:]:
        key = key + "|" + part.astype("string").fillna("?").astype(str)
    df["_key"] = key
    df = df.sort_values(["_key", "t_s"], kind="stable")
    before = len(df)
    df = df.drop_duplicates(["_key", "t_s"], keep="first")
    dropped["repeated_fix"] = before - len(df)
    new_key = df["_key"].ne(df["_key"].shift())
    df["trajectory"] = (new_key | df["t_s"].diff().gt(config.max_gap_s)).cumsum() - 1
    return df.drop(columns="_key").reset_index(drop=True), dropped


def compute_fix_features(
    df: pd.DataFrame, origin: tuple[float, float], config: ClassWindowConfig
) -> tuple[np.ndarray, int]:
    """Per-fix features ``(n, len(CLASS_FEATURES))`` of trajectory-ordered fixes.

    Args:
        df: Output of :func:`prepare_class_trajectories` (``latitude, longitude, t_s,
            trajectory, vehicle_timestamp``, optional ``bearing``).
        origin: City-wide ``(lat, lon)`` origin.
        config: Window settings.

    Returns:
        The features (float32) and how many speeds were capped.
    """
    lat, lon = _coords(df)
    x, y = project_local(lat, lon, origin)
    first = df["trajectory"].ne(df["trajectory"].shift()).to_numpy()
    dx, dy = np.diff(x, prepend=x[:1]), np.diff(y, prepend=y[:1])
    dt = np.diff(df["t_s"].to_numpy(np.float64), prepend=0.0)
    dx[first], dy[first], dt[first] = 0.0, 0.0, 0.0
    dist = np.hypot(dx, dy)
    bearing = (
        df["bearing"].to_numpy(np.float64, na_value=np.nan)
        if "bearing" in df.columns
        else np.full(len(df), np.nan)
    )
    hsin, hcos, has_heading = _headings(dx, dy, bearing, config.min_move_m)
    speed = np.where(dt > 0, dist / np.maximum(dt, 1e-9), 0.0)
    capped = int((speed > config.max_speed_mps).sum())
    local = df["vehicle_timestamp"].dt.tz_convert(config.timezone)
    tod = (local.dt.hour * 3600 + local.dt.minute * 60 + local.dt.second).to_numpy(np.float64)
    cols = {
        "x_km": x / 1000.0,
        "y_km": y / 1000.0,
        "dx_m": dx,
        "dy_m": dy,
        "heading_sin": hsin,
        "heading_cos": hcos,
        "has_heading": has_heading,
        "speed_mps": np.minimum(speed, config.max_speed_mps),
        "dt_s": np.clip(dt, 0.0, config.max_gap_s),
        "tod_sin": np.sin(2 * np.pi * tod / 86400),
        "tod_cos": np.cos(2 * np.pi * tod / 86400),
    }
    return np.stack([cols[c] for c in CLASS_FEATURES], axis=1).astype(np.float32), capped


def _headings(
    dx: np.ndarray, dy: np.ndarray, bearing: np.ndarray, min_move_m: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sin, cos (compass) and presence of each fix's heading: moved, else reported bearing."""
    dist = np.hypot(dx, dy)
    moved = dist >= min_move_m
    reported = np.isfinite(bearing) & (bearing >= 0) & (bearing <= 360) & ~moved
    rad = np.radians(np.where(reported, bearing, 0.0))
    safe = np.maximum(dist, 1e-9)
    hsin = np.where(moved, dx / safe, np.where(reported, np.sin(rad), 0.0))
    hcos = np.where(moved, dy / safe, np.where(reported, np.cos(rad), 0.0))
    return hsin, hcos, (moved | reported).astype(np.float64)


def compute_anchors(traj: np.ndarray, config: ClassWindowConfig) -> tuple[np.ndarray, np.ndarray]:
    """Anchor rows and window lengths for trajectory-sorted fixes.

    A fix at position ``p`` (0-based) of its trajectory anchors a window when
    ``p ≥ min_fixes - 1`` and ``(p - min_fixes + 1) % stride == 0``, or when it is the
    last fix of a trajectory of at least ``min_fixes`` fixes; the window holds
    ``min(p + 1, K)`` fixes.
    """
    idx = np.arange(len(traj))
    new = np.ones(len(traj), dtype=bool)
    new[1:] = traj[1:] != traj[:-1]
    last = np.roll(new, -1)
    starts = np.maximum.accumulate(np.where(new, idx, 0))
    pos = idx - starts
    lag = pos - (config.min_fixes - 1)
    anchors = idx[(lag >= 0) & ((lag % config.stride == 0) | last)]
    return anchors, np.minimum(pos[anchors] + 1, config.window_fixes).astype(np.int64)


def build_class_windows(
    positions: pd.DataFrame, config: ClassWindowConfig, origin: tuple[float, float]
) -> ClassWindows:
    """Cut positions into labelled classification windows.

    Args:
        positions: Position rows (columns in the module docstring).
        config: Window settings.
        origin: City-wide ``(lat, lon)`` origin (:func:`compute_origin` on training data).

    Returns:
        The windows in trajectory/time order, with the drop counts.
    """
    df, dropped = prepare_class_trajectories(positions, config)
    feats, dropped["speed_capped"] = compute_fix_features(df, origin, config)
    anchors, lengths = compute_anchors(df["trajectory"].to_numpy(np.int64), config)
    steps = np.arange(config.window_fixes)[None, :]
    valid = steps < lengths[:, None]
    rows = np.where(valid, anchors[:, None] - lengths[:, None] + 1 + steps, anchors[:, None])
    in_window = np.zeros(len(df), dtype=bool)
    in_window[rows[valid]] = True
    dropped["not_in_window"] = int((~in_window).sum())
    features = feats[rows]
    features[~valid] = 0.0
    meta = _window_meta(df, rows[:, 0], anchors, lengths)
    logger.info(
        "class windows: %d from %d fixes (%s)",
        len(anchors),
        len(positions),
        ", ".join(f"{k}={v}" for k, v in dropped.items() if v),
    )
    return ClassWindows(features, lengths, meta, dropped)


def _window_meta(
    df: pd.DataFrame, first_rows: np.ndarray, anchors: np.ndarray, lengths: np.ndarray
) -> pd.DataFrame:
    """:data:`META_COLUMNS` of windows from their first and anchor fixes in ``df``."""
    first = df.iloc[first_rows]
    last = df.iloc[anchors]
    meta = pd.DataFrame(
        {
            **{c: last[c].to_numpy() for c in ("feed_id", "vehicle_key", "trip_id", "route_id")},
            "line_key": last["line_key"].to_numpy(),
            "trajectory": last["trajectory"].to_numpy(np.int64),
            "service_date": last["service_date"].to_numpy(),
            "start_time": first["vehicle_timestamp"].to_numpy(),
            "anchor_time": last["vehicle_timestamp"].to_numpy(),
            "n_fixes": lengths,
        }
    )
    for col in ("start_time", "anchor_time"):
        meta[col] = pd.to_datetime(meta[col], utc=True)
    return meta


def is_member(labels: np.ndarray, names: list[str] | tuple[str, ...]) -> np.ndarray:
    """Bool mask of ``labels`` (object array, None allowed) that are in ``names``."""
    wanted = set(names)
    return np.fromiter((k in wanted for k in labels), dtype=bool, count=len(labels))


def _coords(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    lat = pd.to_numeric(df["latitude"], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    lon = pd.to_numeric(df["longitude"], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    return lat, lon


def _valid_position(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Finite, in range, and not the (0, 0) a missing protobuf position decodes to."""
    finite = np.isfinite(lat) & np.isfinite(lon)
    in_range = (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
    valid: np.ndarray = finite & in_range & ~((lat == 0) & (lon == 0))
    return valid
