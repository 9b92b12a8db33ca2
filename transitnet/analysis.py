"""Notebook-facing helpers, part 1: load a feed's positions, raw snapshots and matches.

The analysis API keeps notebooks to narrative and calls. Every function takes a table
first and says which columns it reads and returns:

- :mod:`transitnet.analysis` (this module): read positions, matched positions and raw
  snapshots for a time range; cut a time range out of a recorded archive;
- :mod:`transitnet.analysis_quality`: fields set, rule flags over time, freshness,
  cadence and stale fixes, activity;
- :mod:`transitnet.analysis_matching`: match status and offsets, trajectories,
  headways, naive projection against the matcher;
- :mod:`transitnet.analysis_plots` and :mod:`transitnet.analysis_maps`: figures
  (returned, never shown) and folium maps;
- :mod:`transitnet.analysis_reports` (``metrics.json``, ETA bands) and
  :mod:`transitnet.analysis_experiments` (new-line and classifier reports).

Times: ``start``/``end`` arguments take anything ``pandas.Timestamp`` does; a naive value
is read in the ``timezone`` argument (default UTC). Every returned timestamp is tz-aware
UTC. A fix's time is its ``vehicle_timestamp``, else ``header_timestamp``, else
``fetched_at`` (:func:`compute_fix_times`); a snapshot's clock is ``fetched_at``, else its
header timestamp (:func:`compute_snapshot_times`).
"""

from __future__ import annotations

import logging
import re
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from transitnet.realtime.decode import FeedDecodeError, decode_vehicle_positions
from transitnet.realtime.replay_sources import is_snapshot_name, is_tar_path
from transitnet.schema import POSITION_FIELDS
from transitnet.store.archive import read_meta
from transitnet.store.atomic import write_bytes_atomic
from transitnet.store.layout import POSITIONS_DIR, iter_raw_files, list_partitions, meta_path_for
from transitnet.store.parquet import read_positions, to_pandas

logger = logging.getLogger(__name__)

TimeLike = str | datetime | pd.Timestamp
MATCHED_DIR = "matched"
_RAW_TIME = re.compile(r"(\d{4}-\d{2}-\d{2})T(\d{2}-\d{2}-\d{2})Z")


def to_utc_timestamp(value: TimeLike, timezone: str = "UTC") -> pd.Timestamp:
    """``value`` as a tz-aware UTC Timestamp; a naive value is read in ``timezone``.

    Raises:
        ValueError: when ``value`` is not a time.
    """
    stamp = pd.Timestamp(value)
    if pd.isna(stamp):
        raise ValueError(f"not a time: {value!r}")
    stamp = stamp.tz_localize(timezone) if stamp.tzinfo is None else stamp
    return stamp.tz_convert("UTC")


def _range(
    start: TimeLike | None, end: TimeLike | None, tz: str
) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    lo = to_utc_timestamp(start, tz) if start is not None else None
    hi = to_utc_timestamp(end, tz) if end is not None else None
    if lo is not None and hi is not None and hi <= lo:
        raise ValueError(f"the time range ends ({hi}) before it starts ({lo})")
    return lo, hi


def compute_fix_times(positions: pd.DataFrame) -> pd.Series:
    """Each row's fix time: ``vehicle_timestamp``, else ``header_timestamp``, else ``fetched_at``.

    Columns in: any of those three (tz-aware). Returns a UTC Series aligned with the rows
    (NaT where none is set).
    """
    return _coalesce(positions, ("vehicle_timestamp", "header_timestamp", "fetched_at"))


def compute_snapshot_times(positions: pd.DataFrame) -> pd.Series:
    """Each row's snapshot clock: ``fetched_at``, else ``header_timestamp``, else the fix time."""
    return _coalesce(positions, ("fetched_at", "header_timestamp", "vehicle_timestamp"))


