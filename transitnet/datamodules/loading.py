"""Load matched positions for periods and cut them into per-split windows.

A period spec is a list of service dates (``YYYY-MM-DD``), service-date ranges
(``start..end``) or local-time ranges (``YYYY-MM-DDTHH:MM..YYYY-MM-DDTHH:MM``, e.g. an
Auckland morning for training and the evening of the same day for testing). Splits
must not overlap; a window's targets never reach past the end of its own period.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds

from transitnet.datasets.splits import expand_dates, select_dates, select_time_range
from transitnet.datasets.windows import WindowConfig, Windows, build_windows
from transitnet.gtfs.timetable import Timetable, read_timetable

logger = logging.getLogger(__name__)

MATCHED_DIR = "matched"


@dataclass(frozen=True)
class Period:
    """Service dates, or one local-time range ``[start, end)`` (tz-aware UTC bounds)."""

    dates: tuple[str, ...] = ()
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None

    def utc_dates(self) -> set[str]:
        """UTC partition dates that can hold this period's fixes."""
        if self.start is not None and self.end is not None:
            days = pd.date_range(self.start.normalize(), self.end.normalize(), freq="D")
            return {d.strftime("%Y-%m-%d") for d in days}
        out: set[str] = set()
        for d in self.dates:
            day = dt.date.fromisoformat(d)
            out |= {str(day + dt.timedelta(days=k)) for k in (-1, 0, 1)}
        return out


def parse_period(spec: Sequence[str], timezone: str) -> Period:
    """Parse a period spec (see module docstring).

    Raises:
        ValueError: on a malformed item, or on mixing time ranges with dates.
    """
    items = list(spec)
    timed = [s for s in items if "T" in s]
    if not timed:
        return Period(dates=tuple(expand_dates(items)))
    if len(items) != 1 or ".." not in items[0]:
        raise ValueError(f"a local-time period must be one 'start..end' range, got {items}")
    start_s, end_s = items[0].split("..", 1)
    try:
        start = pd.Timestamp(start_s).tz_localize(timezone).tz_convert("UTC")
        end = pd.Timestamp(end_s).tz_localize(timezone).tz_convert("UTC")
    except ValueError as exc:
        raise ValueError(f"bad local-time range {items[0]!r}: {exc}") from exc
    if end <= start:
        raise ValueError(f"period {items[0]!r} ends before it starts")
    return Period(start=start, end=end)


def read_matched(store: Path, feed_ids: Sequence[str] | None, utc_dates: set[str]) -> pd.DataFrame:
    """Read matched fixes whose ``vehicle_timestamp`` falls on the given UTC dates.

    Partitions are named by our fetch clock, which for a replayed or backfilled archive
    is not the vehicles' day, so every partition of the feeds is scanned with a
    timestamp filter (Parquet statistics keep that cheap).

    Returns:
        The matched columns (see :func:`transitnet.gtfs.match.match_positions`).
    """
    root = store / MATCHED_DIR
    files = [
        p
        for p in sorted(root.glob("feed=*/date=*/*.parquet"))
        if not p.name.startswith(".")
        and (feed_ids is None or p.parent.parent.name.removeprefix("feed=") in feed_ids)
    ]
    if not files or not utc_dates:
        return pd.DataFrame()
    dataset = ds.dataset(files, format="parquet", partitioning="hive", partition_base_dir=str(root))
    lo = pd.Timestamp(min(utc_dates), tz="UTC")
    hi = pd.Timestamp(max(utc_dates), tz="UTC") + pd.Timedelta(days=1)
    ts = ds.field("vehicle_timestamp")
    table = dataset.to_table(filter=(ts >= lo.to_pydatetime()) & (ts < hi.to_pydatetime()))
    frame: pd.DataFrame = table.to_pandas()
    if "feed" in frame.columns:
        frame = frame.drop(columns=["feed", "date"], errors="ignore")
    return frame


