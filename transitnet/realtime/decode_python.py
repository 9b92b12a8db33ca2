r"""Pure-Python extraction of VehiclePosition columns from a parsed FeedMessage.

This is the reference path: the fallback when the C extension ``_vpdecode`` is not built,
and the oracle the C path is tested against. It reads every optional field with proto2
presence, calling ``HasField`` only when the value equals the field's default (a present
value that differs from the default cannot be absent), which avoids most calls.

Semantics shared with the C path (see ``_vpdecode.c``):

- an absent field is null, never protobuf's default ``0`` / ``""`` / ``(0, 0)``;
- ``direction_id`` is uint32 on the wire and stored as int32 with its bits kept, so a
  (never valid) value of 2**31 or more reads negative rather than failing the snapshot;
- a string that is not valid UTF-8 (protobuf-python hands it back as ``bytes``) is
  decoded with ``errors="backslashreplace"`` (``b"\xff"`` becomes the text ``\xff``, so
  distinct ids stay distinct) and counted in ``n_invalid_utf8``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from google.transit import gtfs_realtime_pb2 as pb

from transitnet.schema import POSITION_FIELDS

#: Columns read from the entities (the rest of POSITION_COLUMNS come from the header/caller).
ENTITY_COLUMNS: tuple[str, ...] = (
    "entity_id", "vehicle_id", "vehicle_label", "trip_id", "route_id", "start_time",
    "start_date", "stop_id", "direction_id", "schedule_relationship", "current_status",
    "congestion_level", "occupancy_status", "latitude", "longitude", "bearing", "speed",
    "odometer", "current_stop_sequence", "vehicle_timestamp_raw", "is_deleted",
)  # fmt: skip

_TYPES: dict[str, pa.DataType] = {f.name: f.type for f in POSITION_FIELDS}

#: (column, proto field) per message, in the order the reader appends them.
_TRIP = (("trip_id", "trip_id"), ("route_id", "route_id"), ("direction_id", "direction_id"),
         ("start_time", "start_time"), ("start_date", "start_date"),
         ("schedule_relationship", "schedule_relationship"))  # fmt: skip
_VDESC = (("vehicle_id", "id"), ("vehicle_label", "label"))
_POS = (("latitude", "latitude"), ("longitude", "longitude"), ("bearing", "bearing"),
        ("speed", "speed"), ("odometer", "odometer"))  # fmt: skip
_VP = (("stop_id", "stop_id"), ("current_stop_sequence", "current_stop_sequence"),
       ("current_status", "current_status"), ("congestion_level", "congestion_level"),
       ("occupancy_status", "occupancy_status"),
       ("vehicle_timestamp_raw", "timestamp"))  # fmt: skip

_ENTITY = (("entity_id", "id"), ("is_deleted", "is_deleted"))
#: The VehiclePosition's sub-messages and their fields.
_SUBS = (
    ("trip", _TRIP, pb.TripDescriptor),
    ("vehicle", _VDESC, pb.VehicleDescriptor),
    ("position", _POS, pb.Position),
)


@dataclass(frozen=True)
class EntityColumns:
    """The per-entity columns of one snapshot, from either extraction path.

    Attributes:
        arrays: One array per name in :data:`ENTITY_COLUMNS`, typed as in
            :data:`transitnet.schema.POSITION_FIELDS`, one row per VehiclePosition entity.
        n_entities: All entities, of any kind.
        n_trip_updates: Entities carrying a TripUpdate.
        n_alerts: Entities carrying an Alert.
        n_invalid_utf8: String values that were not valid UTF-8 (stored backslash-escaped).
        verified_initialized: True when the extraction itself confirmed that every
            ``required`` field is present (the C path, on VehiclePositions-only feeds), so
            ``IsInitialized()`` need not run; False means "not checked here".
    """

    arrays: dict[str, pa.Array]
    n_entities: int
    n_trip_updates: int
    n_alerts: int
    n_invalid_utf8: int
    verified_initialized: bool = False

    @property
    def n_rows(self) -> int:
        """Rows, i.e. entities carrying a VehiclePosition."""
        return len(self.arrays["entity_id"])


def extract_columns_python(msg: Any) -> EntityColumns:
    """Read every VehiclePosition field of a parsed FeedMessage, with presence.

    Args:
        msg: A parsed ``gtfs_realtime_pb2.FeedMessage``.

    Returns:
        The columns :data:`ENTITY_COLUMNS`, one row per entity that has a ``vehicle``.
    """
    cols: dict[str, list[Any]] = {name: [] for name in ENTITY_COLUMNS}
    bound = _Appenders(
        entity=_bind(cols, _ENTITY, pb.FeedEntity),
        subs=[(name, _bind(cols, fields, msg_type)) for name, fields, msg_type in _SUBS],
        vp=_bind(cols, _VP, pb.VehiclePosition),
    )
    n_tu = n_alerts = 0
    for entity in msg.entity:
        n_tu += entity.HasField("trip_update")
        n_alerts += entity.HasField("alert")
        if entity.HasField("vehicle"):
            _read_row(entity, bound)
    arrays, n_invalid = _to_arrays(cols)
    return EntityColumns(arrays, len(msg.entity), n_tu, n_alerts, n_invalid)


_Bound = list[tuple[Any, str, Any]]


@dataclass(frozen=True)
class _Appenders:
    """``(list.append, proto field, default)`` per message level, bound once per snapshot."""

    entity: _Bound
    subs: list[tuple[str, _Bound]]
    vp: _Bound


def _bind(cols: dict[str, list[Any]], fields: tuple[tuple[str, str], ...], message: Any) -> _Bound:
    """``(append, field, default)`` triples; defaults come from the proto (not always 0)."""
    by_name = message.DESCRIPTOR.fields_by_name
    return [(cols[c].append, f, by_name[f].default_value) for c, f in fields]


def _read_row(entity: Any, bound: _Appenders) -> None:
    """Append one row: each field's value, or None when it (or its sub-message) is absent.

    ``HasField`` is called only when the value equals the field's default (which is not
    always 0: ``current_status`` defaults to ``IN_TRANSIT_TO`` = 2).
    """
    for append, field, default in bound.entity:
        value = getattr(entity, field)
        append(value if value != default or entity.HasField(field) else None)
    vp = entity.vehicle
    for name, appenders in bound.subs:
        if not vp.HasField(name):
            for append, _, _ in appenders:
                append(None)
            continue
        sub = getattr(vp, name)
        for append, field, default in appenders:
            value = getattr(sub, field)
            append(value if value != default or sub.HasField(field) else None)
    for append, field, default in bound.vp:
        value = getattr(vp, field)
        append(value if value != default or vp.HasField(field) else None)


def _to_arrays(cols: dict[str, list[Any]]) -> tuple[dict[str, pa.Array], int]:
    """Typed arrays from the value lists; returns them and the count of invalid-UTF-8 strings."""
    arrays: dict[str, pa.Array] = {}
    n_invalid = 0
    for name, values in cols.items():
        if name == "direction_id":
            arrays[name] = pa.array(values, type=pa.uint32()).view(pa.int32())
            continue
        try:
            arrays[name] = pa.array(values, type=_TYPES[name])
        except pa.ArrowInvalid:
            if _TYPES[name] != pa.string():
                raise
            fixed, count = fix_invalid_utf8(values)
            arrays[name] = pa.array(fixed, type=pa.string())
            n_invalid += count
    return arrays, n_invalid


def fix_invalid_utf8(values: list[Any]) -> tuple[list[str | None], int]:
    """Decode the ``bytes`` items (strings protobuf found not to be UTF-8), backslash-escaped.

    Returns:
        The list with every item a ``str`` or None, and how many items were replaced.
    """
    count = 0
    fixed: list[str | None] = []
    for value in values:
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="backslashreplace")
            count += 1
        fixed.append(value)
    return fixed, count
