"""Encode a positions table back into GTFS-realtime VehiclePositions FeedMessages.

This is the inverse of :func:`transitnet.realtime.decode.decode_vehicle_positions`:
for a table that came from a decode, ``decode(encode(t)) == t`` (all columns, nulls
included; only the provenance columns ``fetched_at``/``source_file`` are given to the
decoder again). A null cell leaves its protobuf field unset, so presence survives the
round trip.

Limits, all by the GTFS-realtime wire format:

- ``latitude``/``longitude``/``bearing``/``speed`` are 32-bit floats on the wire; a
  float64 value from a flattened table is rounded to the nearest float32 (under 1 m).
- ``Position`` requires both coordinates: a row with only one of them is encoded without
  a position (counted and logged as a warning).
- ``FeedEntity.id`` is required: a null ``entity_id`` falls back to the vehicle id, then
  the label, then ``row-<n>`` (logged).
- Only VehiclePosition entities are produced (no TripUpdates/Alerts).

Input columns: any subset of :data:`transitnet.schema.POSITION_COLUMNS`; missing columns
are read as null. Unknown columns are ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from google.transit import gtfs_realtime_pb2

logger = logging.getLogger(__name__)

DEFAULT_VERSION = "2.0"

_TRIP_FIELDS = (
    "trip_id",
    "route_id",
    "direction_id",
    "start_time",
    "start_date",
    "schedule_relationship",
)
_VDESC_FIELDS = (("vehicle_id", "id"), ("vehicle_label", "label"))
_POS_OPTIONAL = ("bearing", "speed", "odometer")
_VP_FIELDS = (
    ("current_stop_sequence", "current_stop_sequence"),
    ("stop_id", "stop_id"),
    ("current_status", "current_status"),
    ("congestion_level", "congestion_level"),
    ("occupancy_status", "occupancy_status"),
    ("vehicle_timestamp_raw", "timestamp"),
)
_ROW_COLUMNS = (
    "entity_id",
    "is_deleted",
    *_TRIP_FIELDS,
    *(c for c, _ in _VDESC_FIELDS),
    "latitude",
    "longitude",
    *_POS_OPTIONAL,
    *(c for c, _ in _VP_FIELDS),
)


class EncodeError(ValueError):
    """A table value that cannot be represented in a GTFS-realtime FeedMessage."""


@dataclass(frozen=True)
class EncodedSnapshot:
    """One FeedMessage built from the rows sharing a header timestamp.

    Attributes:
        header_timestamp_raw: The FeedHeader timestamp written (POSIX seconds as given).
        body: Serialized FeedMessage bytes.
        n_rows: VehiclePosition entities in the message.
    """

    header_timestamp_raw: int | None
    body: bytes
    n_rows: int


def encode_feed_message(
    positions: pa.Table,
    *,
    header_timestamp_raw: int | None,
    version: str = DEFAULT_VERSION,
    incrementality: int | None = None,
    feed_version: str | None = None,
) -> bytes:
    """Serialize positions rows as one VehiclePositions FeedMessage.

    Args:
        positions: Rows to encode, any subset of the positions columns (see module doc).
        header_timestamp_raw: FeedHeader.timestamp; ``None`` leaves it unset.
        version: FeedHeader.gtfs_realtime_version (required by the format).
        incrementality: FeedHeader.incrementality (0 FULL_DATASET, 1 DIFFERENTIAL) or
            ``None`` to leave it unset.
        feed_version: Optional FeedHeader.feed_version, e.g. to mark a simulated feed.

    Returns:
        The serialized FeedMessage.

    Raises:
        EncodeError: for values outside their protobuf range (e.g. a negative
            ``current_stop_sequence`` or an unknown enum number).
    """
    msg: Any = gtfs_realtime_pb2.FeedMessage()
    msg.header.gtfs_realtime_version = version
    if incrementality is not None:
        msg.header.incrementality = incrementality
    if header_timestamp_raw is not None:
        msg.header.timestamp = header_timestamp_raw
    if feed_version is not None:
        msg.header.feed_version = feed_version
    columns = _columns_as_lists(positions)
    n_lonely = 0
    for i in range(positions.num_rows):
        row = {name: values[i] for name, values in columns.items()}
        n_lonely += _add_entity(msg, row, i)
    if n_lonely:
        logger.warning("%d rows lack latitude or longitude: encoded without a position", n_lonely)
    return bytes(msg.SerializeToString())


def _columns_as_lists(positions: pa.Table) -> dict[str, list[Any]]:
    n = positions.num_rows
    names = set(positions.column_names)
    return {c: positions.column(c).to_pylist() if c in names else [None] * n for c in _ROW_COLUMNS}


def _add_entity(msg: Any, row: dict[str, Any], index: int) -> int:
    """Append one FeedEntity for ``row``; returns 1 when a lone coordinate was left out."""
    entity = msg.entity.add()
    entity.id = _entity_id(row, index)
    if row["is_deleted"] is not None:
        entity.is_deleted = row["is_deleted"]
    vp = entity.vehicle
    vp.SetInParent()
    try:
        _set_present(vp.trip, row, [(c, c) for c in _TRIP_FIELDS])
        _set_present(vp.vehicle, row, list(_VDESC_FIELDS))
        _set_present(vp, row, list(_VP_FIELDS))
        lonely = _set_position(vp, row)
    except (ValueError, TypeError) as exc:
        raise EncodeError(f"row {index} (entity {entity.id!r}) cannot be encoded: {exc}") from exc
    return lonely


def _entity_id(row: dict[str, Any], index: int) -> str:
    for column in ("entity_id", "vehicle_id", "vehicle_label"):
        if row[column] is not None:
            return str(row[column])
    logger.debug("row %d has no entity/vehicle id: using row-%d", index, index)
    return f"row-{index}"


def _set_present(sub: Any, row: dict[str, Any], pairs: list[tuple[str, str]]) -> None:
    for column, field in pairs:
        value = row[column]
        if value is not None:
            setattr(sub, field, value)


def _set_position(vp: Any, row: dict[str, Any]) -> int:
    """Set the Position; returns 1 when the row's position is incomplete and left out."""
    lat, lon = row["latitude"], row["longitude"]
    if lat is None or lon is None:
        partial = lat is not None or lon is not None
        return int(partial or any(row[c] is not None for c in _POS_OPTIONAL))
    vp.position.latitude = lat
    vp.position.longitude = lon
    _set_present(vp.position, row, [(c, c) for c in _POS_OPTIONAL])
    return 0


