"""Flag decoded VehiclePositions snapshots with the reference validator's rules.

:class:`FeedValidator` adds one nullable boolean column per rule of
:data:`transitnet.schema.VP_RULES` (``flag_e001`` ...) to a decoded snapshot, reproducing
MobilityData's gtfs-realtime-validator (the Java reference, commit 7041fa3) flag for flag.
Nothing is dropped: the output has exactly the input's rows.

- Row rules (E026, W002, ...) flag the rows the reference attributes an occurrence to.
- Feed-level rules (header rules, and the cross-snapshot rules E017, E018, W007 that
  compare with the previous distinct snapshot) are broadcast to every row of the
  snapshot and also listed in :attr:`ValidatedSnapshot.snapshot_rules`, so a snapshot
  with no VehiclePosition rows still records them.
- Rules that need the static GTFS feed run through a :class:`StaticChecker`
  (:class:`transitnet.gtfs.static_rules.StaticRuleChecker`); without one their
  columns are null, meaning "not evaluated".

Only VehiclePosition entities and the header are judged here: occurrences the reference
attributes to TripUpdate or Alert entities of a combined feed are not ours.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from google.transit import gtfs_realtime_pb2

from transitnet.realtime.decode import DecodedFeed
from transitnet.realtime.validate_header import (
    compute_header_rules,
    to_epoch_millis,
    to_java_long,
)
from transitnet.realtime.validate_vehicle import (
    Flags,
    column,
    compute_deleted_flags,
    compute_timestamp_flags,
    compute_trip_flags,
    compute_vehicle_flags,
    is_present,
    to_bool,
)
from transitnet.schema import (
    EXTRA_POSITION_FIELDS,
    POSITION_FIELDS,
    POSITIONS_SCHEMA,
    STATIC_RULES,
    VP_RULES,
)

logger = logging.getLogger(__name__)

#: Rules that need the static GTFS feed (frequencies.txt decides E006, E013 and W005).
STATIC_DEPENDENT_RULES: frozenset[str] = STATIC_RULES
#: Version of :meth:`FeedValidator.state_dict`'s layout.
STATE_VERSION = 1
_TRIP_COLUMNS = ("trip_id", "route_id", "direction_id", "start_time", "start_date",
                 "schedule_relationship")  # fmt: skip


class StaticChecker(Protocol):
    """Evaluates the rules that need the static GTFS feed."""

    rules: frozenset[str]

    def check(self, positions: pa.Table) -> dict[str, np.ndarray]:
        """Return one boolean array per rule in :attr:`rules`, aligned with the rows.

        Args:
            positions: Decoded rows (:data:`transitnet.schema.POSITION_COLUMNS`).
        """
        ...


@dataclass(frozen=True)
class ValidatedSnapshot:
    """One validated snapshot.

    Attributes:
        positions: The decoded rows plus every flag column (:data:`POSITIONS_SCHEMA`).
        snapshot_rules: Feed-level rule ids raised by this snapshot (also on its rows).
        rule_counts: Occurrences per rule id (rows flagged, plus one per feed-level rule).
        duplicate: True when the bytes equal the previous snapshot's (state not advanced).
    """

    positions: pa.Table
    snapshot_rules: list[str]
    rule_counts: dict[str, int]
    duplicate: bool = False


class FeedValidator:
    """Validates the successive snapshots of one feed, keeping cross-snapshot state.

    Args:
        feed_id: The feed these snapshots come from (checked on state reload).
        static_checker: Evaluates the static-dependent rules; None leaves them null.
    """

    def __init__(self, feed_id: str, static_checker: StaticChecker | None = None) -> None:
        self.feed_id = feed_id
        self.static_checker = static_checker
        self._previous_timestamp: int | None = None
        self._previous_sha256: str | None = None

    def is_duplicate(self, sha256: str) -> bool:
        """Return True when ``sha256`` is the previous validated snapshot's (skip it)."""
        return self._previous_sha256 is not None and sha256 == self._previous_sha256

    def validate(self, decoded: DecodedFeed, *, now: datetime, sha256: str) -> ValidatedSnapshot:
        """Flag one decoded snapshot and advance the cross-snapshot state.

        A byte-identical repeat of the previous snapshot (same ``sha256``) is flagged for
        its own content but raises no cross-snapshot rule and leaves the state unchanged;
        the reference validator skips such files (see :meth:`is_duplicate`).

        Args:
            decoded: The decoded snapshot; ``decoded.positions`` has the decoded columns.
            now: Tz-aware "now" for the age rules (W008, E050): the fetch time.
            sha256: Hex digest of the raw bytes, for E017 and duplicate detection.

        Returns:
            The rows with every flag column (:data:`POSITIONS_SCHEMA`) and the rule summary.

        Raises:
            ValueError: when ``now`` is naive or the static checker returns malformed flags.
        """
        now_ms = to_epoch_millis(now)
        duplicate = self.is_duplicate(sha256)
        previous = None if duplicate else self._previous_timestamp
        snapshot_rules = compute_header_rules(
            decoded.header, now_ms=now_ms, previous_timestamp=previous
        )
        positions = decoded.positions.combine_chunks()
        flags = self._compute_row_flags(decoded, positions, now_ms)
        if not duplicate:
            self._previous_timestamp = to_java_long(decoded.header.timestamp_raw)
            self._previous_sha256 = sha256
        table, counts = _assemble(positions, flags, snapshot_rules)
        if counts:
            logger.debug("feed %s: rule occurrences %s", self.feed_id, counts)
        return ValidatedSnapshot(table, snapshot_rules, counts, duplicate)

    def state_dict(self) -> dict[str, Any]:
        """Return the cross-snapshot state as a JSON-serialisable dict."""
        return {
            "version": STATE_VERSION,
            "feed_id": self.feed_id,
            "previous_header_timestamp": self._previous_timestamp,
            "previous_sha256": self._previous_sha256,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by :meth:`state_dict`.

        Raises:
            ValueError: when the state is malformed, of another version or another feed.
        """
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported validator state (want version {STATE_VERSION})")
        if state.get("feed_id") != self.feed_id:
            raise ValueError(f"state is for feed {state.get('feed_id')!r}, not {self.feed_id!r}")
        timestamp = state.get("previous_header_timestamp")
        sha256 = state.get("previous_sha256")
        if timestamp is not None and (
            isinstance(timestamp, bool) or not isinstance(timestamp, int)
        ):
            raise ValueError(f"previous_header_timestamp must be an int, got {timestamp!r}")
        if sha256 is not None and not isinstance(sha256, str):
            raise ValueError(f"previous_sha256 must be a string, got {sha256!r}")
        self._previous_timestamp = timestamp
        self._previous_sha256 = sha256

    def _compute_row_flags(self, decoded: DecodedFeed, positions: pa.Table, now_ms: int) -> Flags:
        header_ts = to_java_long(decoded.header.timestamp_raw)
        flags: Flags = {}
        flags.update(compute_vehicle_flags(positions))
        flags.update(compute_timestamp_flags(positions, header_ts, now_ms))
        flags.update(compute_trip_flags(positions, read_trip_presence(decoded, positions)))
        flags.update(compute_deleted_flags(positions, decoded.header.incrementality))
        if self.static_checker is not None:
            flags.update(_run_static_checker(self.static_checker, positions))
            if "E029" in flags and decoded.n_alerts:
                flags["E029"] = flags["E029"] & ~read_detour_exemptions(decoded, positions)
        return flags


def read_trip_presence(decoded: DecodedFeed, positions: pa.Table) -> np.ndarray:
    """Return True per row whose VehiclePosition carries a trip descriptor.

    A row with any trip field set has one. A row with none is ambiguous (an empty
    ``trip {}`` or no trip at all), so only those rows are looked up in the parsed message;
    without a message they count as having no trip.

    Args:
        decoded: The snapshot; ``decoded.message`` is used when present.
        positions: Needs the trip columns (``trip_id`` ... ``schedule_relationship``).
    """
    has_trip = np.zeros(positions.num_rows, dtype=bool)
    for name in _TRIP_COLUMNS:
        has_trip |= is_present(column(positions, name))
    ambiguous = np.flatnonzero(~has_trip)
    if ambiguous.size and decoded.message is not None:
        entities = _vehicle_entities(decoded)
        has_trip[ambiguous] = [entities[i].vehicle.HasField("trip") for i in ambiguous]
    return has_trip


def read_detour_exemptions(decoded: DecodedFeed, positions: pa.Table) -> np.ndarray:
    """Return True per row whose trip_id or route_id a DETOUR alert in the snapshot names.

    The reference lets such vehicles leave their trip's shape (E029 is not raised).

    Args:
        decoded: The snapshot; its Alert entities are read from ``decoded.message``.
        positions: Needs ``trip_id``, ``route_id``.
    """
    trips: set[str] = set()
    routes: set[str] = set()
    for entity in decoded.message.entity if decoded.message is not None else ():
        alert = entity.alert
        if not entity.HasField("alert") or not alert.HasField("effect"):
            continue
        if alert.effect != gtfs_realtime_pb2.Alert.DETOUR:
            continue
        for selector in alert.informed_entity:
            if selector.HasField("trip"):
                trips.add(selector.trip.trip_id)
                routes.add(selector.trip.route_id)
    trip_hit = pc.is_in(
        column(positions, "trip_id"), value_set=pa.array(sorted(trips), pa.string())
    )
    route_hit = pc.is_in(
        column(positions, "route_id"), value_set=pa.array(sorted(routes), pa.string())
    )
    exempt: np.ndarray = to_bool(trip_hit) | to_bool(route_hit)
    return exempt


def _vehicle_entities(decoded: DecodedFeed) -> Any:
    """The VehiclePosition entities, indexable by row (no copy when every entity is one)."""
    entities = decoded.message.entity
    if len(entities) == decoded.positions.num_rows:
        return entities
    return [e for e in entities if e.HasField("vehicle")]


def _run_static_checker(checker: StaticChecker, positions: pa.Table) -> Flags:
    results = checker.check(positions)
    flags: Flags = {}
    for rule, values in results.items():
        array = np.asarray(values)
        if rule not in VP_RULES or array.dtype != np.bool_ or array.shape != (positions.num_rows,):
            raise ValueError(
                f"static checker returned {rule!r} with dtype {array.dtype} and shape "
                f"{array.shape}; want a VP rule with bool[{positions.num_rows}]"
            )
        flags[rule] = array
    return flags


def _assemble(
    positions: pa.Table, flags: Flags, snapshot_rules: list[str]
) -> tuple[pa.Table, dict[str, int]]:
    """Append one flag column per VP rule; return the table and the occurrence counts."""
    n = positions.num_rows
    counts: dict[str, int] = {}
    arrays = [
        positions.column(f.name) if f.name in positions.column_names else pa.nulls(n, f.type)
        for f in POSITION_FIELDS + EXTRA_POSITION_FIELDS
    ]
    constant = {
        None: pa.nulls(n, pa.bool_()),
        False: pa.array(np.zeros(n, dtype=bool)),
        True: pa.array(np.ones(n, dtype=bool)),
    }
    for rule in VP_RULES:
        row_flags = flags.get(rule)
        row_count = int(np.count_nonzero(row_flags)) if row_flags is not None else 0
        feed_level = rule in snapshot_rules
        if row_count or feed_level:
            counts[rule] = row_count + int(feed_level)
        if row_flags is None and rule in STATIC_DEPENDENT_RULES:
            arrays.append(constant[None])
        elif feed_level or row_count == 0:
            arrays.append(constant[feed_level])
        else:
            arrays.append(pa.array(row_flags, type=pa.bool_()))
    return pa.Table.from_arrays(arrays, schema=POSITIONS_SCHEMA), counts
