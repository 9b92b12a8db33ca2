"""Type stub for the C extension ``_vpdecode`` (source: ``_vpdecode.c``)."""

from typing_extensions import Buffer

ABI_VERSION: int

#: (null_count, validity bitmap | None, values or int32 offsets, string data | None)
ColumnBuffers = tuple[int, bytes | None, bytes, bytes | None]

def decode(
    body: Buffer, enum_masks: tuple[int, int, int, int], /
) -> tuple[int, int, int, int, int, dict[str, ColumnBuffers]]:
    """Extract VehiclePosition columns from a decompressed FeedMessage.

    Returns ``(n_rows, n_entities, n_trip_updates, n_alerts, n_invalid_utf8, columns)``.

    Raises:
        ValueError: when the bytes are not a well-formed protobuf message.
    """
