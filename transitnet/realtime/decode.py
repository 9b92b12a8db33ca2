"""Decode GTFS-realtime VehiclePositions bytes into an Arrow table.

Every optional protobuf field is read with presence (``HasField``): a field the feed
did not set becomes null, never protobuf's default 0 or (0, 0).

Output columns: :data:`transitnet.schema.POSITION_COLUMNS` (no rule flags; see
:mod:`transitnet.realtime.validate`).
"""

from __future__ import annotations

import bz2
import gzip
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
from google.protobuf.message import DecodeError
from google.transit import gtfs_realtime_pb2

from transitnet.schema import POSITION_FIELDS

GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"

#: Raw timestamps at or above this are not POSIX seconds (year 5138+): read as milliseconds.
_MS_THRESHOLD = 100_000_000_000
#: ... and at or above this as microseconds.
_US_THRESHOLD = 100_000_000_000_000
_NS_THRESHOLD = 100_000_000_000_000_000


class FeedDecodeError(ValueError):
    """A body that is not a decodable GTFS-realtime FeedMessage.

    Attributes:
        kind: One of ``empty``, ``html``, ``not_protobuf``, ``truncated``,
            ``bad_gzip``, ``not_initialized``.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


@dataclass(frozen=True)
class FeedHeader:
    """The FeedHeader of one snapshot; fields are None when the feed did not set them."""

    version: str | None
    incrementality: int | None
    timestamp_raw: int | None


@dataclass(frozen=True)
class DecodedFeed:
    """One decoded snapshot.

    Attributes:
        header: The snapshot's FeedHeader.
        positions: One row per entity carrying a VehiclePosition
            (columns :data:`transitnet.schema.POSITION_COLUMNS`).
        n_entities: All entities in the snapshot, of any kind.
        n_trip_updates: Entities carrying a TripUpdate.
        n_alerts: Entities carrying an Alert.
        message: The parsed FeedMessage, for rules that need more than the table.
    """

    header: FeedHeader
    positions: pa.Table
    n_entities: int
    n_trip_updates: int
    n_alerts: int
    message: Any


def decompress_body(body: bytes) -> bytes:
    """Return ``body`` with gzip/bzip2 undone, sniffing magic bytes (no header needed).

    Raises:
        FeedDecodeError: ``bad_gzip`` when the magic bytes are there but the stream is broken.
    """
    if body[:2] == GZIP_MAGIC:
        try:
            return gzip.decompress(body)
        except (OSError, EOFError, zlib.error) as exc:
            raise FeedDecodeError("bad_gzip", f"gzip stream is broken: {exc}") from exc
    if body[:3] == BZIP2_MAGIC:
        try:
            return bz2.decompress(body)
        except (OSError, ValueError) as exc:
            raise FeedDecodeError("bad_gzip", f"bzip2 stream is broken: {exc}") from exc
    return body


def parse_feed_message(body: bytes) -> Any:
    """Parse (already decompressed) bytes into a FeedMessage, classifying failures.

    Raises:
        FeedDecodeError: for empty, HTML/text, truncated or uninitialised bodies.
    """
    if not body.strip():
        raise FeedDecodeError("empty", "the body is empty")
    head = body.lstrip()[:15].lower()
    if head.startswith((b"<!doctype", b"<html", b"<?xml")) or head.startswith(b"<"):
        raise FeedDecodeError("html", "the body is HTML/XML, not protobuf")
    msg = gtfs_realtime_pb2.FeedMessage()
    try:
        msg.ParseFromString(body)
    except DecodeError as exc:
        kind = "not_protobuf" if _looks_like_text(body) else "truncated"
        raise FeedDecodeError(kind, f"protobuf parse failed: {exc}") from exc
    if not msg.IsInitialized():
        kind = "not_protobuf" if _looks_like_text(body) else "not_initialized"
        raise FeedDecodeError(kind, "required FeedMessage fields are missing")
    return msg


def _looks_like_text(body: bytes) -> bool:
    sample = body[:256]
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in sample)
    return printable >= 0.95 * len(sample)


def timestamps_from_raw(raw: pa.Array) -> pa.Array:
    """Convert raw GTFS-rt uint64 timestamps to ``timestamp[us, UTC]``.

    POSIX seconds are expected; values in the millisecond, microsecond or nanosecond
    ranges (a common publisher bug that rule E001 flags) are scaled, so the row stays
    usable, while the raw value is kept in its own column. Nulls stay null.
    """
    values = np.asarray(raw.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.uint64)
    micros = np.where(
        values >= _NS_THRESHOLD,
        values // 1000,
        np.where(
            values >= _US_THRESHOLD,
            values,
            np.where(values >= _MS_THRESHOLD, values * 1000, values * 1_000_000),
        ),
    )
    micros = np.minimum(micros, np.iinfo(np.int64).max).astype(np.int64)
    mask = np.asarray(raw.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    return pa.array(micros, type=pa.timestamp("us", tz="UTC"), mask=mask)


def decode_vehicle_positions(
    body: bytes,
    *,
    feed_id: str,
    fetched_at: datetime | None = None,
    source_file: str | None = None,
) -> DecodedFeed:
    """Decode one (possibly compressed) snapshot into positions rows.

    Args:
        body: Raw bytes as fetched or archived; gzip/bzip2 is sniffed.
        feed_id: Written into the ``feed_id`` column.
        fetched_at: Our own fetch clock (tz-aware); null when unknown (backfills).
        source_file: Archive path of the raw bytes, kept for provenance.

    Returns:
        The decoded snapshot; ``positions`` has :data:`~transitnet.schema.POSITION_COLUMNS`.

    Raises:
        FeedDecodeError: when the body cannot be decoded as a FeedMessage.
    """
    msg = parse_feed_message(decompress_body(body))
    header = _read_header(msg)
    cols, n_tu, n_alerts = _extract_columns(msg)
    table = _build_table(cols, header, feed_id, fetched_at, source_file)
    return DecodedFeed(header, table, len(msg.entity), n_tu, n_alerts, msg)


def _read_header(msg: Any) -> FeedHeader:
    h = msg.header
    return FeedHeader(
        version=h.gtfs_realtime_version if h.HasField("gtfs_realtime_version") else None,
        incrementality=h.incrementality if h.HasField("incrementality") else None,
        timestamp_raw=h.timestamp if h.HasField("timestamp") else None,
    )


_TRIP = ("trip_id", "route_id", "direction_id", "start_time", "start_date",
         "schedule_relationship")  # fmt: skip
_VDESC = (("vehicle_id", "id"), ("vehicle_label", "label"))
_POS = ("bearing", "speed", "odometer")
_VP_SCALARS = (("stop_id", "stop_id"), ("current_stop_sequence", "current_stop_sequence"),
               ("current_status", "current_status"), ("congestion_level", "congestion_level"),
               ("occupancy_status", "occupancy_status"),
               ("vehicle_timestamp_raw", "timestamp"))  # fmt: skip


def _extract_columns(msg: Any) -> tuple[dict[str, list[Any]], int, int]:
    """Read every VehiclePosition field with presence into Python lists (reference path)."""
    names = ["entity_id", "is_deleted", *_TRIP, *(c for c, _ in _VDESC), "latitude",
             "longitude", *_POS, *(c for c, _ in _VP_SCALARS)]  # fmt: skip
    cols: dict[str, list[Any]] = {n: [] for n in names}
    n_tu = n_alerts = 0
    for entity in msg.entity:
        n_tu += entity.HasField("trip_update")
        n_alerts += entity.HasField("alert")
        if not entity.HasField("vehicle"):
            continue
        cols["entity_id"].append(entity.id)
        cols["is_deleted"].append(entity.is_deleted if entity.HasField("is_deleted") else None)
        vp = entity.vehicle
        _read_optional(vp.trip if vp.HasField("trip") else None, _TRIP, _TRIP, cols)
        vdesc = vp.vehicle if vp.HasField("vehicle") else None
        _read_optional(vdesc, [c for c, _ in _VDESC], [f for _, f in _VDESC], cols)
        pos = vp.position if vp.HasField("position") else None
        cols["latitude"].append(pos.latitude if pos is not None else None)
        cols["longitude"].append(pos.longitude if pos is not None else None)
        _read_optional(pos, _POS, _POS, cols)
        _read_optional(vp, [c for c, _ in _VP_SCALARS], [f for _, f in _VP_SCALARS], cols)
    return cols, n_tu, n_alerts


def _read_optional(
    sub: Any, columns: Any, fields: Any, cols: dict[str, list[Any]]
) -> None:
    for col, field in zip(columns, fields, strict=True):
        cols[col].append(getattr(sub, field) if sub is not None and sub.HasField(field) else None)


def _build_table(
    cols: dict[str, list[Any]],
    header: FeedHeader,
    feed_id: str,
    fetched_at: datetime | None,
    source_file: str | None,
) -> pa.Table:
    n = len(cols["entity_id"])
    types = {f.name: f.type for f in POSITION_FIELDS}
    arrays: dict[str, pa.Array] = {}
    for name, values in cols.items():
        arrays[name] = pa.array(values, type=types[name])
    arrays["vehicle_timestamp"] = timestamps_from_raw(arrays["vehicle_timestamp_raw"])
    h_raw = pa.array([header.timestamp_raw] * n, type=pa.uint64())
    arrays["header_timestamp_raw"] = h_raw
    arrays["header_timestamp"] = timestamps_from_raw(h_raw)
    arrays["header_version"] = pa.array([header.version] * n, type=pa.string())
    arrays["header_incrementality"] = pa.array([header.incrementality] * n, type=pa.int32())
    arrays["feed_id"] = pa.array([feed_id] * n, type=pa.string())
    fetched = fetched_at.astimezone(UTC) if fetched_at is not None else None
    arrays["fetched_at"] = pa.array([fetched] * n, type=types["fetched_at"])
    arrays["source_file"] = pa.array([source_file] * n, type=pa.string())
    return pa.Table.from_arrays(
        [arrays[f.name] for f in POSITION_FIELDS], schema=pa.schema(POSITION_FIELDS)
    )
