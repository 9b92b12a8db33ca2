"""What a feed really contains: fields set, rule flags, freshness, cadence, activity.

Tables in, tables out (see each function for the columns); plots of these tables are in
:mod:`transitnet.analysis_plots`, matched trajectories in :mod:`transitnet.analysis_matching`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from transitnet.analysis import compute_fix_times, compute_snapshot_times
from transitnet.schema import STATIC_RULES, VP_RULES, flag_column

logger = logging.getLogger(__name__)

#: Cal-ITP's freshness guideline: p90 of max(header age, vehicle age) at most this.
FRESHNESS_LIMIT_S = 90.0
#: Header and cross-snapshot rules: raised on every row of their snapshot.
FEED_RULES = frozenset({"E001", "E017", "E018", "E038", "E039", "E048", "E049", "E050",
                        "W001", "W007", "W008"})  # fmt: skip
#: What each reference-validator rule checks (MobilityData's gtfs-realtime-validator).
RULE_TITLES: dict[str, str] = {
    "E001": "time not POSIX seconds", "E003": "trip_id not in static", "E004":
    "route_id not in static", "E006": "frequency trip lacks start date/time", "E011":
    "stop_id not in static", "E012": "entity time after header time", "E013":
    "frequency trip not UNSCHEDULED", "E015": "stop is not a stop (location_type)", "E016":
    "ADDED trip exists in static", "E017": "content changed, header time unchanged",
    "E018": "header time went back", "E019": "start_time not on the headway", "E020":
    "bad start_time", "E021": "bad start_date", "E023": "start_time differs from schedule",
    "E024": "direction_id mismatch", "E026": "lat/lon missing or out of range", "E027":
    "bearing outside 0-360", "E028": "outside the coverage area", "E029":
    "more than 200 m from its shape", "E035": "trip not on that route", "E038":
    "version not 1.0/2.0", "E039": "is_deleted in a FULL_DATASET feed", "E048":
    "header timestamp missing (v2.0)", "E049": "incrementality missing (v2.0)", "E050":
    "timestamp > 60 s in the future", "E052": "duplicate vehicle.id", "W001":
    "timestamp missing", "W002": "vehicle id missing", "W004": "speed > 26 m/s or < 0",
    "W005": "frequency trip lacks vehicle id", "W006": "trip_id missing", "W007":
    "refresh gap over 35 s", "W008": "header older than 65 s", "W009":
    "schedule_relationship missing",
}  # fmt: skip
_EARTH_M = 6_371_008.8


def summarise_contents(
    positions: pd.DataFrame, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """How often each field is really set, and how many values it takes.

    Args:
        positions: Any table (stored positions: a missing protobuf field is null).
        columns: Columns to describe (default: all but the ``flag_*`` columns).

    Returns:
        One row per column (index ``column``): ``set_share`` (share of rows neither null
        nor an empty string), ``distinct`` (distinct set values) and ``example`` (the most
        common set value, as text; empty when never set).
    """
    names = list(columns) if columns is not None else [
        c for c in positions.columns if not str(c).startswith("flag_")]  # fmt: skip
    rows = [{"column": name, **_describe_column(positions[name])} for name in names]
    return pd.DataFrame(rows, columns=["column", "set_share", "distinct", "example"]).set_index(
        "column")  # fmt: skip


def _describe_column(col: pd.Series) -> dict[str, object]:
    is_set = col.notna()
    if pd.api.types.is_string_dtype(col) or col.dtype == object:
        is_set &= (col.astype("string") != "").fillna(False)
    values = col[is_set.to_numpy(dtype=bool)]
    top = values.value_counts()  # on the values themselves: text only for the winner
    share = float(is_set.mean()) if len(col) else np.nan
    return {
        "set_share": share,
        "distinct": len(top),
        "example": str(top.index[0]) if len(top) else "",
    }


def summarise_flags(positions: pd.DataFrame) -> pd.DataFrame:
    """Per validator rule: rows evaluated, rows flagged and the share.

    Columns in: ``flag_<rule>`` columns (nullable booleans; null = not evaluated, as for a
    static rule without a static feed). Absent flag columns count as not evaluated.

    Returns:
        One row per rule of ``VP_RULES`` (index ``rule``): ``title``, ``scope`` (``feed``:
        raised on every row of its snapshot; ``row``), ``needs_static``, ``evaluated``,
        ``flagged`` and ``share`` (flagged / evaluated; NaN when never evaluated).
    """
    rows = []
    for rule in VP_RULES:
        col = positions.get(flag_column(rule))
        evaluated = int(col.notna().sum()) if col is not None else 0
        flagged = int(col.fillna(False).astype(bool).sum()) if col is not None else 0
        rows.append({"rule": rule, "title": RULE_TITLES[rule],
                     "scope": "feed" if rule in FEED_RULES else "row",
                     "needs_static": rule in STATIC_RULES, "evaluated": evaluated,
                     "flagged": flagged,
                     "share": flagged / evaluated if evaluated else np.nan})  # fmt: skip
    return pd.DataFrame(rows).set_index("rule")


def compute_flag_rates(
    positions: pd.DataFrame, freq: str = "15min", rules: Sequence[str] | None = None
) -> pd.DataFrame:
    """Share of evaluated rows flagged, per rule and time bin (snapshot clock).

    Args:
        positions: Columns ``flag_<rule>`` and a time (``fetched_at``, else
            ``header_timestamp``, else ``vehicle_timestamp``; see
            :func:`transitnet.analysis.compute_snapshot_times`).
        freq: Bin width (a pandas frequency such as ``"15min"``).
        rules: Rules to include (default: those flagged at least once).

    Returns:
        Index: bin start (UTC); one column per rule id; values in [0, 1], NaN where no
        row of the bin was evaluated. Rows without any time are left out.
    """
    chosen = list(rules) if rules is not None else [
        r for r in VP_RULES if flag_column(r) in positions
        and positions[flag_column(r)].fillna(False).astype(bool).any()]  # fmt: skip
    bins = compute_snapshot_times(positions).dt.floor(freq)
    out = {}
    for rule in chosen:
        col = positions.get(flag_column(rule))
        if col is None:
            out[rule] = pd.Series(np.nan, index=bins.dropna().unique())
            continue
        frame = pd.DataFrame({"bin": bins, "evaluated": col.notna(),
                              "flagged": col.fillna(False).astype(bool)})  # fmt: skip
        sums = frame.dropna(subset=["bin"]).groupby("bin")[["evaluated", "flagged"]].sum()
        out[rule] = (sums["flagged"] / sums["evaluated"].where(sums["evaluated"] > 0)).astype(float)
    rates = pd.DataFrame(out).sort_index()
    rates.index.name = "bin"
    return rates


def compute_vehicle_keys(positions: pd.DataFrame) -> pd.Series:
    """Each row's vehicle: ``vehicle_id``, else ``vehicle_label``, else ``entity_id`` (prefixed).

    Returns a string Series aligned with the rows (NA where none is set).
    """
    out = pd.Series(pd.NA, index=positions.index, dtype="string")
    for column, prefix in (("vehicle_id", "id:"), ("vehicle_label", "label:"),
                           ("entity_id", "entity:")):  # fmt: skip
        if column in positions.columns:
            col = positions[column].astype("string")
            out = out.fillna((prefix + col).where(col != ""))
    return out


def compute_freshness(rows: pd.DataFrame) -> pd.DataFrame:
    """Freshness per snapshot, as Cal-ITP defines it.

    ``header_age = fetch time − header timestamp`` and ``vehicle_age = fetch time −
    vehicle timestamp``; the guideline is p90 of the larger of the two at most 90 s. A
    recorded archive has no fetch clock: its header timestamp is the clock then, the
    header age is unknown (NaN) and the vehicle age is the feed's own lag.

    Args:
        rows: Every row of every snapshot (:func:`transitnet.analysis.read_raw_snapshots`;
            stored positions hold a re-published fix only once and look fresher than the
            feed was). Columns ``header_timestamp``, ``vehicle_timestamp``, optional
            ``fetched_at``, ``source_file`` (the snapshot; else the header timestamp) and
            vehicle ids.

    Returns:
        One row per snapshot, in time order: ``snapshot_time`` (UTC), ``clock``
        (``fetched_at`` or ``header_timestamp``), ``rows``, ``header_age_s``,
        ``vehicle_age_p50_s``, ``vehicle_age_p90_s``, ``max_age_p90_s``,
        ``meets_guideline`` (max_age_p90_s <= 90; NA when unknown), ``republished_share``
        (share of rows whose vehicle repeats its fix of the previous snapshot).
    """
    frame = _freshness_rows(rows)
    grouped = frame.groupby("snapshot", sort=False)
    out = pd.DataFrame({
        "snapshot_time": grouped["clock_time"].first(),
        "clock": grouped["clock"].first(),
        "rows": grouped.size(),
        "header_age_s": grouped["header_age_s"].first(),
        "vehicle_age_p50_s": grouped["vehicle_age_s"].median(),
        "vehicle_age_p90_s": grouped["vehicle_age_s"].quantile(0.9),
        "max_age_p90_s": grouped["max_age_s"].quantile(0.9),
        "republished_share": grouped["republished"].mean(),
    })  # fmt: skip
    known = out["max_age_p90_s"].notna() & out["clock"].eq("fetched_at")
    out["meets_guideline"] = (out["max_age_p90_s"] <= FRESHNESS_LIMIT_S).astype("boolean")
    out.loc[~known, "meets_guideline"] = pd.NA
    return out.sort_values("snapshot_time").reset_index(drop=True)


def _freshness_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Per row: snapshot id, clock, header age, vehicle age, and whether the fix repeats."""
    fetched = rows.get("fetched_at")
    has_fetch = fetched.notna() if fetched is not None else pd.Series(False, index=rows.index)
    clock_time = compute_snapshot_times(rows)
    header = rows["header_timestamp"]
    snapshot = _snapshot_ids(rows, clock_time)
    frame = pd.DataFrame({
        "snapshot": snapshot,
        "clock_time": clock_time,
        "clock": np.where(has_fetch, "fetched_at", "header_timestamp"),
        "header_age_s": (clock_time - header).dt.total_seconds().where(has_fetch),
        "vehicle_age_s": (clock_time - rows["vehicle_timestamp"]).dt.total_seconds(),
        "vehicle": compute_vehicle_keys(rows),
        "vehicle_ts": rows["vehicle_timestamp"],
    })  # fmt: skip
    frame["max_age_s"] = frame[["header_age_s", "vehicle_age_s"]].max(axis=1)
    frame = frame.sort_values(["vehicle", "clock_time"], kind="stable")
    same_vehicle = frame["vehicle"].eq(frame["vehicle"].shift()).fillna(False)
    repeats = frame["vehicle_ts"].eq(frame["vehicle_ts"].shift()).fillna(False)
    frame["republished"] = (same_vehicle & repeats & frame["vehicle"].notna()).astype(float)
    return frame.sort_index()


