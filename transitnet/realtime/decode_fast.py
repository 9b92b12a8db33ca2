"""Fast extraction of VehiclePosition columns through the C extension ``_vpdecode``.

``_vpdecode.decode`` walks the protobuf wire format of the decompressed FeedMessage and
returns Arrow-layout buffers (validity bitmap + values, or offsets + UTF-8 data), which
are wrapped here zero-copy with :meth:`pyarrow.Array.from_buffers`. Its semantics equal
the reference path's (:mod:`transitnet.realtime.decode_python`); a test checks both on
every real file we have.

The extension is optional: when it is not built (no compiler at install time) or is
stale, :func:`load_extension` returns None, logs one warning, and callers use the
pure-Python path.
"""

from __future__ import annotations

import functools
import importlib
import logging
from types import ModuleType
from typing import Any

import pyarrow as pa
from google.protobuf import descriptor_pool
from google.transit import gtfs_realtime_pb2

from transitnet.realtime.decode_python import ENTITY_COLUMNS, EntityColumns
from transitnet.schema import POSITION_FIELDS

logger = logging.getLogger(__name__)

#: The interface version this wrapper expects (``ABI_VERSION`` in ``_vpdecode.c``).
EXPECTED_ABI_VERSION = 2

#: The closed (proto2) enums the C parser checks, in the order of its ``enum_masks``.
_ENUMS = (
    (gtfs_realtime_pb2.TripDescriptor, "schedule_relationship"),
    (gtfs_realtime_pb2.VehiclePosition, "current_status"),
    (gtfs_realtime_pb2.VehiclePosition, "congestion_level"),
    (gtfs_realtime_pb2.VehiclePosition, "occupancy_status"),
)

_TYPES: dict[str, pa.DataType] = {f.name: f.type for f in POSITION_FIELDS}


@functools.cache
def load_extension() -> ModuleType | None:
    """Import ``_vpdecode``; None (and one warning) when it is missing or stale."""
    try:
        module = _import_extension()
    except ImportError as exc:
        logger.warning(
            "The C decoder transitnet.realtime._vpdecode is not built (%s); using the "
            "pure-Python decoder, several times slower. Build it with `pip install -e .`.",
            exc,
        )
        return None
    version = getattr(module, "ABI_VERSION", None)
    if version != EXPECTED_ABI_VERSION or compute_enum_masks() is None:
        logger.warning(
            "The C decoder is stale (ABI %s, expected %s) or the bindings have enum values "
            "it cannot check; using the pure-Python decoder. Rebuild with `pip install -e .`.",
            version,
            EXPECTED_ABI_VERSION,
        )
        return None
    return module


def _import_extension() -> ModuleType:
    return importlib.import_module("transitnet.realtime._vpdecode")


@functools.cache
def compute_enum_masks() -> tuple[int, int, int, int] | None:
    """Bit masks of the valid values of each closed enum, from the installed bindings.

    Bit ``v`` is set when ``v`` is a value of the enum. None when a value falls outside
    0..63 (the C parser could not check it).
    """
    masks = []
    for message, field in _ENUMS:
        enum_type = message.DESCRIPTOR.fields_by_name[field].enum_type
        numbers = [v.number for v in enum_type.values] if enum_type is not None else [-1]
        if any(not 0 <= n < 64 for n in numbers):
            return None
        masks.append(sum(1 << n for n in set(numbers)))
    return masks[0], masks[1], masks[2], masks[3]


def extract_columns_fast(body: bytes, module: ModuleType) -> EntityColumns:
    """Extract the VehiclePosition columns from decompressed FeedMessage bytes in C.

    Args:
        body: The decompressed FeedMessage bytes (those given to ``ParseFromString``).
        module: The loaded extension (see :func:`load_extension`).

    Returns:
        The columns :data:`~transitnet.realtime.decode_python.ENTITY_COLUMNS`, one row per
        entity that has a ``vehicle``.

    Raises:
        ValueError: when the bytes are not a well-formed protobuf message.
    """
    masks = compute_enum_masks()
    n_rows, n_entities, n_tu, n_alerts, n_invalid, buffers, verified = module.decode(body, masks)
    arrays = {name: _wrap_buffers(_TYPES[name], n_rows, *buffers[name]) for name in ENTITY_COLUMNS}
    verified = verified and not has_registered_extensions()
    return EntityColumns(arrays, n_entities, n_tu, n_alerts, n_invalid, verified)


#: Messages of a VehiclePositions-only feed: the C required-field check covers exactly
#: these, and only while no extension of them is registered (one could add required fields).
_VP_FEED_MESSAGES = (
    gtfs_realtime_pb2.FeedMessage,
    gtfs_realtime_pb2.FeedHeader,
    gtfs_realtime_pb2.FeedEntity,
    gtfs_realtime_pb2.VehiclePosition,
    gtfs_realtime_pb2.VehiclePosition.CarriageDetails,
    gtfs_realtime_pb2.TripDescriptor,
    gtfs_realtime_pb2.TripDescriptor.ModifiedTripSelector,
    gtfs_realtime_pb2.VehicleDescriptor,
    gtfs_realtime_pb2.Position,
)


def has_registered_extensions() -> bool:
    """True when some imported module registered an extension of a VehiclePositions message."""
    pool: Any = descriptor_pool.Default()  # typeshed lacks the upb descriptor type
    return any(pool.FindAllExtensions(m.DESCRIPTOR) for m in _VP_FEED_MESSAGES)


def _wrap_buffers(
    dtype: pa.DataType,
    length: int,
    null_count: int,
    validity: bytes | None,
    values: bytes,
    data: bytes | None,
) -> pa.Array:
    """One Arrow array over the extension's buffers (no copy)."""
    bufs = [None if validity is None else pa.py_buffer(validity), pa.py_buffer(values)]
    if data is not None:
        bufs.append(pa.py_buffer(data))
    return pa.Array.from_buffers(dtype, length, bufs, null_count=null_count)
