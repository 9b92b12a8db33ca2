"""Matched trajectories: match status, offsets, distance-time, headways, naive projection.

Tables in, tables out (columns of :func:`transitnet.gtfs.match.match_positions`); plots
in :mod:`transitnet.analysis_plots`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely

from transitnet.gtfs.artefacts import StaticArtefacts
from transitnet.gtfs.shapes import project_lonlat, valid_lonlat

#: Match statuses whose distance along the shape is trusted (see ``transitnet.gtfs.match``).
TRUSTED_STATUSES: tuple[str, ...] = ("ok", "fallback_suffix", "fallback_headsign",
                                     "fallback_variant", "fallback_stops")  # fmt: skip


def summarise_match_status(matched: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """Rows per ``match_status`` (optionally per ``by``), with shares and offsets.

    Columns in: ``match_status``, ``offset_m`` (and ``by``). Returns one row per status
    (and group): ``rows``, ``share`` (of the group's rows), ``offset_p50_m``,
    ``offset_p90_m``, ``offset_p99_m`` (NaN where no offset was measured).
    """
    keys = [by, "match_status"] if by else ["match_status"]
    frame = matched[keys].copy()
    frame["offset_m"] = pd.to_numeric(matched["offset_m"]).astype(float)
    grouped = frame.groupby(keys, dropna=False, observed=True)["offset_m"]
    out = pd.DataFrame({"rows": grouped.size(), "offset_p50_m": grouped.quantile(0.5),
                        "offset_p90_m": grouped.quantile(0.9),
                        "offset_p99_m": grouped.quantile(0.99)})  # fmt: skip
    totals = out.groupby(level=0)["rows"].transform("sum") if by else out["rows"].sum()
    out.insert(1, "share", out["rows"] / totals)
    return out.sort_values("rows", ascending=False)


def compute_headways(matched: pd.DataFrame, shape_id: str, at_m: float) -> pd.DataFrame:
    """When each trajectory on a shape passed ``at_m`` metres, and the headway to the previous.

    Args:
        matched: Matched positions: ``trajectory_id, shape_id, vehicle_timestamp,
            dist_along_m, match_status, is_stale``; ``vehicle_id``, ``trip_id`` if present.
        shape_id: The shape.
        at_m: Distance along the shape (metres) of the observation point.

    Returns:
        One row per trajectory seen on both sides of ``at_m``, by passing time:
        ``trajectory_id, vehicle_id, trip_id, passed_at`` (UTC, interpolated between the
        two fixes around the point), ``headway_s`` (since the previous vehicle; NaN for
        the first). Trajectories first seen beyond the point are not counted.
    """
    rows = _trusted(matched[matched["shape_id"] == shape_id])
    rows = rows.sort_values(["trajectory_id", "vehicle_timestamp"], kind="stable")
    d = rows["dist_along_m"].to_numpy(dtype=float)
    since = rows["vehicle_timestamp"] - pd.Timestamp(0, tz="UTC")
    t = since.dt.total_seconds().to_numpy(dtype=float)
    traj = rows["trajectory_id"].astype("string").to_numpy()
    prev = np.concatenate([[False], traj[1:] == traj[:-1]])
    cross = prev & (d >= at_m) & (np.roll(d, 1) < at_m)
    first = cross & ~pd.Series(traj).where(cross).duplicated().to_numpy()
    i = np.flatnonzero(first)
    frac = (at_m - d[i - 1]) / np.where(d[i] > d[i - 1], d[i] - d[i - 1], 1.0)
    passed = t[i - 1] + frac * (t[i] - t[i - 1])
    out = pd.DataFrame({
        "trajectory_id": traj[i],
        "vehicle_id": rows["vehicle_id"].to_numpy()[i] if "vehicle_id" in rows else pd.NA,
        "trip_id": rows["trip_id"].to_numpy()[i] if "trip_id" in rows else pd.NA,
        "passed_at": pd.to_datetime(passed, unit="s", utc=True).astype("datetime64[us, UTC]"),
    }).sort_values("passed_at", kind="stable")  # fmt: skip
    out["headway_s"] = out["passed_at"].diff().dt.total_seconds()
    return out.reset_index(drop=True)


def _trusted(matched: pd.DataFrame) -> pd.DataFrame:
    """Rows with a trusted distance along the shape that are not stale repeats."""
    ok = matched["match_status"].isin(TRUSTED_STATUSES) & matched["dist_along_m"].notna()
    if "is_stale" in matched:
        ok &= ~matched["is_stale"].fillna(False).astype(bool)
    return matched[ok.to_numpy(dtype=bool)]


def select_trajectories(
    matched: pd.DataFrame, *, shape_id: str | None = None, line_key: str | None = None
) -> pd.DataFrame:
    """Trusted, non-stale matched fixes of one shape or line, by trajectory and time.

    Columns in: ``match_status, dist_along_m, is_stale, shape_id, line_key,
    trajectory_id, vehicle_timestamp``. Returns the same columns, filtered and sorted.

    Raises:
        ValueError: when neither ``shape_id`` nor ``line_key`` is given.
    """
    if shape_id is None and line_key is None:
        raise ValueError("give a shape_id or a line_key")
    keep = pd.Series(True, index=matched.index)
    if shape_id is not None:
        keep &= matched["shape_id"] == shape_id
    if line_key is not None:
        keep &= matched["line_key"] == line_key
    rows = _trusted(matched[keep.fillna(False).to_numpy(dtype=bool)])
    return rows.sort_values(["trajectory_id", "vehicle_timestamp"], kind="stable")


def compute_naive_projection(matched: pd.DataFrame, art: StaticArtefacts) -> pd.DataFrame:
    """Each fix projected onto the nearest point of its whole shape, beside the matcher's.

    Naive projection ignores the vehicle's history, so on a loop or an out-and-back a
    fix near the shared stretch lands on whichever leg is closer; the matcher keeps the
    vehicle on its own leg. This measures the difference.

    Args:
        matched: ``latitude, longitude, shape_id, dist_along_m``.
        art: The static artefacts the positions were matched with.

    Returns:
        The rows with a valid position and a shape in ``art`` (input index kept):
        ``shape_id, dist_along_m, naive_dist_m`` and ``naive_error_m`` (naive −
        matched, metres).
    """
    table = art.shapes
    idx = table.index_of(matched["shape_id"])
    lon = pd.to_numeric(matched["longitude"]).to_numpy(dtype=float, na_value=np.nan)
    lat = pd.to_numeric(matched["latitude"]).to_numpy(dtype=float, na_value=np.nan)
    ok = (idx >= 0) & valid_lonlat(lon, lat)
    x, y = project_lonlat(table.crs, lon[ok], lat[ok])
    bounds = zip(table.offsets[:-1], table.offsets[1:], strict=True)
    lines = np.array([shapely.linestrings(table.x[a:b], table.y[a:b]) for a, b in bounds])
    naive = shapely.line_locate_point(lines[idx[ok]], shapely.points(x, y))
    out = matched.loc[ok, ["shape_id", "dist_along_m"]].copy()
    out["naive_dist_m"] = naive
    out["naive_error_m"] = naive - pd.to_numeric(out["dist_along_m"]).astype(float)
    result: pd.DataFrame = out
    return result


def summarise_trajectories(trajectories: pd.DataFrame) -> pd.DataFrame:
    """One row per trajectory: who, when, how far it went along its shape.

    Columns in (:func:`select_trajectories`): ``trajectory_id, vehicle_timestamp,
    dist_along_m``; optional ``vehicle_id, trip_id, shape_id, is_reacquired``.

    Returns:
        Index ``trajectory_id``: ``vehicle_id, trip_id, shape_id, start, end`` (UTC),
        ``fixes, first_m, last_m, net_m`` (last − first: negative runs backwards along
        the shape) and ``reacquired`` (fixes placed outside their window).
    """
    rows = trajectories.sort_values(["trajectory_id", "vehicle_timestamp"], kind="stable")
    grouped = rows.groupby("trajectory_id", sort=False)
    out = pd.DataFrame({c: grouped[c].first() for c in ("vehicle_id", "trip_id", "shape_id")
                        if c in rows})  # fmt: skip
    out["start"] = grouped["vehicle_timestamp"].min()
    out["end"] = grouped["vehicle_timestamp"].max()
    out["fixes"] = grouped.size()
    out["first_m"] = grouped["dist_along_m"].first()
    out["last_m"] = grouped["dist_along_m"].last()
    out["net_m"] = out["last_m"] - out["first_m"]
    if "is_reacquired" in rows:
        out["reacquired"] = grouped["is_reacquired"].sum().astype(int)
    return out.sort_values("start")
