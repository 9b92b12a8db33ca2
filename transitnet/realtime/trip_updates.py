"""Decode GTFS-realtime TripUpdates into stop events and derive observed arrivals.

A TripUpdates snapshot carries, per trip, ``stop_time_update`` entries with arrival and
departure times. Times in the past of the snapshot are observations; times in its future
are predictions. Auckland Transport publishes exactly one update per trip and snapshot:
the latest stop event the vehicle has produced (an arrival or a departure, with the
actual time and its delay).

Every optional protobuf field is read with presence (``HasField``): an unset field is
null, never protobuf's default 0. Bad bodies (empty, HTML, truncated, not protobuf)
raise :class:`~transitnet.realtime.decode.FeedDecodeError`; the archive reader counts
them per kind and goes on.

Stop event columns (:data:`STOP_EVENT_COLUMNS`): ``snapshot_time`` (header timestamp,
UTC), ``trip_id, route_id, start_date, start_time, vehicle_id, stop_id,
stop_sequence`` (Int64), ``arrival_time, departure_time`` (UTC), ``arrival_delay_s,
departure_delay_s`` (Int64), ``update_time`` (the TripUpdate's own timestamp, UTC),
``source_file``.
"""

from __future__ import annotations

import bz2
import gzip
import io
import logging
import lzma
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from transitnet.realtime.decode import FeedDecodeError, decompress_body, parse_feed_message

logger = logging.getLogger(__name__)

STOP_EVENT_COLUMNS: tuple[str, ...] = (
    "snapshot_time",
    "trip_id",
    "route_id",
    "start_date",
    "start_time",
    "vehicle_id",
    "stop_id",
    "stop_sequence",
    "arrival_time",
    "arrival_delay_s",
    "departure_time",
    "departure_delay_s",
    "update_time",
    "source_file",
)
_TIME_COLUMNS = ("snapshot_time", "arrival_time", "departure_time", "update_time")
_INT_COLUMNS = ("stop_sequence", "arrival_delay_s", "departure_delay_s")

#: Observed arrival columns (see :func:`derive_observed_arrivals`).
OBSERVED_COLUMNS: tuple[str, ...] = (
    "trip_id",
    "route_id",
    "vehicle_id",
    "start_date",
    "stop_id",
    "stop_sequence",
    "observed_time",
    "source",
    "first_seen",
    "n_reports",
    "spread_s",
)


class ArchiveError(ValueError):
    """A tar archive of snapshots that is broken or truncated part-way."""


@dataclass
class TripUpdateRead:
    """Stop events read from many snapshots, with what could not be read.

    Attributes:
        events: One row per stop_time_update (:data:`STOP_EVENT_COLUMNS`).
        n_snapshots: Snapshots decoded.
        failures: ``FeedDecodeError`` kind → number of snapshots that failed.
        failed_files: ``(file name, kind)`` of every failed snapshot.
    """

    events: pd.DataFrame
    n_snapshots: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    failed_files: list[tuple[str, str]] = field(default_factory=list)


def _opt(msg: Any, name: str) -> Any:
    return getattr(msg, name) if msg.HasField(name) else None


def _event_time(msg: Any, name: str) -> tuple[int | None, int | None]:
    """``(time, delay)`` of a StopTimeEvent field, None where unset."""
    if not msg.HasField(name):
        return None, None
    event = getattr(msg, name)
    return _opt(event, "time"), _opt(event, "delay")


def _rows_of_entity(entity: Any, snapshot: int | None, source: str | None) -> list[tuple[Any, ...]]:
    tu = entity.trip_update
    trip = tu.trip
    vehicle = _opt(tu.vehicle, "id") if tu.HasField("vehicle") else None
    head = (
        snapshot,
        _opt(trip, "trip_id"),
        _opt(trip, "route_id"),
        _opt(trip, "start_date"),
        _opt(trip, "start_time"),
        vehicle,
    )
    rows = []
    for stu in tu.stop_time_update:
        arrival, arrival_delay = _event_time(stu, "arrival")
        departure, departure_delay = _event_time(stu, "departure")
        rows.append(
            (
                *head,
                _opt(stu, "stop_id"),
                _opt(stu, "stop_sequence"),
                arrival,
                arrival_delay,
                departure,
                departure_delay,
                _opt(tu, "timestamp"),
                source,
            )
        )
    return rows


