"""Decode GTFS-realtime VehiclePositions bytes into an Arrow table.

Every optional protobuf field is read with proto2 presence: a field the feed did not set
becomes null, never protobuf's default 0 or (0, 0). Timestamps are tz-aware UTC, with
the raw uint64 values kept beside them.

Two extraction paths give identical tables (a test checks them on every real feed):
the C extension ``_vpdecode`` (the default; figures in ``benchmarks/bench_decode.py``)
and the pure-Python reference in :mod:`~transitnet.realtime.decode_python` (the fallback
when the extension is not built, logged once). Strings that are not valid
UTF-8 are kept backslash-escaped and counted (:attr:`DecodedFeed.n_invalid_utf8`).

Output columns: :data:`transitnet.schema.POSITION_COLUMNS` (no rule flags; see
:mod:`transitnet.realtime.validate`).
"""

from __future__ import annotations

import bz2
import gzip
import logging
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from google.protobuf.message import DecodeError
from google.transit import gtfs_realtime_pb2

from transitnet.realtime.decode_fast import extract_columns_fast, load_extension
from transitnet.realtime.decode_python import EntityColumns, extract_columns_python
from transitnet.schema import POSITION_FIELDS, UTC_TS

logger = logging.getLogger(__name__)

#: Which extraction path decodes the entities (see :func:`decode_vehicle_positions`).
Engine = Literal["auto", "c", "python"]

_DECODED_SCHEMA = pa.schema(POSITION_FIELDS)

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
    r"""One decoded snapshot.

    Attributes:
        header: The snapshot's FeedHeader.
        positions: One row per entity carrying a VehiclePosition
            (columns :data:`transitnet.schema.POSITION_COLUMNS`).
        n_entities: All entities in the snapshot, of any kind.
        n_trip_updates: Entities carrying a TripUpdate.
        n_alerts: Entities carrying an Alert.
        message: The parsed FeedMessage, for rules that need more than the table.
        n_invalid_utf8: String values that were not valid UTF-8; they are stored decoded
            with ``errors="backslashreplace"`` (``b"\xff"`` becomes the text ``\xff``),
            so distinct ids stay distinct, and a warning is logged.
    """

    header: FeedHeader
    positions: pa.Table
    n_entities: int
    n_trip_updates: int
    n_alerts: int
    message: Any
    n_invalid_utf8: int = 0


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
    msg = _parse_unchecked(body)
    _check_initialized(msg, body)
    return msg


def _parse_unchecked(body: bytes) -> Any:
    """ParseFromString with failures classified, without the required-fields check."""
    # Strip a prefix only (protobuf bodies start with b"\n"; a full strip copies them).
    head = body[:256].lstrip() or body.lstrip()
    if not head:
        raise FeedDecodeError("empty", "the body is empty")
    head = head[:15].lower()
    if head.startswith((b"<!doctype", b"<html", b"<?xml")) or head.startswith(b"<"):
        raise FeedDecodeError("html", "the body is HTML/XML, not protobuf")
    msg = gtfs_realtime_pb2.FeedMessage()
    try:
        msg.ParseFromString(body)
    except DecodeError as exc:
        kind = "not_protobuf" if _looks_like_text(body) else "truncated"
        raise FeedDecodeError(kind, f"protobuf parse failed: {exc}") from exc
    return msg


def _check_initialized(msg: Any, body: bytes) -> None:
    """Raise unless every proto2 ``required`` field is present (``IsInitialized()``)."""
    if not msg.IsInitialized():
        kind = "not_protobuf" if _looks_like_text(body) else "not_initialized"
        raise FeedDecodeError(kind, "required FeedMessage fields are missing")


def _looks_like_text(body: bytes) -> bool:
    sample = body[:256]
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in sample)
    return printable >= 0.95 * len(sample)