def _snapshot_ids(rows: pd.DataFrame, clock_time: pd.Series) -> np.ndarray:
    """An integer per snapshot: its ``source_file``, else its clock time."""
    key = rows["source_file"].astype("string") if "source_file" in rows else None
    if key is None or key.isna().any():
        text = clock_time.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").astype("string")
        key = text if key is None else key.fillna(text)
    return np.asarray(pd.factorize(key)[0], dtype=np.int64)


def summarise_freshness(freshness: pd.DataFrame) -> pd.Series:
    """Headline freshness figures over the snapshots of :func:`compute_freshness`.

    Returns:
        ``snapshots``, ``clock``, ``header_age_p90_s``, ``vehicle_age_p50_s`` and
        ``vehicle_age_p90_s`` (medians of the per-snapshot values), ``refresh_p50_s`` and
        ``refresh_p90_s`` (time between consecutive snapshots), ``share_meeting_guideline``
        (NaN without a fetch clock) and ``republished_share`` (row-weighted).
    """
    gaps = freshness["snapshot_time"].diff().dt.total_seconds()
    meets = freshness["meets_guideline"].dropna()
    weights = freshness["rows"].sum()
    return pd.Series({
        "snapshots": len(freshness),
        "clock": ", ".join(sorted(freshness["clock"].unique())),
        "header_age_p90_s": freshness["header_age_s"].quantile(0.9),
        "vehicle_age_p50_s": freshness["vehicle_age_p50_s"].median(),
        "vehicle_age_p90_s": freshness["vehicle_age_p90_s"].median(),
        "refresh_p50_s": gaps.median(),
        "refresh_p90_s": gaps.quantile(0.9),
        "share_meeting_guideline": float(meets.astype(bool).mean()) if len(meets) else np.nan,
        "republished_share": float((freshness["republished_share"] * freshness["rows"]).sum()
                                   / weights) if weights else np.nan,
    }, dtype=object)  # fmt: skip


