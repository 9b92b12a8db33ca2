"""Feed-level (header and cross-snapshot) rules of the reference GTFS-realtime validator.

These rules look at one snapshot's ``FeedHeader`` and at the previous snapshot's header
timestamp. They reproduce MobilityData's gtfs-realtime-validator (``HeaderValidator`` and
the header half of ``TimestampValidator``) decision for decision, thresholds included:

- ``W001`` header timestamp missing (or 0) in a feed below version 2.0;
- ``E048`` header timestamp missing (or 0) in a version 2.0+ feed (or an unparseable version);
- ``E001`` header timestamp outside the POSIX seconds window 2005-01-01 .. 2033-02-10;
- ``W008`` header more than 65 s older than "now" (milliseconds, strictly greater);
- ``E050`` header more than 60 whole seconds ahead of "now";
- ``E017`` same header timestamp as the previous snapshot while the bytes changed;
- ``E018`` header timestamp lower than the previous snapshot's;
- ``W007`` more than 35 s between consecutive header timestamps;
- ``E038`` ``gtfs_realtime_version`` other than ``"1.0"`` or ``"2.0"``;
- ``E049`` incrementality missing in a version 2.0+ feed.

Timestamps are compared as Java ``long`` values, as the reference does: an unset field
reads as 0, and a uint64 above 2**63 wraps to a negative number (which then fails E001).
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta

import numpy as np

from transitnet.realtime.decode import FeedHeader

#: Smallest POSIX timestamp accepted by E001 (2005-01-01T00:00:00Z).
MIN_POSIX_TIME = 1_104_537_600
#: Largest POSIX timestamp accepted by E001 (2033-02-10T...Z).
MAX_POSIX_TIME = 1_991_620_134
#: W008: a header older than this many seconds is stale.
MAX_HEADER_AGE_S = 65
#: E050: a timestamp more than this many whole seconds ahead of "now" is in the future.
IN_FUTURE_TOLERANCE_S = 60
#: W007: consecutive header timestamps further apart than this are a slow refresh.
MAX_REFRESH_INTERVAL_S = 35
#: E038: the only accepted ``gtfs_realtime_version`` values.
VALID_VERSIONS = frozenset({"1.0", "2.0"})

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_JAVA_FLOAT = re.compile(
    r"[+-]?(?:NaN|Infinity|(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
    r"|0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?\d+)[fFdD]?)"
)
_JAVA_WHITESPACE = "".join(chr(c) for c in range(33))


def to_java_long(raw: int | None) -> int:
    """Return a uint64 protobuf value as Java's ``getX()`` long sees it (unset reads as 0)."""
    if raw is None:
        return 0
    return raw - (1 << 64) if raw >= (1 << 63) else raw


def to_epoch_millis(now: datetime) -> int:
    """Return a tz-aware ``now`` as integer epoch milliseconds (floor), like ``currentTimeMillis``.

    Raises:
        ValueError: when ``now`` is naive.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"'now' must be timezone-aware, got naive {now!r}")
    return (now - _EPOCH) // timedelta(milliseconds=1)


def is_posix(timestamp: int) -> bool:
    """Return True when ``timestamp`` lies in the validator's POSIX window (E001)."""
    return MIN_POSIX_TIME <= timestamp <= MAX_POSIX_TIME


def is_in_future(now_ms: int, timestamp: int) -> bool:
    """Return True when ``timestamp`` (s) is more than 60 whole seconds after ``now_ms`` (E050)."""
    age_ms = now_ms - timestamp * 1000
    return age_ms < 0 and (-age_ms) // 1000 > IN_FUTURE_TOLERANCE_S


def parse_java_float(text: str | None) -> float | None:
    """Parse ``text`` as Java's ``Float.parseFloat`` would (to float32); None where it throws."""
    if text is None:
        return None
    stripped = text.strip(_JAVA_WHITESPACE)
    if not _JAVA_FLOAT.fullmatch(stripped):
        return None
    body = stripped if stripped.endswith(("NaN", "Infinity")) else stripped.rstrip("fFdD")
    if "x" in body.lower():
        sign = -1.0 if body.startswith("-") else 1.0
        value = sign * float.fromhex(body.lstrip("+-"))
    else:
        value = float(body.replace("Infinity", "inf"))
    with np.errstate(over="ignore"):
        return float(np.float32(value))


@functools.lru_cache(maxsize=64)
def is_v2_or_higher(version: str | None) -> bool | None:
    """Return whether the header version parses to >= 2.0; None where Java's parse throws."""
    value = parse_java_float(version)
    return None if value is None else value >= 2.0


def compute_header_rules(
    header: FeedHeader, *, now_ms: int, previous_timestamp: int | None
) -> list[str]:
    """Return the feed-level rule ids one snapshot's header raises, in a stable order.

    Args:
        header: The snapshot's header (version, incrementality, raw timestamp).
        now_ms: "Now" in epoch milliseconds (the fetch time, or a file's mtime in replays).
        previous_timestamp: The previous distinct snapshot's header timestamp as a Java long
            (0 when it had none), or None when there is no previous snapshot to compare to.

    Returns:
        Rule ids among E001, E017, E018, E038, E048, E049, E050, W001, W007, W008.
    """
    rules = _check_version(header)
    timestamp = to_java_long(header.timestamp_raw)
    if timestamp == 0:
        v2 = is_v2_or_higher(header.version)
        rules.append("E048" if v2 is None or v2 else "W001")
        return sorted(rules)
    if not is_posix(timestamp):
        rules.append("E001")
    else:
        if now_ms - timestamp * 1000 > MAX_HEADER_AGE_S * 1000:
            rules.append("W008")
        if is_in_future(now_ms, timestamp):
            rules.append("E050")
    rules.extend(_check_sequence(timestamp, previous_timestamp))
    return sorted(rules)


def _check_version(header: FeedHeader) -> list[str]:
    rules = []
    if header.version is not None and header.version not in VALID_VERSIONS:
        rules.append("E038")
    if is_v2_or_higher(header.version) and header.incrementality is None:
        rules.append("E049")
    return rules


def _check_sequence(timestamp: int, previous: int | None) -> list[str]:
    if previous is None or previous == 0:
        return []
    if timestamp == previous:
        return ["E017"]
    if timestamp < previous:
        return ["E018"]
    if timestamp - previous > MAX_REFRESH_INTERVAL_S:
        return ["W007"]
    return []
