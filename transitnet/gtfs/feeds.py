"""Read static GTFS feeds with gtfs-kit, safely, and give each feed a version id.

:func:`read_static_feed` accepts a zip, a folder, or an http(s) URL and wraps gtfs-kit 13's
known pitfalls:

- ``read_feed`` on a folder that holds a zip silently returns empty tables: the zip
  inside is read instead (an error names them when there are several);
- files written by R carry an unnamed leading index column (``Unnamed: 0``): dropped;
- ``clean()``/``drop_zombies()`` raise ``KeyError: 'agency_id'`` on single-agency feeds
  without that column: the column is filled (see :func:`clean_static_feed`);
- a feed whose required tables are missing, empty or lack required columns raises
  :class:`StaticFeedError` with a message naming what is missing, e.g.
  ``"trips.txt has no shape_id and shapes.txt is absent, and stop_times.txt is absent"``.

:func:`compute_feed_version` gives ``feed_info.feed_version`` when present, else a content
hash (``sha256-<16 hex>``) of the feed's ``.txt`` files.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import logging
import re
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import gtfs_kit as gk
import pandas as pd
import requests

from transitnet.store.atomic import atomic_path

logger = logging.getLogger(__name__)

#: Tables every feed must have, non-empty.
REQUIRED_TABLES: tuple[str, ...] = ("routes", "trips", "stops")
#: Columns each table must carry when present.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "routes": ("route_id",),
    "trips": ("route_id", "service_id", "trip_id"),
    "stops": ("stop_id", "stop_lat", "stop_lon"),
    "shapes": ("shape_id", "shape_pt_lat", "shape_pt_lon", "shape_pt_sequence"),
    "stop_times": ("trip_id", "stop_id", "stop_sequence"),
}
#: Largest static feed downloaded from a URL.
MAX_DOWNLOAD_BYTES = 2 * 1024**3
#: (connect, read) timeouts for downloads, seconds.
DOWNLOAD_TIMEOUT_S = (10.0, 120.0)
_INDEX_COLUMN_RE = re.compile(r"^(Unnamed: \d+)?$")
_GTFS_TABLES = frozenset(gk.constants.DTYPES)


class StaticFeedError(ValueError):
    """A static feed that cannot be read or lacks what transitnet needs (user-facing message)."""


def _is_url(path: str | Path) -> bool:
    return str(path).startswith(("http://", "https://"))


def _download(url: str, dest: Path) -> None:
    try:
        with requests.get(url, stream=True, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            resp.raise_for_status()
            with atomic_path(dest) as tmp, open(tmp, "wb") as fh:
                size = 0
                for chunk in resp.iter_content(chunk_size=1 << 20):
                    size += len(chunk)
                    if size > MAX_DOWNLOAD_BYTES:
                        raise StaticFeedError(f"{url}: larger than {MAX_DOWNLOAD_BYTES} bytes")
                    fh.write(chunk)
    except requests.RequestException as exc:
        raise StaticFeedError(f"could not download static feed {url}: {exc}") from exc


@contextlib.contextmanager
def open_static_source(path: str | Path) -> Iterator[Path]:
    """Yield a local path for ``path``: the path itself, or a downloaded temporary zip.

    A folder that holds no GTFS ``.txt`` file but exactly one ``.zip`` yields that zip.

    Raises:
        StaticFeedError: When the path does not exist, the download fails, or a folder
            holds several zips and no GTFS files.
    """
    if _is_url(path):
        with tempfile.TemporaryDirectory(prefix="transitnet-gtfs-") as tmp:
            dest = Path(tmp) / "feed.zip"
            _download(str(path), dest)
            yield _check_local(dest, str(path))
        return
    yield _check_local(Path(path), str(path))


def _check_local(path: Path, label: str) -> Path:
    if not path.exists():
        raise StaticFeedError(f"static feed {label} does not exist")
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise StaticFeedError(f"static feed {label} is neither a folder nor a zip archive")
        return path
    if any(p.suffix == ".txt" and p.stem in _GTFS_TABLES for p in path.iterdir()):
        return path
    zips = sorted(p for p in path.iterdir() if p.suffix.lower() == ".zip" and p.is_file())
    if len(zips) == 1:
        logger.info("%s holds no GTFS .txt files; reading the zip inside: %s", label, zips[0].name)
        return _check_local(zips[0], str(zips[0]))
    if len(zips) > 1:
        names = ", ".join(z.name for z in zips)
        raise StaticFeedError(
            f"{label} holds no GTFS .txt files but several zips ({names}): pass the one to read"
        )
    return path


def _list_members(path: Path) -> list[str]:
    if path.is_file():
        with zipfile.ZipFile(path) as zf:
            return sorted(i.filename for i in zf.infolist() if not i.is_dir())
    return sorted(p.name for p in path.iterdir())


def read_static_feed(path: str | Path) -> gk.Feed:
    """Read a static GTFS feed from a zip, a folder or an http(s) URL.

    Args:
        path: Zip file, folder (or folder holding one zip), or URL of a zip.

    Returns:
        A gtfs-kit Feed with R index columns dropped and ``agency_id`` filled on
        single-agency feeds. Tables are gtfs-kit's (nullable dtypes).

    Raises:
        StaticFeedError: For anything unreadable or missing (see module docstring).
    """
    with open_static_source(path) as local:
        try:
            feed = gk.read_feed(local)
        except (
            ValueError,
            KeyError,
            TypeError,
            UnicodeDecodeError,
            OSError,
            zipfile.BadZipFile,
            pd.errors.ParserError,
        ) as exc:
            raise StaticFeedError(f"could not read static feed {path}: {exc}") from exc
        members = _list_members(local)
    _drop_index_columns(feed)
    check_static_feed(feed, label=str(path), members=members)
    _fill_agency_id(feed)
    return feed


def _drop_index_columns(feed: gk.Feed) -> None:
    for table in sorted(_GTFS_TABLES):
        df = getattr(feed, table, None)
        if not isinstance(df, pd.DataFrame):
            continue
        extra = [c for c in df.columns if _INDEX_COLUMN_RE.match(str(c))]
        if extra:
            logger.info(
                "%s.txt: dropping unnamed index column(s) %s (R-written file)", table, extra
            )
            setattr(feed, table, df.drop(columns=extra))


def _fill_agency_id(feed: gk.Feed) -> None:
    agency = feed.agency
    if agency is None or len(agency) != 1:
        return
    if "agency_id" not in agency.columns or agency["agency_id"].isna().all():
        name = agency["agency_name"].iloc[0] if "agency_name" in agency.columns else None
        agency = agency.assign(agency_id=str(name) if pd.notna(name) else "agency")
        feed.agency = agency
    routes = feed.routes
    if "agency_id" not in routes.columns:
        feed.routes = routes.assign(agency_id=agency["agency_id"].iloc[0])


def _table_problems(feed: gk.Feed) -> list[str]:
    problems: list[str] = []
    for table in REQUIRED_TABLES:
        df = getattr(feed, table)
        if df is None or df.empty:
            problems.append(f"{table}.txt is missing or empty")
    for table, columns in REQUIRED_COLUMNS.items():
        df = getattr(feed, table)
        missing = [c for c in columns if df is not None and c not in df.columns]
        if missing:
            problems.append(f"{table}.txt lacks column(s) {', '.join(missing)}")
    return problems


def _geometry_problem(feed: gk.Feed) -> str | None:
    trips = feed.trips
    has_shape_ids = "shape_id" in trips.columns and bool(trips["shape_id"].notna().any())
    has_shapes = feed.shapes is not None and not feed.shapes.empty
    if has_shape_ids and has_shapes:
        return None
    reason = (
        "trips.txt has no shape_id and shapes.txt is absent"
        if not has_shape_ids and not has_shapes
        else "trips.txt has no shape_id"
        if not has_shape_ids
        else "trips.txt references shapes but shapes.txt is absent"
    )
    if feed.stop_times is None or feed.stop_times.empty:
        return f"{reason}, and stop_times.txt is absent: no trip has a geometry"
    logger.warning("%s: shapes will be built as polylines through each trip's stops", reason)
    return None


def check_static_feed(
    feed: gk.Feed, *, label: str = "feed", members: list[str] | None = None
) -> None:
    """Check that a feed has the tables and columns transitnet needs.

    Args:
        feed: A gtfs-kit Feed.
        label: The feed's path or URL, for messages.
        members: File names found in the feed, listed when no GTFS table was read.

    Raises:
        StaticFeedError: Naming every missing table/column, or the missing geometry.
    """
    tables = [t for t in sorted(_GTFS_TABLES) if getattr(feed, t, None) is not None]
    if not tables:
        found = ", ".join(members or []) or "nothing"
        raise StaticFeedError(
            f"no GTFS tables found in {label} (found: {found}); "
            f"required: {', '.join(t + '.txt' for t in REQUIRED_TABLES)}"
        )
    problems = _table_problems(feed)
    if problems:
        raise StaticFeedError(f"static feed {label}: " + "; ".join(problems))
    geometry = _geometry_problem(feed)
    if geometry:
        raise StaticFeedError(f"static feed {label}: {geometry}")


def clean_static_feed(feed: gk.Feed) -> gk.Feed:
    """Run gtfs-kit's ``clean()`` without its single-agency and no-stop_times crashes.

    ``agency_id`` is filled on single-agency feeds first; on feeds without
    ``stop_times.txt`` only ``clean_ids``, ``clean_times`` and ``clean_route_short_names``
    run, because ``drop_zombies`` would drop every trip.

    Args:
        feed: A Feed from :func:`read_static_feed`.

    Returns:
        The cleaned copy (gtfs-kit tables).
    """
    feed = feed.copy()
    _fill_agency_id(feed)
    if feed.stop_times is None or feed.stop_times.empty:
        logger.warning(
            "no stop_times.txt: skipping gtfs-kit drop_zombies (it would drop all trips)"
        )
        for op in (gk.clean_ids, gk.clean_times, gk.clean_route_short_names):
            feed = op(feed)
        return feed
    return gk.clean(feed)


def _feed_info_version(text: str) -> str | None:
    rows = list(csv.DictReader(io.StringIO(text)))
    for row in rows:
        value = (row.get("feed_version") or "").strip()
        if value and value.upper() not in {"NA", "NAN", "NULL"}:
            return value
    return None


def _read_members(local: Path, only: str | None = None) -> Iterator[tuple[str, bytes]]:
    if local.is_file():
        with zipfile.ZipFile(local) as zf:
            names = sorted(i.filename for i in zf.infolist() if i.filename.endswith(".txt"))
            for name in names:
                if only is None or Path(name).name == only:
                    yield Path(name).name, zf.read(name)
        return
    for p in sorted(local.glob("*.txt")):
        if only is None or p.name == only:
            yield p.name, p.read_bytes()


def compute_content_hash(path: str | Path) -> str:
    """Return ``sha256-<16 hex>`` over the names and bytes of the feed's ``.txt`` files.

    Re-zipping or copying a feed keeps its hash; changing any byte of a table changes it.
    """
    digest = hashlib.sha256()
    with open_static_source(path) as local:
        for name, data in _read_members(local):
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return "sha256-" + digest.hexdigest()[:16]


def _version_from_path(path: str | Path) -> str:
    with open_static_source(path) as local:
        for _, data in _read_members(local, only="feed_info.txt"):
            version = _feed_info_version(data.decode("utf-8-sig", errors="replace"))
            if version:
                return version
    return compute_content_hash(path)


def _version_from_feed(feed: gk.Feed) -> str:
    info = feed.feed_info
    if info is not None and "feed_version" in info.columns:
        values = info["feed_version"].dropna().astype(str).str.strip()
        values = values[values != ""]
        if len(values):
            return str(values.iloc[0])
    digest = hashlib.sha256()
    for table in sorted(_GTFS_TABLES):
        df = getattr(feed, table, None)
        if isinstance(df, pd.DataFrame):
            digest.update(table.encode() + "\0".join(map(str, df.columns)).encode())
            digest.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return "sha256-" + digest.hexdigest()[:16]


def compute_feed_version(feed_or_path: gk.Feed | str | Path) -> str:
    """Return the feed's version id: ``feed_info.feed_version`` if set, else a content hash.

    Args:
        feed_or_path: A gtfs-kit Feed, or a zip/folder/URL.

    Returns:
        The version string. Without a ``feed_version``, the hash of a path
        (:func:`compute_content_hash`, over file bytes) differs from the hash of the
        Feed read from it (over table values); artefacts built through
        :func:`transitnet.gtfs.artefacts.load_or_build_artefacts` use the path's.
    """
    if isinstance(feed_or_path, gk.Feed):
        return _version_from_feed(feed_or_path)
    return _version_from_path(feed_or_path)