def iter_snapshot_tables(
    positions: pa.Table, *, time_column: str | None = None, bin_s: int | None = None
) -> Iterator[tuple[int | None, pa.Table]]:
    """Split a positions table into snapshots, in time order.

    Rows are grouped by ``header_timestamp_raw`` when the table has that column with at
    least one value, else by ``vehicle_timestamp_raw``: one snapshot per distinct fix time
    (header timestamp = that time), or with ``bin_s`` one per window of that many seconds
    holding the fixes made in it (header timestamp = the window's end), like a feed polled
    every ``bin_s`` seconds. Rows whose grouping value is null form one last snapshot
    without a header timestamp. Row order inside a snapshot is kept.

    Args:
        positions: Input rows; needs ``header_timestamp_raw`` or ``vehicle_timestamp_raw``.
        time_column: Force the grouping column instead of choosing automatically.
        bin_s: Window length for grouping by vehicle timestamp (ignored for headers).

    Yields:
        ``(timestamp_raw or None, rows)`` pairs, ascending by timestamp.

    Raises:
        EncodeError: when neither timestamp column is present.
    """
    column = time_column or _choose_time_column(positions)
    keys = positions.column(column).cast(pa.uint64())
    if bin_s is not None and column == "vehicle_timestamp_raw":
        if bin_s < 1:
            raise EncodeError(f"bin_s must be a positive number of seconds, got {bin_s}")
        window = pa.scalar(bin_s, pa.uint64())
        keys = pc.multiply(pc.add(pc.divide(keys, window), pa.scalar(1, pa.uint64())), window)
    indices = pc.array_sort_indices(keys, null_placement="at_end")
    ordered = positions.take(indices)
    sorted_keys = keys.take(indices).to_pylist()
    start = 0
    for end in range(1, len(sorted_keys) + 1):
        if end == len(sorted_keys) or sorted_keys[end] != sorted_keys[start]:
            yield sorted_keys[start], ordered.slice(start, end - start)
            start = end


def _choose_time_column(positions: pa.Table) -> str:
    names = positions.column_names
    if "header_timestamp_raw" in names and positions.column("header_timestamp_raw").null_count < (
        positions.num_rows or 1
    ):
        return "header_timestamp_raw"
    if "vehicle_timestamp_raw" in names:
        return "vehicle_timestamp_raw"
    raise EncodeError("a table needs header_timestamp_raw or vehicle_timestamp_raw to be split")


def encode_snapshots(
    positions: pa.Table,
    *,
    version: str | None = None,
    feed_version: str | None = None,
    time_column: str | None = None,
    bin_s: int | None = None,
) -> list[EncodedSnapshot]:
    """Encode a positions table as a time-ordered list of FeedMessages, one per timestamp.

    Header version and incrementality come from the ``header_version`` and
    ``header_incrementality`` columns when present (first row of each snapshot), else
    ``version`` (default ``"2.0"``) and FULL_DATASET.

    Args:
        positions: Rows to encode (see :func:`iter_snapshot_tables` for the grouping).
        version: Override for FeedHeader.gtfs_realtime_version.
        feed_version: Optional FeedHeader.feed_version for every message.
        time_column: Force the grouping column.
        bin_s: Window for tables without header timestamps (see :func:`iter_snapshot_tables`).

    Returns:
        One :class:`EncodedSnapshot` per distinct timestamp, ascending.
    """
    out: list[EncodedSnapshot] = []
    for ts, rows in iter_snapshot_tables(positions, time_column=time_column, bin_s=bin_s):
        header_version, incrementality = _header_fields(rows, version)
        body = encode_feed_message(
            rows,
            header_timestamp_raw=ts,
            version=header_version,
            incrementality=incrementality,
            feed_version=feed_version,
        )
        out.append(EncodedSnapshot(ts, body, rows.num_rows))
    return out


def _header_fields(rows: pa.Table, version: str | None) -> tuple[str, int | None]:
    names = rows.column_names
    first_version = rows.column("header_version")[0].as_py() if "header_version" in names else None
    first_inc = (
        rows.column("header_incrementality")[0].as_py() if "header_incrementality" in names else 0
    )
    return version or first_version or DEFAULT_VERSION, first_inc
