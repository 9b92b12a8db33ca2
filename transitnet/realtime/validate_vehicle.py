"""Row-level, feed-only rules of the reference GTFS-realtime validator, vectorised.

Every function takes the decoded positions table (columns of
:data:`transitnet.schema.POSITION_COLUMNS`) and returns one boolean numpy array per rule,
aligned with the table's rows (True = the reference validator reports an occurrence for
that VehiclePosition). Decisions follow MobilityData's gtfs-realtime-validator
(``VehicleValidator``, ``TimestampValidator``, ``TripDescriptorValidator``,
``HeaderValidator``):

- ``W002`` vehicle.id missing or empty; ``E052`` a vehicle.id already used by an earlier
  entity of the snapshot (the first claim is not flagged, later ones are);
- ``E026`` latitude outside [-90, 90] or longitude outside [-180, 180] (a position that is
  absent is not evaluated); ``E027`` bearing outside [0, 360]; ``W004`` speed above
  26 m/s or below 0;
- ``W001`` vehicle timestamp missing or 0; ``E012`` vehicle timestamp greater than the
  header's; ``E001`` outside the POSIX window; ``E050`` (POSIX only) more than 60 s ahead;
- ``W006`` a trip descriptor without trip_id; ``W009`` a trip descriptor without
  schedule_relationship; ``E020`` start_time not ``H:MM:SS``/``HH:MM:SS`` (hours < 30);
  ``E021`` start_date not a ``YYYYMMDD`` date;
- ``E039`` ``is_deleted`` set on an entity of a FULL_DATASET feed.

One deliberate difference: a NaN latitude, longitude, bearing or speed is flagged
(E026/E027/W004); Java's float comparisons let NaN pass silently.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transitnet.realtime.validate_header import (
    IN_FUTURE_TOLERANCE_S,
    MAX_POSIX_TIME,
    MIN_POSIX_TIME,
)

#: W004: speeds above this (m/s, about 60 mph) are unrealistic.
MAX_REALISTIC_SPEED_MPS = 26.0
#: E020: start_time accepted by the reference (``TimestampUtils.isValidTimeFormat``).
START_TIME_PATTERN = r"^[0-2]?[0-9]:[0-5][0-9]:[0-5][0-9]$"
#: E021: a strict ``yyyyMMdd`` as Java's parser accepts it: year 0001+, month 01-12, day 01-31
#: (Java's SMART resolver clamps 31 to the month's last day rather than rejecting it).
START_DATE_PATTERN = (
    r"^([0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})"
    r"(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])$"
)
#: FULL_DATASET in ``FeedHeader.Incrementality``.
FULL_DATASET = 0

Flags = dict[str, np.ndarray]


def column(table: pa.Table, name: str) -> pa.Array:
    """Return one column of ``table`` as a single contiguous Array."""
    chunked = table.column(name)
    return chunked.chunk(0) if chunked.num_chunks == 1 else chunked.combine_chunks()


def to_bool(array: pa.Array, *, null: bool = False) -> np.ndarray:
    """Return a boolean pyarrow array as numpy, with nulls read as ``null``."""
    filled = array if array.null_count == 0 else pc.fill_null(array, null)
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=bool)


def is_present(array: pa.Array) -> np.ndarray:
    """Return True where the (nullable) column holds a value."""
    if array.null_count == 0:
        return np.ones(len(array), dtype=bool)
    if array.null_count == len(array):
        return np.zeros(len(array), dtype=bool)
    return to_bool(array.is_valid())


def compute_vehicle_flags(positions: pa.Table) -> Flags:
    """Flag vehicle-descriptor and position rules.

    Args:
        positions: Needs ``vehicle_id``, ``latitude``, ``longitude``, ``bearing``, ``speed``.

    Returns:
        Boolean arrays for W002, E052, E026, E027, W004.
    """
    vehicle_id = column(positions, "vehicle_id")
    w002 = to_bool(pc.equal(vehicle_id, ""), null=True)
    lat = _floats(column(positions, "latitude"))
    lon = _floats(column(positions, "longitude"))
    has_position = is_present(column(positions, "latitude"))
    with np.errstate(invalid="ignore"):
        bad_lat = ~((lat >= -90.0) & (lat <= 90.0))
        bad_lon = ~((lon >= -180.0) & (lon <= 180.0))
        e026 = has_position & (bad_lat | bad_lon)
        e027 = _outside(column(positions, "bearing"), 0.0, 360.0)
        w004 = _outside(column(positions, "speed"), 0.0, MAX_REALISTIC_SPEED_MPS)
    return {
        "W002": w002,
        "E052": _repeated_after_first(vehicle_id, ~w002),
        "E026": e026,
        "E027": e027,
        "W004": w004,
    }


def compute_timestamp_flags(positions: pa.Table, header_timestamp: int, now_ms: int) -> Flags:
    """Flag vehicle timestamp rules.

    Args:
        positions: Needs ``vehicle_timestamp_raw`` (uint64).
        header_timestamp: The header timestamp as a Java long (0 when unset).
        now_ms: "Now" in epoch milliseconds.

    Returns:
        Boolean arrays for W001, E001, E012, E050.
    """
    raw = column(positions, "vehicle_timestamp_raw")
    ts = np.asarray(pc.fill_null(raw, 0).to_numpy(zero_copy_only=False), dtype=np.uint64)
    ts = ts.view(np.int64)  # Java reads uint64 as a signed long
    set_ = ts != 0
    posix = (ts >= MIN_POSIX_TIME) & (ts <= MAX_POSIX_TIME)
    ahead_ms = np.where(posix, ts, 0) * 1000 - now_ms
    future = posix & (ahead_ms > 0) & (ahead_ms // 1000 > IN_FUTURE_TOLERANCE_S)
    return {
        "W001": ~set_,
        "E001": set_ & ~posix,
        "E012": set_ & (header_timestamp != 0) & (ts > header_timestamp),
        "E050": set_ & future,
    }


def compute_trip_flags(positions: pa.Table, has_trip: np.ndarray) -> Flags:
    """Flag trip-descriptor rules that need no static feed.

    Args:
        positions: Needs ``trip_id``, ``schedule_relationship``, ``start_time``, ``start_date``.
        has_trip: True where the VehiclePosition carries a trip descriptor.

    Returns:
        Boolean arrays for W006, W009, E020, E021.
    """
    return {
        "W006": has_trip & ~is_present(column(positions, "trip_id")),
        "W009": has_trip & ~is_present(column(positions, "schedule_relationship")),
        "E020": ~_matches(column(positions, "start_time"), START_TIME_PATTERN),
        "E021": ~_matches(column(positions, "start_date"), START_DATE_PATTERN),
    }


def compute_deleted_flags(positions: pa.Table, incrementality: int | None) -> Flags:
    """Flag E039: ``is_deleted`` present in a FULL_DATASET (or unset incrementality) feed.

    Args:
        positions: Needs ``is_deleted``.
        incrementality: The header's incrementality (None when unset, read as FULL_DATASET).

    Returns:
        A boolean array for E039.
    """
    full = incrementality is None or incrementality == FULL_DATASET
    return {"E039": is_present(column(positions, "is_deleted")) & full}


def _floats(column: pa.Array) -> np.ndarray:
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


def _outside(column: pa.Array, low: float, high: float) -> np.ndarray:
    values = _floats(column)
    return is_present(column) & ~((values >= low) & (values <= high))


def _repeated_after_first(values: pa.Array, eligible: np.ndarray) -> np.ndarray:
    """True for eligible rows whose value already appeared in an earlier eligible row."""
    rows = np.flatnonzero(eligible)
    out = np.zeros(len(eligible), dtype=bool)
    if rows.size < 2:
        return out
    encoded = pc.dictionary_encode(values)
    if len(encoded.dictionary) >= rows.size + int(rows.size < len(values)):
        return out  # every eligible value is distinct (one dictionary slot may be "")
    row_codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False))[rows]
    _, first = np.unique(row_codes, return_index=True)
    out[rows] = True
    out[rows[first]] = False
    return out


def _matches(strings: pa.Array, pattern: str) -> np.ndarray:
    """True where the string matches ``pattern`` or is null; the regex runs once per value."""
    if strings.null_count == len(strings):
        return np.ones(len(strings), dtype=bool)
    encoded = pc.dictionary_encode(strings)
    per_value = to_bool(pc.match_substring_regex(encoded.dictionary, pattern))
    indices = np.asarray(pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False))
    result: np.ndarray = np.append(per_value, True)[indices]
    return result
