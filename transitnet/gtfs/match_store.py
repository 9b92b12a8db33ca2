"""Map matching of a whole store: ``positions/`` partitions in, ``matched/`` partitions out.

:func:`match_store` matches one ``positions/feed=<id>/date=<day>/`` partition at a time
(with the end of the previous day as context) into ``matched/feed=<id>/date=<day>/
part-matched.parquet``, written atomically, and skips partitions whose inputs, static
version and settings are unchanged (a signature kept in the Parquet metadata).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from transitnet.gtfs.artefacts import load_or_build_artefacts
from transitnet.gtfs.match_index import MatchConfig, MatchIndex, build_match_index
from transitnet.gtfs.matcher import match_positions
from transitnet.store.layout import POSITIONS_DIR, list_partitions
from transitnet.store.parquet import list_visible_parts, read_positions, write_parquet_atomic

logger = logging.getLogger(__name__)


#: Folder of the matched table under a store (hive-partitioned like ``positions/``).
MATCHED_DIR = "matched"
#: The one file of a matched partition, replaced atomically on every re-match.
MATCHED_PART = "part-matched.parquet"
#: Parquet metadata key holding what a matched file was made from.
SOURCE_KEY = b"transitnet.match_source"


def match_store(
    store: Path,
    static_path: str | Path,
    *,
    feed_id: str | None = None,
    dates: Iterable[date | str] | None = None,
    config: MatchConfig = MatchConfig(),  # noqa: B008 - a frozen dataclass
    force: bool = False,
    context_s: float = 3 * 3600.0,
) -> list[Path]:
    """Match every ``positions/feed=<id>/date=<day>/`` partition of a store.

    Static artefacts are cached under ``store/static/<version>/``. Each partition is
    written to ``store/matched/feed=<id>/date=<day>/part-matched.parquet`` atomically;
    a partition whose positions, static version and settings are unchanged since its last
    match is skipped unless ``force``. The last ``context_s`` seconds of the previous day
    are matched along (not written) so trajectories crossing UTC midnight keep their leg.

    Args:
        store: Store root.
        static_path: Static GTFS zip, folder or URL.
        feed_id: Only this feed (None: every feed).
        dates: Only these partition days (``date`` or ``YYYY-MM-DD``; None: all).
        config: Matching settings.
        force: Re-match partitions even when unchanged.
        context_s: Seconds of the previous day read as context.

    Returns:
        The matched files written (skipped partitions are not listed).

    Raises:
        transitnet.gtfs.feeds.StaticFeedError: When the static feed cannot be read.
    """
    store = Path(store)
    art = load_or_build_artefacts(static_path, store)
    index = build_match_index(art, config)
    wanted = {d if isinstance(d, str) else d.isoformat() for d in dates} if dates else None
    partitions = [(feed, day, folder) for feed, day, folder in list_partitions(store, POSITIONS_DIR)
                  if (feed_id is None or feed == feed_id)
                  and (wanted is None or day.isoformat() in wanted)]  # fmt: skip
    if not partitions:
        logger.warning("no positions partitions in %s match feed=%s dates=%s", store, feed_id,
                       sorted(wanted) if wanted else "all")  # fmt: skip
    written = []
    for feed, day, folder in tqdm(partitions, desc="match", unit="partition", disable=None):
        source = _source_signature(folder, art.version, config)
        target = store / MATCHED_DIR / f"feed={feed}" / f"date={day.isoformat()}" / MATCHED_PART
        if not force and _stored_signature(target) == source:
            logger.info("matched %s/%s is up to date; skipped", feed, day)
            continue
        table = _match_partition(store, feed, day, index, config, context_s)
        write_parquet_atomic(target, table, {SOURCE_KEY: source.encode()})
        written.append(target)
    return written


def _match_partition(
    store: Path, feed: str, day: date, index: MatchIndex, config: MatchConfig, context_s: float
) -> pa.Table:
    """Match one day of one feed, with the end of the previous day as context."""
    rows = read_positions(store, [feed], [day])
    before = read_positions(store, [feed], [day - timedelta(days=1)])
    start = pd.Timestamp(day, tz="UTC") - pd.Timedelta(seconds=context_s)
    when = before["vehicle_timestamp"].fillna(before["fetched_at"])
    before = before[(when >= start).fillna(False).to_numpy(dtype=bool)]
    both = pd.concat([before, rows], ignore_index=True)
    matched = match_positions(both, index.art, config=config, index=index)
    out = matched.iloc[len(before) :].reset_index(drop=True)
    counts = out["match_status"].value_counts().to_dict()
    logger.info("matched %s/%s: %d rows %s", feed, day, len(out), counts)
    return pa.Table.from_pandas(out, preserve_index=False)


def _source_signature(folder: Path, version: str, config: MatchConfig) -> str:
    """What a matched partition depends on: its part files, the static version, settings."""
    parts = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in list_visible_parts(folder)]
    text = json.dumps({"parts": parts, "static": version, "config": repr(config)})
    return hashlib.sha256(text.encode()).hexdigest()


def _stored_signature(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    raw = meta.get(SOURCE_KEY)
    return raw.decode() if raw else None
