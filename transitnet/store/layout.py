"""Where everything lives under a store folder (pure path logic, no I/O besides listing).

Layout below ``store``::

    raw/feed=<id>/date=YYYY-MM-DD/hour=HH/<id>-YYYY-MM-DDTHH-MM-SSZ.pb   raw body of a 200
    raw/feed=<id>/date=YYYY-MM-DD/hour=HH/<id>-YYYY-MM-DDTHH-MM-SSZ.meta.json
    raw/feed=<id>/date=YYYY-MM-DD/hour=HH/<id>-YYYY-MM-DDTHH-MM-SSZ.body  error body (4xx/5xx)
    positions/feed=<id>/date=YYYY-MM-DD/part-*.parquet
    fetch_log/feed=<id>/date=YYYY-MM-DD/part-*.parquet
    state/<id>.json

Raw files are partitioned by OUR UTC fetch clock, never by the feed's own timestamp. When two
attempts fall in the same second, later ones get ``_1``, ``_2``… before the suffix, which keeps
names in chronological order when sorted.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

from transitnet.store.atomic import TEMP_PREFIX, atomic_path

RAW_DIR = "raw"
POSITIONS_DIR = "positions"
FETCH_LOG_DIR = "fetch_log"
STATE_DIR = "state"

RAW_SUFFIX = ".pb"
META_SUFFIX = ".meta.json"
ERROR_BODY_SUFFIX = ".body"
#: Name of the one compacted file per day partition (it matches ``part-*.parquet``).
COMPACTED_NAME = "part-compacted.parquet"

_FEED_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@contextlib.contextmanager
def publish_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path that is published onto ``path`` atomically on success.

    Like :func:`~transitnet.store.atomic.atomic_path`, but the temporary file never matches
    a ``*.pb``/``*.parquet`` glob: ``atomic_path`` keeps the final suffix on its temporary
    file, so a DuckDB glob such as ``positions/**/*.parquet`` would see a half-written
    ``.tmp-*.parquet``. Here the bytes go to ``.tmp-<name>.staged`` (atomically, fsynced)
    and are then renamed onto ``path``. A crash leaves at most ``.tmp-*`` files, which
    ``cleanup_temp_files`` removes.
    """
    staged = path.with_name(f"{TEMP_PREFIX}{path.name}.staged")
    with atomic_path(staged) as tmp:
        yield tmp
    os.replace(staged, path)


class InvalidFeedIdError(ValueError):
    """A feed id that cannot be used safely in a path or a Hive partition value."""


def check_feed_id(feed_id: str) -> str:
    """Return ``feed_id`` if it is safe in paths and partitions.

    Allowed: letters, digits, ``_``, ``.``, ``-``; starting with a letter or digit; at most
    128 characters.

    Raises:
        InvalidFeedIdError: for anything else (``/``, ``=``, spaces, empty, ``..``).
    """
    if not isinstance(feed_id, str) or not _FEED_ID_RE.match(feed_id) or ".." in feed_id:
        raise InvalidFeedIdError(
            f"invalid feed id {feed_id!r}: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return feed_id


def to_utc(moment: datetime) -> datetime:
    """Return ``moment`` in UTC.

    Raises:
        ValueError: when ``moment`` is naive (we never guess a time zone).
    """
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: pass a tz-aware UTC time")
    return moment.astimezone(UTC)


def raw_dir(store: Path, feed_id: str, fetched_at: datetime) -> Path:
    """Folder of the raw snapshots fetched during one UTC hour."""
    t = to_utc(fetched_at)
    return (
        store / RAW_DIR / f"feed={check_feed_id(feed_id)}" / f"date={t:%Y-%m-%d}" / f"hour={t:%H}"
    )


def raw_stem(feed_id: str, fetched_at: datetime) -> str:
    """File stem ``<id>-YYYY-MM-DDTHH-MM-SSZ`` for a fetch at ``fetched_at`` (UTC)."""
    return f"{check_feed_id(feed_id)}-{to_utc(fetched_at):%Y-%m-%dT%H-%M-%SZ}"


def reserve_raw_stem(store: Path, feed_id: str, fetched_at: datetime) -> Path:
    """Return ``raw_dir/stem`` (no suffix) not yet used by any file of that stem.

    The first attempt in a second gets the plain stem, later ones ``stem_1``, ``stem_2``…
    Only one writer per feed runs at a time (the scheduler guarantees it), so the check
    cannot race with itself.
    """
    folder = raw_dir(store, feed_id, fetched_at)
    stem = raw_stem(feed_id, fetched_at)
    candidate, n = stem, 0
    while _stem_taken(folder, candidate):
        n += 1
        candidate = f"{stem}_{n}"
    return folder / candidate


def _stem_taken(folder: Path, stem: str) -> bool:
    return any(
        (folder / f"{stem}{suffix}").exists()
        for suffix in (RAW_SUFFIX, META_SUFFIX, ERROR_BODY_SUFFIX)
    )


def meta_path_for(stem_path: Path) -> Path:
    """The ``.meta.json`` beside a raw stem path (``…/x`` → ``…/x.meta.json``)."""
    return stem_path.with_name(stem_path.name + META_SUFFIX)


def iter_raw_files(store: Path, feed_id: str) -> list[Path]:
    """All archived ``.pb`` snapshots of a feed, sorted chronologically by name."""
    root = store / RAW_DIR / f"feed={check_feed_id(feed_id)}"
    files = [p for p in root.rglob(f"*{RAW_SUFFIX}") if not p.name.startswith(TEMP_PREFIX)]
    return sorted(files, key=lambda p: p.name)


def partition_dir(store: Path, kind: str, feed_id: str, day: date) -> Path:
    """Folder ``<store>/<kind>/feed=<id>/date=YYYY-MM-DD`` (kind: positions or fetch_log)."""
    if kind not in (POSITIONS_DIR, FETCH_LOG_DIR):
        raise ValueError(f"unknown partitioned table {kind!r}")
    return store / kind / f"feed={check_feed_id(feed_id)}" / f"date={day.isoformat()}"


def new_part_name(now: datetime | None = None) -> str:
    """A unique part file name ``part-YYYYMMDDTHHMMSS-<hex>.parquet``, sortable by time."""
    t = to_utc(now) if now is not None else datetime.now(UTC)
    return f"part-{t:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}.parquet"


def list_parts(folder: Path) -> list[Path]:
    """Visible ``part-*.parquet`` files of one partition (temporary files excluded)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("part-*.parquet") if p.is_file())


def list_partitions(store: Path, kind: str) -> list[tuple[str, date, Path]]:
    """Every ``(feed_id, date, folder)`` partition of a table, sorted.

    Folders whose names do not parse as ``feed=…``/``date=YYYY-MM-DD`` are skipped with no
    error: they are not ours.
    """
    root = store / kind
    found: list[tuple[str, date, Path]] = []
    if not root.is_dir():
        return found
    for feed_dir in sorted(root.glob("feed=*")):
        for date_dir in sorted(feed_dir.glob("date=*")):
            try:
                day = date.fromisoformat(date_dir.name.removeprefix("date="))
            except ValueError:
                continue
            found.append((feed_dir.name.removeprefix("feed="), day, date_dir))
    return found


def state_path(store: Path, feed_id: str) -> Path:
    """The per-feed state file ``<store>/state/<id>.json``."""
    return store / STATE_DIR / f"{check_feed_id(feed_id)}.json"