def _coalesce(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    out = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[us, UTC]")
    for column in columns:
        if column in frame.columns:
            out = out.fillna(frame[column].astype("datetime64[us, UTC]"))
    return out


def _select_days(days: list[date], lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> list[date]:
    """Partition days that can hold fixes of ``[lo, hi)`` (one day of slack either side)."""
    first = (lo - pd.Timedelta(days=1)).date() if lo is not None else date.min
    last = (hi + pd.Timedelta(days=1)).date() if hi is not None else date.max
    return [d for d in days if first <= d <= last]


def _in_range(times: pd.Series, lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> np.ndarray:
    keep = times.notna().to_numpy(dtype=bool, copy=True)
    if lo is not None:
        keep &= (times >= lo).fillna(False).to_numpy(dtype=bool)
    if hi is not None:
        keep &= (times < hi).fillna(False).to_numpy(dtype=bool)
    return keep


def read_feed_positions(
    store: Path,
    feed_id: str,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    *,
    timezone: str = "UTC",
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """A feed's stored positions whose fix time lies in ``[start, end)``, in time order.

    Args:
        store: Store root.
        feed_id: The feed.
        start: First time (None: from the beginning).
        end: End of the range, excluded (None: to the end).
        timezone: Zone of naive ``start``/``end`` values.
        columns: Stored columns to return (default all of ``POSITIONS_SCHEMA``).

    Returns:
        ``columns`` (nullable ints/booleans, UTC timestamps), sorted by fix time
        (:func:`compute_fix_times`). Rows with no time at all are left out of a range
        (logged).

    Raises:
        ValueError: when the store holds no positions of ``feed_id`` (the feeds it holds
            are named) or the range is empty.
    """
    lo, hi = _range(start, end, timezone)
    partitions = list_partitions(Path(store), POSITIONS_DIR)
    days = [d for f, d, _ in partitions if f == feed_id]
    if not days:
        feeds = sorted({f for f, _, _ in partitions})
        raise ValueError(f"no positions of feed {feed_id!r} in {store}; feeds there: {feeds}")
    wanted = list(columns) if columns is not None else None
    extra = ["vehicle_timestamp", "header_timestamp", "fetched_at"]
    read_cols = list(dict.fromkeys([*wanted, *extra])) if wanted is not None else None
    frame = read_positions(Path(store), [feed_id], _select_days(days, lo, hi), columns=read_cols)
    return _cut(frame, lo, hi, wanted)


def _cut(frame: pd.DataFrame, lo: pd.Timestamp | None, hi: pd.Timestamp | None,
         wanted: list[str] | None) -> pd.DataFrame:  # fmt: skip
    times = compute_fix_times(frame)
    keep = (
        _in_range(times, lo, hi) if lo is not None or hi is not None else np.ones(len(frame), bool)
    )
    untimed = int(times.isna().sum())
    if untimed and (lo is not None or hi is not None):
        logger.warning("%d rows have no time at all and are outside any range", untimed)
    order = np.argsort(times[keep].to_numpy(dtype="datetime64[us]"), kind="stable")
    out = frame[keep].iloc[order].reset_index(drop=True)
    return out[wanted] if wanted is not None else out


def read_matched_positions(
    store: Path,
    feed_id: str,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    *,
    timezone: str = "UTC",
) -> pd.DataFrame:
    """A feed's matched positions (``DIR/matched/``) whose fix time lies in ``[start, end)``.

    Returns:
        The stored positions columns plus the matcher's (``shape_id, line_key,
        dist_along_m, offset_m, progress, match_status, speed_along_mps, is_stale,
        is_dwell, is_reacquired, delay_s, service_date, trajectory_id``, …), in time order.

    Raises:
        FileNotFoundError: when nothing of the feed is matched (run ``transitnet match``).
        ValueError: for an empty range.
    """
    lo, hi = _range(start, end, timezone)
    root = Path(store) / MATCHED_DIR / f"feed={feed_id}"
    found = [p for p in sorted(root.glob("date=*/*.parquet")) if not p.name.startswith(".")]
    files = {date.fromisoformat(p.parent.name.removeprefix("date=")): p for p in found}
    if not files:
        raise FileNotFoundError(f"no matched positions of feed {feed_id!r} under {root}; "
                                "run `transitnet match` (or match_store) first")  # fmt: skip
    chosen = [files[d] for d in _select_days(sorted(files), lo, hi)]
    frames = [to_pandas(pq.read_table(p)) for p in chosen]
    frame = (
        pd.concat(frames, ignore_index=True)
        if frames
        else to_pandas(pq.read_table(files[min(files)]))[:0]
    )
    return _cut(frame, lo, hi, None)


def extract_snapshots(
    archive: Path, out_dir: Path, *, first: str | None = None, stop: str | None = None
) -> list[Path]:
    """Copy an archive's raw snapshots whose file names sort in ``[first, stop)`` to ``out_dir``.

    Recorded archives name snapshots by time (``vehicle_locations_20190813070001.pb``),
    so a name range is a time range: ``first="vehicle_locations_20190813070000"``,
    ``stop="vehicle_locations_20190813080000"`` is 07:00-08:00. Reading a tar stops at the
    first name past ``stop`` while the names come sorted, so an early hour of a day's tar
    needs only its start decompressed.

    Args:
        archive: A tar (``.tar``, ``.tar.gz``, ``.tar.xz``, ...) or a folder of snapshots.
        out_dir: Destination folder (created); files are written atomically.
        first: Smallest base name kept (None: from the first).
        stop: Base names from this one on are left out (None: to the last).

    Returns:
        The files written, in name order.

    Raises:
        FileNotFoundError: when ``archive`` does not exist.
        ValueError: for a file that is not a tar, a truncated tar, or a range that holds
            no snapshot.
    """
    archive = Path(archive)
    if not archive.exists():
        raise FileNotFoundError(f"no such archive: {archive}")
    if archive.is_dir():
        found = [(p.name, p.read_bytes) for p in sorted(archive.rglob("*"), key=lambda p: p.name)
                 if p.is_file() and is_snapshot_name(p.name)]  # fmt: skip
        written = [_keep(out_dir, n, read()) for n, read in found if _wanted(n, first, stop)]
    elif is_tar_path(archive):
        written = _extract_tar(archive, out_dir, first, stop)
    else:
        raise ValueError(f"{archive}: not a tar archive nor a folder of snapshots")
    if not written:
        raise ValueError(f"{archive}: no snapshot named in [{first}, {stop})")
    logger.info("extracted %d snapshots from %s to %s", len(written), archive, out_dir)
    return written


def _wanted(name: str, first: str | None, stop: str | None) -> bool:
    return (first is None or name >= first) and (stop is None or name < stop)


def _keep(out_dir: Path, name: str, body: bytes) -> Path:
    path = Path(out_dir) / name
    write_bytes_atomic(path, body)
    return path


def _extract_tar(archive: Path, out_dir: Path, first: str | None, stop: str | None) -> list[Path]:
    written: list[Path] = []
    previous = ""
    try:
        with tarfile.open(archive) as tar:
            for member in tar:
                name = member.name.rsplit("/", 1)[-1]
                if not member.isfile() or not is_snapshot_name(name):
                    continue
                if stop is not None and name >= stop and name >= previous:
                    break  # sorted so far: nothing later can fall in the range
                previous = max(previous, name)
                handle = tar.extractfile(member)
                if handle is not None and _wanted(name, first, stop):
                    written.append(_keep(out_dir, name, handle.read()))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ValueError(f"{archive}: unreadable or truncated tar ({exc})") from exc
    return written


@dataclass
class RawSnapshots:
    """Every row of archived raw snapshots, re-published fixes included.

    Attributes:
        rows: Decoded positions (``POSITION_COLUMNS``), one row per entity of every
            snapshot; ``fetched_at`` is our fetch clock, null for recorded archives
            (their archive clock is only the header timestamp); ``source_file`` is the raw
            file relative to the store.
        failed: ``(raw file, error kind, message)`` for snapshots that did not decode.
    """

    rows: pd.DataFrame
    failed: list[tuple[str, str, str]] = field(default_factory=list)


def read_raw_snapshots(
    store: Path,
    feed_id: str,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    *,
    timezone: str = "UTC",
    progress: bool = False,
) -> RawSnapshots:
    """Decode the raw snapshots a feed archived in ``[start, end)`` (archive clock).

    The positions store keeps a fix once, in the first snapshot that carried it; this
    reads what every snapshot really published, as freshness needs (a re-published old
    fix is what makes a feed stale).

    Args:
        store: Store root.
        feed_id: The feed.
        start: First archive time (None: from the first snapshot).
        end: End of the range, excluded (None: to the last).
        timezone: Zone of naive ``start``/``end`` values.
        progress: Show a progress bar.

    Returns:
        Rows and failures (see :class:`RawSnapshots`); a snapshot that does not decode
        is listed in ``failed``, never dropped silently.

    Raises:
        ValueError: for an empty range.
    """
    lo, hi = _range(start, end, timezone)
    rows: list[pa.Table] = []
    failed: list[tuple[str, str, str]] = []
    files = iter_raw_files(Path(store), feed_id)
    for path in tqdm(files, desc="decode raw snapshots", unit="snap", disable=not progress):
        source = path.relative_to(store).as_posix()
        meta = _read_meta(path)
        clock = _archive_time(meta, path)
        if clock is None:
            failed.append((source, "no_time", "no fetch time in its meta nor its name"))
        elif (lo is None or clock >= lo) and (hi is None or clock < hi):
            headers = meta.get("headers")
            recorded = isinstance(headers, dict) and "X-Transitnet-Archive-Clock" in headers
            decoded = _decode_raw(path, feed_id, None if recorded else clock, source)
            if isinstance(decoded, pa.Table):
                rows.append(decoded)
            else:
                failed.append(decoded)
    if failed:
        logger.warning("%d raw snapshots did not decode (see RawSnapshots.failed)", len(failed))
    table = pa.concat_tables(rows) if rows else pa.schema(POSITION_FIELDS).empty_table()
    return RawSnapshots(to_pandas(table), failed)


def _decode_raw(
    path: Path, feed_id: str, fetched_at: pd.Timestamp | None, source: str
) -> pa.Table | tuple[str, str, str]:
    """The rows of one raw snapshot, or ``(source, error kind, message)``."""
    try:
        body = path.read_bytes()
        when = fetched_at.to_pydatetime() if fetched_at is not None else None
        decoded = decode_vehicle_positions(
            body, feed_id=feed_id, fetched_at=when, source_file=source
        )
    except FeedDecodeError as exc:
        return (source, exc.kind, str(exc))
    except OSError as exc:
        return (source, "unreadable", str(exc))
    positions: pa.Table = decoded.positions
    return positions


def _read_meta(path: Path) -> dict[str, object]:
    meta_path = meta_path_for(path.with_suffix(""))
    try:
        return read_meta(meta_path) if meta_path.is_file() else {}
    except (OSError, ValueError) as exc:
        logger.warning("%s: unreadable meta (%s); using the name's time", meta_path, exc)
        return {}


def _archive_time(meta: dict[str, object], path: Path) -> pd.Timestamp | None:
    """The meta's ``fetched_at``, else the UTC time in the name ``<feed>-YYYY-MM-DDTHH-MM-SSZ``."""
    value = meta.get("fetched_at")
    if isinstance(value, str) and value:
        return to_utc_timestamp(value)
    found = _RAW_TIME.search(path.name)
    if found is None:
        return None
    day, clock = found.group(1), found.group(2).replace("-", ":")
    return to_utc_timestamp(f"{day}T{clock}")


def resolve_paths(data: str | Path, work: str | Path | None, name: str) -> tuple[Path, Path]:
    """A notebook's data folder (checked) and work folder (a new temporary one if None).

    Args:
        data: The recorded data folder (``../shared/data`` seen from the project root).
        work: Where the notebook writes stores and outputs; None makes a temporary folder.
        name: Prefix of the temporary folder's name.

    Returns:
        ``(data, work)`` as absolute paths; ``work`` exists.

    Raises:
        FileNotFoundError: when ``data`` holds no ``README.md`` (not the data folder).
    """
    data_path = Path(data).resolve()
    if not (data_path / "README.md").is_file():
        raise FileNotFoundError(f"{data_path} is not the recorded data folder (no README.md); "
                                "set DATA in the parameters cell")  # fmt: skip
    work_path = Path(work) if work else Path(tempfile.mkdtemp(prefix=f"transitnet-{name}-"))
    work_path.mkdir(parents=True, exist_ok=True)
    return data_path, work_path.resolve()
