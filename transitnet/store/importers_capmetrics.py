"""The units of CapMetrics' undocumented ``speed`` column, measured from the data.

Finding (all 22 non-empty days of ``austin-capmetro/vehicle_positions``): the 2016 and
2017 files hold **m/s converted from whole mph** (every value is a multiple of
0.44704 m/s; 255 mph = 113.9952 m/s is a "no GPS" sentinel that comes with (0, 0)
coordinates), while the 2015 files hold **mph** (values like 10.25; only ~13 % are
multiples of 0.44704). Measured as the mean straight-line speed between consecutive
fixes of a vehicle (≤ 300 s apart) divided by the mean of the two reported speeds:
0.40-0.45 on the 2015 days (≈ 0.447, the mph → m/s factor, straight lines slightly
shortening the path) and 0.83-0.94 on the 2016-2017 days (m/s; lower for the 240 s
cadence of 2016-11, where corners cut more of the path).

:func:`measure_speed_unit` repeats this measurement on every imported file and decides
per file; an undecidable file keeps its values unconverted and says so in a warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

logger = logging.getLogger(__name__)

MPH_IN_MPS = 0.44704
#: Ratio ranges (mean displacement speed / mean reported speed) per unit.
MPS_RATIO = (0.7, 1.3)
MPH_RATIO = (0.3, 0.6)
#: Fewer consecutive pairs than this and the ratio is not trusted.
MIN_PAIRS = 50
_EARTH_RADIUS_M = 6_371_000.0


@dataclass(frozen=True)
class SpeedUnit:
    """The measured unit of one file's speeds.

    Attributes:
        unit: ``m/s``, ``mph`` or ``unknown``.
        ratio: Mean displacement speed over mean reported speed (NaN if not measured).
        pairs: Consecutive fix pairs used.
        whole_mph_share: Share of speeds that are whole mph expressed in m/s.
    """

    unit: str
    ratio: float
    pairs: int
    whole_mph_share: float

    def describe(self) -> str:
        """One line for logs and import notes."""
        return (f"speed unit {self.unit} (displacement/reported ratio {self.ratio:.3f} over "
                f"{self.pairs} pairs; {self.whole_mph_share:.1%} whole-mph values)")  # fmt: skip


def measure_speed_unit(
    vehicle_key: pa.Array, time_s: np.ndarray, lat: np.ndarray, lon: np.ndarray, speed: np.ndarray
) -> SpeedUnit:
    """Measure the unit of ``speed`` from the distance and time between consecutive fixes.

    Args:
        vehicle_key: Vehicle id per row.
        time_s: Fix time in POSIX seconds per row (float, NaN when unknown).
        lat: Latitude per row (degrees, NaN when unknown).
        lon: Longitude per row.
        speed: Reported speed per row, unit unknown.

    Returns:
        The decision and the evidence behind it.
    """
    speed = np.asarray(speed, dtype=float)
    valid_speed = speed[np.isfinite(speed)]
    whole = np.abs(valid_speed / MPH_IN_MPS - np.round(valid_speed / MPH_IN_MPS)) < 1e-3
    whole_share = float(whole.mean()) if valid_speed.size else float("nan")
    ratio, pairs = _displacement_ratio(vehicle_key, time_s, lat, lon, speed)
    if pairs >= MIN_PAIRS and MPS_RATIO[0] <= ratio <= MPS_RATIO[1]:
        unit = "m/s"
    elif pairs >= MIN_PAIRS and MPH_RATIO[0] <= ratio <= MPH_RATIO[1]:
        unit = "mph"
    elif valid_speed.size and whole_share == 1.0 and np.any(valid_speed > 0):
        unit = "m/s"  # too few pairs, but every value is whole mph converted to m/s
    else:
        unit = "unknown"
    return SpeedUnit(unit, ratio, pairs, whole_share)


def _displacement_ratio(
    vehicle_key: pa.Array, time_s: np.ndarray, lat: np.ndarray, lon: np.ndarray, speed: np.ndarray
) -> tuple[float, int]:
    codes = np.asarray(pc.dictionary_encode(vehicle_key).indices.to_numpy(zero_copy_only=False))
    codes = np.where(pc.is_null(vehicle_key).to_numpy(zero_copy_only=False), -1, codes)
    order = np.lexsort((time_s, codes))
    c, t, la, lo, v = (a[order] for a in (codes, time_s, lat, lon, speed))
    same = (c[1:] == c[:-1]) & (c[1:] >= 0)
    dt = t[1:] - t[:-1]
    dist = _haversine_m(la[:-1], lo[:-1], la[1:], lo[1:])
    with np.errstate(invalid="ignore", divide="ignore"):
        moving = dist / dt
        reported = (v[1:] + v[:-1]) / 2
        nonzero = (la[1:] != 0) & (la[:-1] != 0)
        ok = same & (dt > 0) & (dt <= 300) & nonzero & (v[1:] < 100) & (v[:-1] < 100)
        ok &= np.isfinite(moving) & (moving < 40) & np.isfinite(reported)
    if not ok.any() or reported[ok].mean() <= 0:
        return float("nan"), int(ok.sum())
    return float(moving[ok].mean() / reported[ok].mean()), int(ok.sum())


def _haversine_m(
    lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray
) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dlat, dlon = p2 - p1, np.radians(lon2 - lon1)
    a = np.sin(dlat / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    result: np.ndarray = 2 * _EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return result


def convert_speed(arrays: dict[str, pa.Array], notes: list[str], source: str | None) -> pa.Array:
    """Return ``speed`` in m/s for a CapMetrics table, measuring its unit first.

    Args:
        arrays: Converted columns; needs ``vehicle_id``, ``vehicle_timestamp_raw``,
            ``latitude``, ``longitude``, ``speed``.
        notes: Findings are appended here (and logged).
        source: File name for the log line.
    """
    speed = np.asarray(pc.fill_null(pc.cast(arrays["speed"], pa.float64()), np.nan)
                       .to_numpy(zero_copy_only=False), dtype=float)  # fmt: skip
    found = measure_speed_unit(
        arrays["vehicle_id"],
        _floats(pc.cast(arrays["vehicle_timestamp_raw"], pa.float64())),
        _floats(arrays["latitude"]),
        _floats(arrays["longitude"]),
        speed,
    )
    message = f"{source}: {found.describe()}"
    if found.unit == "mph":
        notes.append(message + ": converted to m/s")
        logger.info("%s: converted to m/s", message)
        return pc.multiply(pc.cast(arrays["speed"], pa.float64()), MPH_IN_MPS)
    if found.unit == "unknown" and len(speed):
        notes.append(message + ": stored unconverted")
        logger.warning("%s: stored unconverted", message)
    else:
        notes.append(message)
        logger.info(message)
    return pc.cast(arrays["speed"], pa.float64())


def _floats(values: pa.Array) -> np.ndarray:
    filled = pc.fill_null(pc.cast(values, pa.float64()), np.nan)
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=float)
