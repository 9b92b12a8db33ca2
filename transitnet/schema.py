"""Column names and Arrow schemas for every table transitnet stores.

Positions use GTFS-realtime field names. Every optional protobuf field is nullable:
a field the feed did not set is stored as null, never as protobuf's default 0.
All timestamps are tz-aware UTC with microsecond resolution; the raw uint64 values
from the feed are kept beside them so nothing is lost to interpretation.
"""

from __future__ import annotations

import pyarrow as pa

UTC_TS = pa.timestamp("us", tz="UTC")

#: Decoded VehiclePosition columns, in storage order (without the rule flags).
POSITION_FIELDS: list[pa.Field] = [
    pa.field("feed_id", pa.string(), nullable=False),
    pa.field("entity_id", pa.string()),
    pa.field("vehicle_id", pa.string()),
    pa.field("vehicle_label", pa.string()),
    pa.field("trip_id", pa.string()),
    pa.field("route_id", pa.string()),
    pa.field("direction_id", pa.int32()),
    pa.field("start_time", pa.string()),
    pa.field("start_date", pa.string()),
    pa.field("schedule_relationship", pa.int32()),
    pa.field("latitude", pa.float64()),
    pa.field("longitude", pa.float64()),
    pa.field("bearing", pa.float64()),
    pa.field("speed", pa.float64()),
    pa.field("odometer", pa.float64()),
    pa.field("stop_id", pa.string()),
    pa.field("current_stop_sequence", pa.int64()),
    pa.field("current_status", pa.int32()),
    pa.field("congestion_level", pa.int32()),
    pa.field("occupancy_status", pa.int32()),
    pa.field("vehicle_timestamp", UTC_TS),
    pa.field("vehicle_timestamp_raw", pa.uint64()),
    pa.field("header_timestamp", UTC_TS),
    pa.field("header_timestamp_raw", pa.uint64()),
    pa.field("header_version", pa.string()),
    pa.field("header_incrementality", pa.int32()),
    pa.field("is_deleted", pa.bool_()),
    pa.field("fetched_at", UTC_TS),
    pa.field("source_file", pa.string()),
]

POSITION_COLUMNS: list[str] = [f.name for f in POSITION_FIELDS]

#: Reference-validator rules that concern a VehiclePositions consumer and need only the
#: VehiclePositions feed plus (optionally) the static feed. W003/E047 need TripUpdates.
VP_RULES: tuple[str, ...] = (
    "E001", "E003", "E004", "E006", "E011", "E012", "E013", "E015", "E016", "E017",
    "E018", "E019", "E020", "E021", "E023", "E024", "E026", "E027", "E028", "E029",
    "E035", "E038", "E039", "E048", "E049", "E050", "E052",
    "W001", "W002", "W004", "W005", "W006", "W007", "W008", "W009",
)  # fmt: skip

#: Rules evaluated only when a static GTFS feed is given (frequencies.txt decides E006,
#: E013, E019 and W005; shapes/stops decide E028 and E029).
STATIC_RULES: frozenset[str] = frozenset(
    {
        "E003",
        "E004",
        "E006",
        "E011",
        "E013",
        "E015",
        "E016",
        "E019",
        "E023",
        "E024",
        "E028",
        "E029",
        "E035",
        "W005",
    }
)


def flag_column(rule: str) -> str:
    """Return the boolean column name for a validator rule id, e.g. ``E026`` → ``flag_e026``."""
    return f"flag_{rule.lower()}"


FLAG_COLUMNS: list[str] = [flag_column(r) for r in VP_RULES]

#: Columns some backfilled archives carry beyond GTFS-realtime (null for polled feeds):
#: CapMetrics rows name their trip's headsign, which matches old trips to shapes.
EXTRA_POSITION_FIELDS: list[pa.Field] = [pa.field("trip_headsign", pa.string())]

#: The stored positions schema: decoded columns, the backfill extras, and one boolean flag
#: per rule. A flag is null when the rule could not be evaluated (e.g. no static feed given).
POSITIONS_SCHEMA = pa.schema(
    POSITION_FIELDS + EXTRA_POSITION_FIELDS + [pa.field(c, pa.bool_()) for c in FLAG_COLUMNS]
)

#: Row-dedup key (vehicle id falls back to label, then entity id: see ``vehicle_key``).
DEDUP_KEY: tuple[str, ...] = ("feed_id", "vehicle_key", "vehicle_timestamp_raw", "trip_id",
                              "start_time")  # fmt: skip

#: One row per fetch attempt, failures included.
FETCH_LOG_SCHEMA = pa.schema(
    [
        pa.field("feed_id", pa.string(), nullable=False),
        pa.field("attempt", pa.int32(), nullable=False),
        pa.field("scheduled_tick", UTC_TS),
        pa.field("started_at", UTC_TS, nullable=False),
        pa.field("duration_s", pa.float64()),
        pa.field("http_status", pa.int32()),
        pa.field("bytes", pa.int64()),
        pa.field("sha256", pa.string()),
        pa.field("header_timestamp", UTC_TS),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("error_class", pa.string()),
        pa.field("error", pa.string()),
        pa.field("raw_path", pa.string()),
        pa.field("rows", pa.int64()),
        pa.field("rules", pa.list_(pa.string())),
        pa.field("rows_written", pa.int64()),
        pa.field("slippage_s", pa.float64()),
        pa.field("header_age_s", pa.float64()),
        pa.field("vehicle_age_p90_s", pa.float64()),
        pa.field("final_url", pa.string()),
    ]
)