def timestamps_from_raw(raw: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Convert raw GTFS-rt uint64 timestamps to ``timestamp[us, UTC]``.

    POSIX seconds are expected; values in the millisecond, microsecond or nanosecond
    ranges (a common publisher bug that rule E001 flags) are scaled, so the row stays
    usable, while the raw value is kept in its own column. Nulls stay null.
    """
    if isinstance(raw, pa.UInt64Array) and raw.offset == 0 and raw.null_count < len(raw):
        validity, data = raw.buffers()  # fast path: no copy of the raw values
        micros = _scale_to_micros(np.frombuffer(data, dtype=np.uint64, count=len(raw)))
        return pa.Array.from_buffers(
            UTC_TS, len(raw), [validity, pa.py_buffer(micros)], null_count=raw.null_count
        )
    values = np.asarray(raw.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.uint64)
    mask = np.asarray(raw.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    return pa.array(_scale_to_micros(values), type=UTC_TS, mask=mask)


def _scale_to_micros(values: np.ndarray) -> np.ndarray:
    """Microseconds since the epoch from raw seconds (or ms/us/ns, by magnitude)."""
    micros = values * np.uint64(1_000_000)  # wraps only for values replaced below
    if (values >= _MS_THRESHOLD).any():
        micros = np.where(
            values >= _NS_THRESHOLD,
            values // 1000,
            np.where(
                values >= _US_THRESHOLD,
                values,
                np.where(values >= _MS_THRESHOLD, values * np.uint64(1000), micros),
            ),
        )
    return micros.view(np.int64)


def decode_vehicle_positions(
    body: bytes,
    *,
    feed_id: str,
    fetched_at: datetime | None = None,
    source_file: str | None = None,
    engine: Engine = "auto",
) -> DecodedFeed:
    """Decode one (possibly compressed) snapshot into positions rows.

    The body is always parsed by protobuf (``ParseFromString``), which classifies bad
    bodies and reads the header, and checked for its ``required`` fields exactly as
    ``IsInitialized()`` does (see :func:`parse_feed_message`). The per-entity columns come
    from the C extension (``engine="auto"`` or ``"c"``) or from the pure-Python reference
    path (``"python"``, and ``"auto"`` when the extension is not built); both give
    identical tables. On a VehiclePositions-only feed whose required fields the C walker
    found all present, the costly ``IsInitialized()`` walk (about 2x ``ParseFromString``)
    is skipped; in every other case it runs. Should the C walker reject bytes that
    protobuf accepted, ``"auto"`` logs a warning and uses the Python path.

    Args:
        body: Raw bytes as fetched or archived; gzip/bzip2 is sniffed.
        feed_id: Written into the ``feed_id`` column.
        fetched_at: Our own fetch clock (tz-aware); null when unknown (backfills).
        source_file: Archive path of the raw bytes, kept for provenance.
        engine: ``"auto"``, ``"c"`` or ``"python"`` (see above).

    Returns:
        The decoded snapshot; ``positions`` has exactly the columns and types of
        :data:`~transitnet.schema.POSITION_FIELDS`, one row per VehiclePosition entity.

    Raises:
        FeedDecodeError: when the body cannot be decoded as a FeedMessage.
        ValueError: when ``fetched_at`` is naive or ``engine`` is unknown.
        RuntimeError: when ``engine="c"`` and the extension is not built.
    """
    if fetched_at is not None and fetched_at.utcoffset() is None:
        raise ValueError("fetched_at must be timezone-aware (UTC), got a naive datetime")
    raw = decompress_body(body)
    msg = _parse_unchecked(raw)
    cols = _extract_columns(raw, msg, engine, source_file)
    if not cols.verified_initialized:
        _check_initialized(msg, raw)
    header = _read_header(msg)
    if cols.n_invalid_utf8:
        logger.warning(
            "%s: %d string value(s) were not valid UTF-8; stored backslash-escaped",
            source_file or feed_id,
            cols.n_invalid_utf8,
        )
    table = _build_table(cols, header, feed_id, fetched_at, source_file)
    return DecodedFeed(
        header, table, cols.n_entities, cols.n_trip_updates, cols.n_alerts, msg,
        cols.n_invalid_utf8,
    )  # fmt: skip


def _read_header(msg: Any) -> FeedHeader:
    h = msg.header
    return FeedHeader(
        version=h.gtfs_realtime_version if h.HasField("gtfs_realtime_version") else None,
        incrementality=h.incrementality if h.HasField("incrementality") else None,
        timestamp_raw=h.timestamp if h.HasField("timestamp") else None,
    )


def _extract_columns(
    raw: bytes, msg: Any, engine: Engine, source_file: str | None
) -> EntityColumns:
    """The entity columns by the chosen engine (see :func:`decode_vehicle_positions`)."""
    if engine not in ("auto", "c", "python"):
        raise ValueError(f"engine must be 'auto', 'c' or 'python', not {engine!r}")
    module = load_extension() if engine != "python" else None
    if module is None:
        if engine == "c":
            raise RuntimeError("engine='c' but transitnet.realtime._vpdecode is not built")
        return extract_columns_python(msg)
    try:
        return extract_columns_fast(raw, module)
    except ValueError as exc:
        if engine == "c":
            raise
        logger.warning("%s: C decoder failed (%s); using the Python path", source_file, exc)
        return extract_columns_python(msg)


def _repeat(value: Any, n: int, dtype: pa.DataType) -> pa.Array:
    """``n`` copies of one value (null when ``value`` is None)."""
    if value is None:
        return pa.nulls(n, type=dtype)
    return pa.repeat(pa.scalar(value, type=dtype), n)


def _build_table(
    cols: EntityColumns,
    header: FeedHeader,
    feed_id: str,
    fetched_at: datetime | None,
    source_file: str | None,
) -> pa.Table:
    """Assemble POSITION_FIELDS: the entity columns plus header, feed and provenance ones."""
    n = cols.n_rows
    arrays = dict(cols.arrays)
    arrays["vehicle_timestamp"] = timestamps_from_raw(arrays["vehicle_timestamp_raw"])
    header_ts = timestamps_from_raw(pa.array([header.timestamp_raw], type=pa.uint64()))
    arrays["header_timestamp"] = pa.repeat(header_ts[0], n)
    arrays["header_timestamp_raw"] = _repeat(header.timestamp_raw, n, pa.uint64())
    arrays["header_version"] = _repeat(header.version, n, pa.string())
    arrays["header_incrementality"] = _repeat(header.incrementality, n, pa.int32())
    arrays["feed_id"] = _repeat(feed_id, n, pa.string())
    arrays["fetched_at"] = _repeat(fetched_at, n, UTC_TS)
    arrays["source_file"] = _repeat(source_file, n, pa.string())
    return pa.Table.from_arrays([arrays[f.name] for f in POSITION_FIELDS], schema=_DECODED_SCHEMA)