def _to_frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    """Typed :data:`STOP_EVENT_COLUMNS` frame from raw tuples (POSIX seconds)."""
    df = pd.DataFrame(rows, columns=list(STOP_EVENT_COLUMNS), dtype=object)
    for col in _TIME_COLUMNS:
        seconds = pd.Series(df[col], dtype="Int64")
        df[col] = pd.to_datetime(seconds, unit="s", utc=True)
    for col in _INT_COLUMNS:
        df[col] = pd.Series(df[col], dtype="Int64")
    for col in set(STOP_EVENT_COLUMNS) - set(_TIME_COLUMNS) - set(_INT_COLUMNS):
        df[col] = df[col].astype("string")
    return df


def decode_trip_updates(body: bytes, *, source_file: str | None = None) -> pd.DataFrame:
    """Decode one (possibly gzip/bzip2-compressed) TripUpdates snapshot.

    Args:
        body: The raw bytes of one FeedMessage.
        source_file: Name kept in the ``source_file`` column.

    Returns:
        One row per stop_time_update (:data:`STOP_EVENT_COLUMNS`); entities without a
        TripUpdate (positions, alerts) are ignored.

    Raises:
        FeedDecodeError: When the body is empty, HTML, truncated or not a FeedMessage.
    """
    msg = parse_feed_message(decompress_body(body))
    snapshot = _opt(msg.header, "timestamp")
    rows: list[tuple[Any, ...]] = []
    for entity in msg.entity:
        if entity.HasField("trip_update"):
            rows.extend(_rows_of_entity(entity, snapshot, source_file))
    return _to_frame(rows)


