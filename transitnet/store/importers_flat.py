"""Read flattened (already decoded) position tables into positions columns.

Layouts are recognised by their column names (:func:`detect_layout`):

- ``capmetrics``: Austin CapMetrics CSV, ``vehicle_id, timestamp, speed, route_id,
  trip_id, latitude, longitude[, trip_headsign]`` with ISO timestamps carrying a local
  UTC offset. ``trip_headsign`` is kept as an extra column (static matching of the 2016
  days needs route + headsign). Speed units are measured per file
  (:func:`measure_speed_unit`).
- ``gtfs_rt_flat``: flattened GTFS-realtime, columns are dotted field paths as
  ``pandas.json_normalize`` writes them (``vehicle.trip.trip_id``,
  ``vehicle.position.latitude``; a leading ``entity.`` and camelCase as ``MessageToDict``
  writes them are accepted too), plus ``feed_timestamp``/``header.timestamp`` for the
  FeedHeader timestamp. Enum names (``IN_TRANSIT_TO``) become their numbers.
- ``positions``: columns already named like the store's (an export of a store).
- a ``columns`` mapping ``{source column: positions column}`` for any other layout.

Timestamps: numbers are taken as the raw GTFS-rt value; values in the millisecond or
microsecond range are detected, scaled for ``vehicle_timestamp`` (the raw value is kept
in ``vehicle_timestamp_raw``) and flagged E001, never silently reinterpreted. Strings
must be ISO 8601 with a UTC offset or ``Z``: a local time without offset is an error
(the time zone is never guessed). Columns that map to nothing are reported, not dropped
silently.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from google.transit import gtfs_realtime_pb2

from transitnet.realtime.decode import timestamps_from_raw
from transitnet.schema import POSITION_FIELDS
from transitnet.store.importers_capmetrics import convert_speed

logger = logging.getLogger(__name__)

TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
CAPMETRICS_COLUMNS = frozenset(
    {"vehicle_id", "timestamp", "speed", "route_id", "trip_id", "latitude", "longitude"}
)
#: Extra (non-GTFS-rt) columns an importer keeps beside the positions columns.
EXTRA_FIELDS: dict[str, pa.DataType] = {"trip_headsign": pa.string()}

_TYPES: dict[str, pa.DataType] = {f.name: f.type for f in POSITION_FIELDS} | EXTRA_FIELDS
_ENUMS: dict[str, Any] = {
    "current_status": gtfs_realtime_pb2.VehiclePosition.VehicleStopStatus,
    "congestion_level": gtfs_realtime_pb2.VehiclePosition.CongestionLevel,
    "occupancy_status": gtfs_realtime_pb2.VehiclePosition.OccupancyStatus,
    "schedule_relationship": gtfs_realtime_pb2.TripDescriptor.ScheduleRelationship,
    "header_incrementality": gtfs_realtime_pb2.FeedHeader.Incrementality,
}
#: Dotted GTFS-rt field path (snake_case, without ``entity.``) → positions column.
FLAT_FIELDS: dict[str, str] = {
    "id": "entity_id",
    "is_deleted": "is_deleted",
    **{f"vehicle.trip.{c}": c for c in ("trip_id", "route_id", "direction_id", "start_time",
                                         "start_date", "schedule_relationship")},
    "vehicle.vehicle.id": "vehicle_id",
    "vehicle.vehicle.label": "vehicle_label",
    **{f"vehicle.position.{c}": c for c in ("latitude", "longitude", "bearing", "speed",
                                             "odometer")},
    **{f"vehicle.{c}": c for c in ("current_stop_sequence", "stop_id", "current_status",
                                    "congestion_level", "occupancy_status")},
    "vehicle.timestamp": "vehicle_timestamp_raw",
    "feed_timestamp": "header_timestamp_raw",
    "header.timestamp": "header_timestamp_raw",
    "header.gtfs_realtime_version": "header_version",
    "header.incrementality": "header_incrementality",
}  # fmt: skip
#: Time columns a mapping may target with values to parse (numbers or ISO strings).
_TIME_TARGETS = {"vehicle_timestamp": "vehicle_timestamp_raw",
                 "header_timestamp": "header_timestamp_raw"}  # fmt: skip


class LayoutError(ValueError):
    """A table whose layout is not recognised or whose values do not convert."""


@dataclass
class FlatTable:
    """A flattened file converted to positions columns.

    Attributes:
        table: Positions columns present in the source (typed as the store's), plus
            ``trip_headsign`` when the source has it; ``source_file`` set.
        layout: ``capmetrics``, ``gtfs_rt_flat``, ``positions`` or ``mapped``.
        unmapped: Source columns that map to no positions column (not imported).
        notes: Human-readable findings (speed unit, invalid values...).
        zero_positions: Row mask of exact (0, 0) coordinates (protobuf's default for an
            unset position in flattened exports), to be flagged E026.
    """

    table: pa.Table
    layout: str
    unmapped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    zero_positions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


def is_table_path(path: Path) -> bool:
    """Whether ``path`` is a CSV or Parquet file by its suffix."""
    return path.name.lower().endswith(TABLE_SUFFIXES)


def read_raw_table(path: Path) -> pa.Table:
    """Read a CSV (every column as text, only empty cells null) or Parquet file.

    Raises:
        LayoutError: when the file cannot be read as a table.
    """
    try:
        if path.name.lower().endswith((".parquet", ".pq")):
            return pq.read_table(path)
        names = _read_csv_header(path)
        if not names:
            raise LayoutError(f"{path}: empty file (not even a header line)")
        convert = pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names},
            null_values=[""],
            strings_can_be_null=True,
        )
        return pacsv.read_csv(path, convert_options=convert)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
        raise LayoutError(f"{path}: cannot be read as a table: {exc}") from exc


def _read_csv_header(path: Path) -> list[str]:
    import gzip

    opener: Any = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        return next(csv.reader(fh), [])


def normalise_field_path(name: str) -> str:
    """``entity.vehicle.trip.tripId`` → ``vehicle.trip.trip_id`` (camelCase to snake_case)."""
    parts = name.strip().split(".")
    if parts and parts[0] == "entity" and len(parts) > 1:
        parts = parts[1:]
    return ".".join(re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", p).lower() for p in parts)


def detect_layout(columns: list[str]) -> str:
    """Name the layout of a table from its column names.

    Raises:
        LayoutError: when no known layout matches (the message lists the columns and
            suggests a ``--columns`` mapping).
    """
    names = set(columns)
    if CAPMETRICS_COLUMNS <= names:
        return "capmetrics"
    if any(normalise_field_path(c) in FLAT_FIELDS and "." in c for c in columns):
        return "gtfs_rt_flat"
    if {"vehicle_id", "vehicle_timestamp"} <= names or {"vehicle_id", "latitude"} <= names:
        return "positions"
    raise LayoutError(
        f"unrecognised layout with columns {sorted(names)}: pass a --columns JSON mapping "
        '{"source column": "positions column"}'
    )


def read_flat_table(
    path: Path, *, columns: dict[str, str] | None = None, source_file: str | None = None
) -> FlatTable:
    """Read one CSV/Parquet file and convert it to positions columns.

    Args:
        path: The file.
        columns: Explicit ``{source column: positions column}`` mapping; skips detection.
        source_file: Provenance written into ``source_file`` (default: the path).

    Returns:
        The converted table and what was found on the way (see :class:`FlatTable`).

    Raises:
        LayoutError: unknown layout, unknown mapping targets, unparseable values.
    """
    raw = read_raw_table(path)
    return convert_flat_table(raw, columns=columns, source_file=source_file or str(path))


def convert_flat_table(
    raw: pa.Table, *, columns: dict[str, str] | None = None, source_file: str | None = None
) -> FlatTable:
    """Convert an in-memory flattened table (see :func:`read_flat_table`)."""
    if columns:
        layout, mapping = "mapped", _check_mapping(raw, columns)
    else:
        layout = detect_layout(raw.column_names)
        mapping = _layout_mapping(layout, raw.column_names)
    unmapped = [c for c in raw.column_names if c not in mapping]
    with_values = [c for c in unmapped if raw.column(c).null_count < raw.num_rows]
    if with_values:
        logger.warning("%s: columns with values not imported (no positions column): %s",
                       source_file, with_values)  # fmt: skip
    if len(with_values) < len(unmapped):
        logger.info("%s: empty columns not imported: %s", source_file,
                    [c for c in unmapped if c not in with_values])  # fmt: skip
    result = FlatTable(pa.table({}), layout, unmapped)
    arrays: dict[str, pa.Array] = {}
    for source, target in mapping.items():
        arrays.update(_convert_column(raw.column(source), target, result.notes, source))
    if layout == "capmetrics" and "speed" in arrays:
        arrays["speed"] = convert_speed(arrays, result.notes, source_file)
    _add_timestamps(arrays)
    arrays["source_file"] = pa.array([source_file] * raw.num_rows, pa.string())
    result.table = pa.table(arrays)
    result.zero_positions = compute_zero_positions(result.table)
    return result


def _check_mapping(raw: pa.Table, columns: dict[str, str]) -> dict[str, str]:
    missing = sorted(set(columns) - set(raw.column_names))
    if missing:
        raise LayoutError(f"--columns names source columns not in the file: {missing}")
    bad = sorted(t for t in columns.values() if t not in _TYPES and t not in _TIME_TARGETS)
    if bad:
        raise LayoutError(f"--columns targets {bad} are not positions columns")
    return dict(columns)


def _layout_mapping(layout: str, names: list[str]) -> dict[str, str]:
    if layout == "capmetrics":
        mapping = {c: c for c in CAPMETRICS_COLUMNS | {"trip_headsign"} if c in names}
        mapping["timestamp"] = "vehicle_timestamp"
        return mapping
    if layout == "gtfs_rt_flat":
        found = {c: FLAT_FIELDS.get(normalise_field_path(c)) for c in names}
        return {c: t for c, t in found.items() if t is not None}
    mapping = {c: c for c in names if (c in _TYPES or c in _TIME_TARGETS) and c != "feed_id"}
    for parsed, raw in _TIME_TARGETS.items():  # a store export has both: keep the raw value
        if parsed in mapping and raw in mapping:
            del mapping[parsed]
    return mapping


def _convert_column(
    values: pa.ChunkedArray, target: str, notes: list[str], source: str
) -> dict[str, pa.Array]:
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if target in _TIME_TARGETS:
        return {_TIME_TARGETS[target]: parse_time_column(values, source)}
    if target.endswith("_timestamp_raw"):
        return {target: parse_time_column(values, source)}
    if target in _ENUMS:
        return {target: _convert_enum(values, target, notes, source)}
    return {target: _cast_value(values, _TYPES[target], source)}


def _cast_value(values: pa.Array, target: pa.DataType, source: str) -> pa.Array:
    if pa.types.is_null(values.type):
        return pa.nulls(len(values), target)
    if pa.types.is_floating(values.type) and pa.types.is_integer(target):
        values = pc.if_else(pc.is_nan(values), pa.scalar(None, values.type), values)
    if pa.types.is_string(target) and not pa.types.is_string(values.type):
        if pa.types.is_floating(values.type):
            raise LayoutError(f"column {source!r} holds floats where text ids are expected")
    try:
        return pc.cast(values, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise LayoutError(f"column {source!r} ({values.type}) does not convert to "
                          f"{target}: {exc}") from exc  # fmt: skip


def _convert_enum(values: pa.Array, target: str, notes: list[str], source: str) -> pa.Array:
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return _cast_value(values, pa.int32(), source)
    enum = _ENUMS[target]
    names = {n: v for n, v in enum.items()} | {str(v): v for _, v in enum.items()}
    texts = values.to_pylist()
    out = [None if t is None else names.get(t.strip().upper(), -1) for t in texts]
    bad = sorted({t for t, v in zip(texts, out, strict=True) if v == -1})
    if bad:
        count = sum(v == -1 for v in out)
        message = f"{count} values of {source!r} are not {target} names ({bad[:5]}): stored null"
        logger.warning(message)
        notes.append(message)
        out = [None if v == -1 else v for v in out]
    return pa.array(out, pa.int32())


def parse_time_column(values: pa.Array, source: str) -> pa.Array:
    """Parse epoch numbers or ISO 8601 strings with a UTC offset into raw uint64 values.

    Numbers are returned as they are (the raw GTFS-rt value, whatever its unit); strings
    become POSIX seconds (sub-second digits dropped).

    Raises:
        LayoutError: for negative or fractional numbers, or strings that are neither
            digits nor ISO 8601 with an offset (naive local times are never guessed).
    """
    if pa.types.is_null(values.type):
        return pa.nulls(len(values), pa.uint64())
    if pa.types.is_timestamp(values.type):
        if values.type.tz is None:
            raise LayoutError(f"column {source!r} holds timestamps without a time zone")
        return pc.cast(pc.divide(pc.cast(values, pa.int64()), _per_second(values.type)),
                       pa.uint64())  # fmt: skip
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return _parse_time_strings(values.cast(pa.string()), source)
    if pa.types.is_floating(values.type):
        values = pc.if_else(pc.is_nan(values), pa.scalar(None, values.type), values)
    try:
        return pc.cast(values, pa.uint64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise LayoutError(f"column {source!r}: timestamps must be non-negative whole "
                          f"numbers or ISO 8601 strings: {exc}") from exc  # fmt: skip


def _per_second(ts_type: pa.TimestampType) -> int:
    return {"s": 1, "ms": 1000, "us": 1_000_000, "ns": 1_000_000_000}[ts_type.unit]


def _parse_time_strings(values: pa.Array, source: str) -> pa.Array:
    digits = pc.match_substring_regex(values, r"^\s*\d+\s*$")
    numeric = pc.if_else(digits, values, pa.scalar(None, pa.string()))
    as_numbers = pc.cast(pc.utf8_trim_whitespace(numeric), pa.uint64())
    texts = pc.if_else(digits, pa.scalar(None, pa.string()), values)
    texts = pc.replace_substring_regex(texts, r"Z$", "+0000")
    texts = pc.replace_substring_regex(texts, r"([+-]\d\d):(\d\d)$", r"\1\2")
    texts = pc.replace_substring_regex(texts, r"\.\d+([+-]\d{4})$", r"\1")
    parsed = pc.strptime(texts, format="%Y-%m-%dT%H:%M:%S%z", unit="s", error_is_null=True)
    failed = pc.and_(pc.is_valid(texts), pc.is_null(parsed))
    n_failed = pc.sum(pc.cast(failed, pa.int64())).as_py() or 0
    if n_failed:
        sample = pc.filter(values, failed).slice(0, 3).to_pylist()
        raise LayoutError(
            f"column {source!r}: {n_failed} timestamps are not epoch numbers nor ISO 8601 "
            f"with a UTC offset (e.g. {sample}); the time zone is never guessed"
        )
    seconds = pc.cast(pc.cast(parsed, pa.int64()), pa.uint64())
    return pc.coalesce(as_numbers, seconds)


def _add_timestamps(arrays: dict[str, pa.Array]) -> None:
    for raw, ts in (("vehicle_timestamp_raw", "vehicle_timestamp"),
                    ("header_timestamp_raw", "header_timestamp")):  # fmt: skip
        if raw in arrays:
            arrays[ts] = timestamps_from_raw(arrays[raw])


def compute_zero_positions(table: pa.Table) -> np.ndarray:
    """Row mask of exact (0, 0) coordinates.

    Columns in: ``latitude``, ``longitude`` (all False when either is absent).
    """
    if "latitude" not in table.column_names or "longitude" not in table.column_names:
        return np.zeros(table.num_rows, dtype=bool)
    zero = pc.and_(
        pc.equal(table.column("latitude"), 0.0), pc.equal(table.column("longitude"), 0.0)
    )
    return np.asarray(pc.fill_null(zero, False).to_numpy(zero_copy_only=False), dtype=bool)