def compute_cadence(positions: pd.DataFrame) -> pd.DataFrame:
    """Time and distance between each vehicle's consecutive fixes.

    Args:
        positions: Stored positions (one row per distinct fix): vehicle ids,
            ``vehicle_timestamp`` (else header/fetch time), ``latitude``, ``longitude``.

    Returns:
        One row per fix after a vehicle's first: ``vehicle``, ``time`` (UTC), ``gap_s``
        (since the vehicle's previous fix), ``moved_m`` (great-circle distance from it;
        NaN when either position is missing) and ``is_repeat_position`` (same coordinates
        as the previous fix: a stale or stopped vehicle).
    """
    frame = pd.DataFrame({"vehicle": compute_vehicle_keys(positions),
                          "time": compute_fix_times(positions),
                          "lat": pd.to_numeric(positions["latitude"]).astype(float),
                          "lon": pd.to_numeric(positions["longitude"]).astype(float)})  # fmt: skip
    frame = frame.dropna(subset=["vehicle", "time"]).sort_values(["vehicle", "time"],
                                                                  kind="stable")  # fmt: skip
    same = frame["vehicle"].eq(frame["vehicle"].shift()).fillna(False).to_numpy(dtype=bool)
    gap = frame["time"].diff().dt.total_seconds().to_numpy(dtype=float)
    lat, lon = frame["lat"].to_numpy(), frame["lon"].to_numpy()
    moved = _haversine_m(np.roll(lat, 1), np.roll(lon, 1), lat, lon)
    out = pd.DataFrame(
        {"vehicle": frame["vehicle"].to_numpy(), "time": frame["time"].to_numpy(), "gap_s": gap,
         "moved_m": moved, "is_repeat_position": moved == 0.0}
    )  # fmt: skip
    return out[same].reset_index(drop=True)