def read_trip_shapes(store: Path, feed_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """``trip_id, shape_id`` of every matched fix in ``store`` (the shape each trip ran on).

    Raises:
        ValueError: When the store holds no matched positions (run ``transitnet match``).
    """
    root = store / MATCHED_DIR
    files = [
        p
        for p in sorted(root.glob("feed=*/date=*/*.parquet"))
        if not p.name.startswith(".")
        and (feed_ids is None or p.parent.parent.name.removeprefix("feed=") in feed_ids)
    ]
    if not files:
        raise ValueError(f"no matched positions in {root}: run `transitnet match` first")
    table = ds.dataset(files, format="parquet").to_table(columns=["trip_id", "shape_id"])
    frame: pd.DataFrame = table.to_pandas()
    return frame


def ensure_matched(
    store: Path, static: str | None, feed_ids: Sequence[str] | None, utc_dates: set[str]
) -> pd.DataFrame:
    """Matched positions for ``utc_dates``, matching stored positions first if needed.

    Matching is incremental: partitions already matched with the same static version and
    settings are skipped.
    """
    if static is not None:
        from transitnet.gtfs.match import match_store

        for feed in list(feed_ids) if feed_ids else [None]:
            match_store(store, static, feed_id=feed)
    matched = read_matched(store, feed_ids, utc_dates)
    if matched.empty:
        raise ValueError(
            f"no matched positions in {store}/{MATCHED_DIR} for UTC dates {sorted(utc_dates)}; "
            "give a static feed (--data.static) or run `transitnet match` first"
        )
    return matched


def filter_lines(
    matched: pd.DataFrame, include: Sequence[str] | None, exclude: Sequence[str] | None
) -> pd.DataFrame:
    """Keep rows whose ``line_key`` is in ``include`` (if given) and not in ``exclude``."""
    keep = pd.Series(True, index=matched.index)
    if include:
        keep &= matched["line_key"].isin(list(include))
    if exclude:
        keep &= ~matched["line_key"].isin(list(exclude))
    return matched[keep]


def select_period(windows: Windows, period: Period) -> Windows:
    """The windows of one period (time ranges mask targets past the period's end)."""
    if period.dates:
        return select_dates(windows, period.dates)
    return select_time_range(windows, period.start, period.end)


def check_order(periods: Mapping[str, Period]) -> None:
    """Refuse overlapping splits (train, val, test must be disjoint in time)."""
    spans: dict[str, tuple[pd.Timestamp | None, pd.Timestamp | None]] = {}
    for name, p in periods.items():
        lo: pd.Timestamp | None
        hi: pd.Timestamp | None
        if p.dates:
            lo = pd.Timestamp(min(p.dates), tz="UTC")
            hi = pd.Timestamp(max(p.dates), tz="UTC") + pd.Timedelta(days=1)
        else:
            lo, hi = p.start, p.end
        spans[name] = (lo, hi)
    names = [n for n in ("train", "val", "test") if n in spans]
    for a, b in itertools.pairwise(names):
        start_b, end_a = spans[b][0], spans[a][1]
        if start_b is not None and end_a is not None and start_b < end_a:
            raise ValueError(f"the {b} period must start after the {a} period ends (no leakage)")


def resolve_timetable(store: Path, static: str | None, path: str | None) -> Timetable | None:
    """The timetable for the schedule features: ``path`` if given, else the static feed's.

    Args:
        store: The store (static artefacts are cached under ``store/static/``).
        static: Static GTFS whose ``stop_times`` serve when ``path`` is None.
        path: A timetable file (:func:`transitnet.gtfs.timetable.write_timetable`).

    Returns:
        The timetable, or None when neither gives a usable schedule (the schedule
        features are then zeros with ``has_schedule`` 0).
    """
    if path:
        return read_timetable(path)
    if static is None:
        return None
    from transitnet.gtfs.artefacts import load_or_build_artefacts

    timetable = Timetable.from_artefacts(load_or_build_artefacts(static, store))
    if timetable is None:
        logger.info("static %s has no usable stop_times: no schedule features", static)
    return timetable


def load_windows(
    store: Path,
    static: str | None,
    specs: Mapping[str, Sequence[str]],
    config: WindowConfig,
    *,
    feed_ids: Sequence[str] | None = None,
    timezone: str | None = None,
    line_key_mode: str = "route",
    include_lines: Sequence[str] | None = None,
    exclude_lines: Sequence[str] | None = None,
    timetable: Timetable | None = None,
) -> dict[str, Windows]:
    """Windows per split name for the given period specs.

    ``timetable`` feeds the schedule context features (None: zeros, ``has_schedule`` 0).

    ``exclude_lines`` applies to the training split only: held-out lines still appear in
    validation and test, where they meet the unknown row (or their added row).
    """
    tz = timezone or "UTC"
    periods = {name: parse_period(spec, tz) for name, spec in specs.items()}
    check_order(periods)
    utc_dates: set[str] = set().union(*(p.utc_dates() for p in periods.values()))
    matched = filter_lines(ensure_matched(store, static, feed_ids, utc_dates), include_lines, None)
    if line_key_mode != "route" and "line_key" in matched:
        logger.info("line keys as stored by the matcher (mode %s)", line_key_mode)
    windows = build_windows(
        matched, WindowConfig(**{**config.__dict__, "timezone": tz}), timetable=timetable
    )
    out: dict[str, Windows] = {}
    for name, period in periods.items():
        split = select_period(windows, period)
        if name == "train" and exclude_lines:
            split = split.subset(~split.meta["line_key"].isin(list(exclude_lines)).to_numpy())
        logger.info(
            "%s: %d windows, %d lines, %.1f%% with a schedule",
            name, len(split), split.meta["line_key"].nunique(), 100 * schedule_share(split),
        )  # fmt: skip
        out[name] = split
    return out


def schedule_share(windows: Windows) -> float:
    """Share of ``windows`` whose context has ``has_schedule`` set."""
    from transitnet.datasets.features import CONTEXT_FEATURES

    if not len(windows):
        return 0.0
    return float(windows.context[:, CONTEXT_FEATURES.index("has_schedule")].mean())