def iter_snapshot_bodies(path: Path) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, bytes)`` of every ``.pb`` snapshot in a tar archive, folder or file.

    Tar archives (any compression tarfile reads, e.g. ``.tar.xz``) are streamed member
    by member, never unpacked to disk. Folders are read in name order.

    Raises:
        FileNotFoundError: When ``path`` does not exist.
        ValueError: When ``path`` is a file that is neither a tar archive nor a snapshot.
        ArchiveError: When a tar archive breaks off (after yielding the members before).
    """
    if not path.exists():
        raise FileNotFoundError(f"no TripUpdates archive or folder at {path}")
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            yield file.name, file.read_bytes()
        return
    if not tarfile.is_tarfile(path):
        if path.suffix in (".pb", ".gz", ".bz2", ".bin") or not path.suffix:
            yield path.name, path.read_bytes()
            return
        raise ValueError(f"{path} is neither a tar archive, a folder nor a .pb snapshot")
    try:
        with _open_decompressed(path) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            for member in tar:
                handle = tar.extractfile(member) if member.isfile() else None
                if handle is not None:
                    yield Path(member.name).name, handle.read()
            raw.read()  # to the end of the compressed stream: a truncated one raises here
    except (tarfile.TarError, lzma.LZMAError, zlib.error, EOFError, OSError) as exc:
        raise ArchiveError(f"{path}: the archive is broken or truncated ({exc})") from exc


def _open_decompressed(path: Path) -> io.BufferedIOBase:
    """Open ``path`` through xz/gzip/bzip2 by its magic bytes (plain when none matches).

    The decompressors raise ``EOFError`` on a stream cut short, which tarfile's own
    stream mode would take for the end of the archive.
    """
    with path.open("rb") as f:
        head = f.read(6)
    if head.startswith(b"\xfd7zXZ"):
        return lzma.open(path, "rb")
    if head.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rb")
    if head.startswith(b"BZh"):
        return bz2.open(path, "rb")
    return path.open("rb")


def read_trip_updates(path: Path, *, limit: int | None = None) -> TripUpdateRead:
    """Decode every snapshot of a tar archive or folder of TripUpdates ``.pb`` files.

    A snapshot that fails to decode is logged, counted per
    :class:`~transitnet.realtime.decode.FeedDecodeError` kind and skipped; the others
    are read. An archive that breaks off part-way (truncated download) keeps the
    snapshots before the break and is counted as ``archive_broken`` (logged as an error).

    Args:
        path: A tar archive (``.tar``, ``.tar.xz``, ``.tar.gz``), a folder, or one file.
        limit: Read only the first ``limit`` snapshots (None: all).

    Returns:
        The stop events of all snapshots (:data:`STOP_EVENT_COLUMNS`) and the failures.
    """
    read = TripUpdateRead(_to_frame([]))
    frames: list[pd.DataFrame] = []
    bodies = iter_snapshot_bodies(Path(path))
    try:
        for name, body in tqdm(bodies, desc="TripUpdates", unit=" snapshots", leave=False):
            if limit is not None and read.n_snapshots + len(read.failed_files) >= limit:
                break
            _decode_into(read, frames, name, body)
    except ArchiveError as exc:
        _count_failure(read, Path(path).name, "archive_broken")
        logger.error("%s; keeping the %d snapshots read before", exc, read.n_snapshots)
    if frames:
        read.events = pd.concat(frames, ignore_index=True)
    logger.info(
        "%s: %d snapshots, %d stop events, failures %s",
        path, read.n_snapshots, len(read.events), read.failures,
    )  # fmt: skip
    return read


def _count_failure(read: TripUpdateRead, name: str, kind: str) -> None:
    read.failures[kind] = read.failures.get(kind, 0) + 1
    read.failed_files.append((name, kind))


def _decode_into(read: TripUpdateRead, frames: list[pd.DataFrame], name: str, body: bytes) -> None:
    """Decode one snapshot into ``frames``, or count its failure in ``read``."""
    try:
        frames.append(decode_trip_updates(body, source_file=name))
        read.n_snapshots += 1
    except FeedDecodeError as exc:
        _count_failure(read, name, exc.kind)
        logger.warning("%s: skipped, %s", name, exc)


def derive_observed_arrivals(events: pd.DataFrame) -> pd.DataFrame:
    """One observed arrival per (trip, service start date, stop, stop sequence).

    Rule. A stop event is an observation when its time is at or before the snapshot's
    header timestamp (``update_time`` when the header has none); later times are
    predictions and are left out. Of the observations of one stop visit:

    1. an arrival time wins over a departure time (the vehicle reaches the stop position
       at its arrival; a departure is up to the dwell later, median 28 s in Auckland);
       a visit with departures only (buses passing without a recorded arrival: about
       half of Auckland's) keeps the departure, with ``source="departure"``;
    2. the first snapshot in which the visit appears gives the time. It is published
       closest to the event (median 17 s after it in Auckland), and later snapshots
       mostly repeat it; ``n_reports`` and ``spread_s`` (max − min of the reported
       times) say how much the reports disagreed.

    Args:
        events: :data:`STOP_EVENT_COLUMNS` rows (from :func:`read_trip_updates`).

    Returns:
        :data:`OBSERVED_COLUMNS`: ``observed_time`` (UTC), ``source``
        (``"arrival"``/``"departure"``), ``first_seen`` (the snapshot time), ``n_reports``,
        ``spread_s``; the id columns as in ``events``.
    """
    long = _observations(events)
    keys = ["trip_id", "start_date", "stop_id", "stop_sequence"]
    long = long.sort_values(["rank", "first_seen"], kind="stable")
    grouped = long.groupby([*keys, "source"], dropna=False, sort=False)["observed_time"]
    spread = (grouped.transform("max") - grouped.transform("min")).dt.total_seconds()
    long = long.assign(spread_s=spread, n_reports=grouped.transform("size"))
    out = long.drop_duplicates(keys, keep="first").reset_index(drop=True)
    logger.info(
        "observed arrivals: %d stop visits (%d from departures)",
        len(out),
        int((out["source"] == "departure").sum()),
    )
    return out[list(OBSERVED_COLUMNS)]


def _observations(events: pd.DataFrame) -> pd.DataFrame:
    """Arrival and departure events at or before their snapshot, stacked (one per row).

    Columns: ``events``'s plus ``observed_time``, ``source``, ``rank`` (0 arrival,
    1 departure) and ``first_seen`` (the reference time of the snapshot).
    """
    reference = events["snapshot_time"].fillna(events["update_time"])
    parts = []
    for rank, kind in enumerate(("arrival", "departure")):
        times = events[f"{kind}_time"]
        seen = (times.notna() & reference.notna() & (times <= reference)).to_numpy(bool)
        n_future = int((times > reference).sum())
        if n_future:
            logger.info("%d %s times after their snapshot (predictions) left out", n_future, kind)
        part = events[seen & events["trip_id"].notna().to_numpy(bool)]
        parts.append(
            part.assign(
                observed_time=part[f"{kind}_time"],
                source=kind,
                rank=rank,
                first_seen=reference[part.index],
            )
        )
    return pd.concat(parts, ignore_index=True)