def _haversine_m(
    lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray
) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2 - lon1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    result: np.ndarray = 2 * _EARTH_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return result


def summarise_cadence(cadence: pd.DataFrame) -> pd.Series:
    """Headline cadence figures of :func:`compute_cadence`'s table.

    Returns:
        ``vehicles``, ``intervals``, ``gap_p50_s``, ``gap_p90_s``, ``share_over_90s``
        (gaps longer than 90 s) and ``repeat_position_share``.
    """
    gaps = cadence["gap_s"]
    return pd.Series({
        "vehicles": int(cadence["vehicle"].nunique()), "intervals": len(cadence),
        "gap_p50_s": gaps.median(), "gap_p90_s": gaps.quantile(0.9),
        "share_over_90s": float((gaps > 90).mean()) if len(gaps) else np.nan,
        "repeat_position_share": float(cadence["is_repeat_position"].mean())
        if len(cadence) else np.nan,
    }, dtype=object)  # fmt: skip


def count_activity(positions: pd.DataFrame, freq: str = "15min") -> pd.DataFrame:
    """Distinct vehicles, trips and routes seen, and fixes stored, per time bin.

    Columns in: vehicle ids, ``trip_id``, ``route_id`` and a fix time (see
    :func:`transitnet.analysis.compute_fix_times`). Returns index ``bin`` (UTC bin start)
    and columns ``vehicles, trips, routes, fixes``.
    """
    frame = pd.DataFrame(
        {"bin": compute_fix_times(positions).dt.floor(freq),
         "vehicle": compute_vehicle_keys(positions),
         "trip": positions.get("trip_id"), "route": positions.get("route_id")}
    )  # fmt: skip
    grouped = frame.dropna(subset=["bin"]).groupby("bin")
    return pd.DataFrame({"vehicles": grouped["vehicle"].nunique(),
                         "trips": grouped["trip"].nunique(), "routes": grouped["route"].nunique(),
                         "fixes": grouped.size()})  # fmt: skip
