"""Time-ordered splits with no leakage.

Splits are by service date or by a time boundary within a day, never random. A window
never straddles a split: a window is assigned by its anchor time, and any target whose
time (anchor + horizon) falls past the end of the window's split is masked, so no
training target is read from the validation or test period.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import pandas as pd

from transitnet.datasets.windows import Windows


def expand_dates(spec: Sequence[str] | str | None) -> list[str]:
    """Expand ``YYYY-MM-DD`` values and ``start..end`` ranges (inclusive) into dates.

    Raises:
        ValueError: on a malformed date or a range whose end precedes its start.
    """
    if spec is None:
        return []
    items = [spec] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for item in items:
        if ".." in item:
            start_s, end_s = item.split("..", 1)
            start, end = _parse_date(start_s), _parse_date(end_s)
            if end < start:
                raise ValueError(f"date range {item!r} ends before it starts")
            out.extend(str(start + dt.timedelta(days=i)) for i in range((end - start).days + 1))
        else:
            out.append(str(_parse_date(item)))
    return out


def _parse_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(f"expected a date like 2017-03-16, got {text!r}") from exc


def select_dates(windows: Windows, dates: Sequence[str]) -> Windows:
    """Windows whose service date is in ``dates``."""
    keep = windows.meta["service_date"].isin(list(dates)).to_numpy()
    return windows.subset(keep)


def select_time_range(
    windows: Windows, start: pd.Timestamp | None, end: pd.Timestamp | None
) -> Windows:
    """Windows anchored in ``[start, end)``, with targets past ``end`` masked.

    Args:
        windows: Windows to split (``meta.anchor_time`` tz-aware UTC).
        start: Inclusive lower bound on the anchor time (None: unbounded).
        end: Exclusive upper bound on anchor and target times (None: unbounded).
    """
    anchor = windows.meta["anchor_time"]
    keep = np.ones(len(windows), dtype=bool)
    if start is not None:
        keep &= (anchor >= start).to_numpy()
    if end is not None:
        keep &= (anchor < end).to_numpy()
    out = windows.subset(keep)
    if end is not None:
        epoch = pd.Timestamp("1970-01-01", tz="UTC")
        anchor_s = ((out.meta["anchor_time"] - epoch) / pd.Timedelta("1s")).to_numpy()
        end_s = (end - epoch) / pd.Timedelta("1s")
        horizons = np.asarray(out.horizons_s, dtype=np.float64)
        out.target_mask &= anchor_s[:, None] + horizons[None, :] < end_s
    return out
