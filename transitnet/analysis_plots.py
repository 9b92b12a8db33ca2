"""Matplotlib figures of the tables in :mod:`transitnet.analysis_quality`.

Every function returns a ``Figure`` (never shows it), so notebooks display it and tests
inspect it; :func:`transitnet.report.save_figure` writes one as PNG. Times are drawn in
the ``timezone`` argument's local clock.
"""

from __future__ import annotations

from typing import Any

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from transitnet.analysis_quality import FRESHNESS_LIMIT_S, RULE_TITLES

#: Distance-time plots with more trajectories than this leave out the per-fix markers.
MAX_MARKED = 40


def new_figure(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, Any]:
    """A figure and its axes, like ``pyplot.subplots`` but outside pyplot's registry.

    Nothing is drawn or kept open behind the caller's back: a notebook shows the figure
    once, when a cell returns it, and it is freed with its last reference.
    """
    figsize = kwargs.pop("figsize", None)
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def to_local(times: pd.Series | pd.Index, timezone: str) -> np.ndarray:
    """UTC times as naive local ``datetime64`` values (what matplotlib draws)."""
    values = pd.DatetimeIndex(times).tz_convert(timezone).tz_localize(None)
    return np.asarray(values.to_numpy(), dtype="datetime64[us]")


def _time_axis(ax: Axes, timezone: str) -> None:
    ax.set_xlabel(f"local time ({timezone})")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))  # type: ignore[no-untyped-call]
    ax.grid(alpha=0.3)


def plot_contents(contents: pd.DataFrame, title: str = "Fields the feed sets") -> Figure:
    """Horizontal bars of ``set_share`` per column (from ``summarise_contents``)."""
    data = contents["set_share"].astype(float)[::-1]
    fig, ax = new_figure(figsize=(6.5, 0.22 * len(data) + 1.2))
    bars = ax.barh(list(map(str, data.index)), 100 * data.to_numpy(), color="C0")
    for bar, value in zip(bars, data.to_numpy(), strict=True):
        ax.text(bar.get_width() + 1, bar.get_y() + bar.get_height() / 2, f"{100 * value:.0f} %",
                va="center", fontsize=7)  # fmt: skip
    ax.set_xlim(0, 112)
    ax.set_xlabel("rows where the field is set (%)")
    ax.set_title(title)
    ax.tick_params(axis="y", labelsize=7)
    return fig


def plot_activity(activity: pd.DataFrame, timezone: str = "UTC") -> Figure:
    """Vehicles, trips and routes seen per bin (from ``count_activity``)."""
    fig, ax = new_figure(figsize=(7, 3.5))
    x = to_local(activity.index, timezone)
    for column in ("vehicles", "trips", "routes"):
        ax.plot(x, activity[column].to_numpy(), label=column)
    ax.set_ylabel("distinct per bin")
    ax.set_title("Vehicles, trips and routes seen per time bin")
    ax.legend()
    _time_axis(ax, timezone)
    return fig


def plot_flag_rates(rates: pd.DataFrame, timezone: str = "UTC") -> Figure:
    """Share of evaluated rows flagged per rule over time (from ``compute_flag_rates``)."""
    fig, ax = new_figure(figsize=(7, 3.8))
    x = to_local(rates.index, timezone)
    for rule in rates.columns:
        ax.plot(x, 100 * rates[rule].to_numpy(dtype=float), marker=".",
                label=f"{rule} {RULE_TITLES.get(str(rule), '')}")  # fmt: skip
    if len(rates.columns):
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "no rule raised", transform=ax.transAxes, ha="center")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_ylabel("rows flagged (% of evaluated)")
    ax.set_title("Validator rules over time")
    _time_axis(ax, timezone)
    return fig


def plot_freshness(freshness: pd.DataFrame, timezone: str = "UTC") -> Figure:
    """Vehicle and header age per snapshot against the 90 s guideline (``compute_freshness``)."""
    fig, (ax, bx) = new_figure(2, 1, figsize=(7, 5), sharex=True, height_ratios=[3, 1.4])
    x = to_local(freshness["snapshot_time"], timezone)
    ax.plot(x, freshness["vehicle_age_p50_s"], label="vehicle age p50", lw=1)
    ax.plot(x, freshness["vehicle_age_p90_s"], label="vehicle age p90", lw=1)
    if freshness["header_age_s"].notna().any():
        ax.plot(x, freshness["header_age_s"], label="header age", lw=1)
    ax.axhline(FRESHNESS_LIMIT_S, color="r", ls=":", label="Cal-ITP guideline (p90 ≤ 90 s)")
    clock = ", ".join(sorted(freshness["clock"].unique()))
    ax.set_ylabel(f"age (s) against {clock}")
    ax.set_title("Freshness per snapshot")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    bx.plot(x, 100 * freshness["republished_share"], color="C3", lw=1)
    bx.set_ylabel("re-published\nfixes (%)", fontsize=8)
    _time_axis(bx, timezone)
    return fig


def plot_cadence(cadence: pd.DataFrame, max_s: float = 300.0) -> Figure:
    """Histogram of the time between a vehicle's fixes (from ``compute_cadence``)."""
    gaps = cadence["gap_s"].to_numpy(dtype=float)
    fig, ax = new_figure(figsize=(6.5, 3.5))
    ax.hist(np.clip(gaps, 0, max_s), bins=np.arange(0, max_s + 5, 5).tolist(), color="C0")
    for q, style in ((0.5, "--"), (0.9, ":")):
        value = float(np.nanquantile(gaps, q)) if len(gaps) else np.nan
        ax.axvline(value, color="k", ls=style, label=f"p{round(100 * q)} {value:.0f} s")
    repeats = float(cadence["is_repeat_position"].mean()) if len(cadence) else np.nan
    ax.set_xlabel(f"seconds since the vehicle's previous fix (last bin: ≥ {max_s:.0f} s)")
    ax.set_ylabel("fixes")
    ax.set_title(f"Cadence per vehicle; {100 * repeats:.1f} % repeat the previous position")
    ax.legend()
    return fig


def plot_match_status(summary: pd.DataFrame, title: str = "Match status") -> Figure:
    """Bars of rows per match status (from ``summarise_match_status`` without ``by``)."""
    fig, ax = new_figure(figsize=(6.5, 3.2))
    names = [str(i[-1] if isinstance(i, tuple) else i) for i in summary.index]
    bars = ax.bar(names, summary["rows"].to_numpy())
    for bar, share in zip(bars, summary["share"].to_numpy(dtype=float), strict=True):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{100 * share:.1f} %",
                ha="center", va="bottom", fontsize=8)  # fmt: skip
    ax.set_yscale("log")
    ax.set_ylabel("rows")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=25)
    return fig


def plot_offsets(matched: pd.DataFrame, max_m: float = 250.0) -> Figure:
    """Histogram of ``offset_m`` (distance from the shape) per ``match_status``."""
    fig, ax = new_figure(figsize=(6.5, 3.5))
    bins = np.arange(0, max_m + 5, 5).tolist()
    for status, group in matched.groupby("match_status", observed=True):
        offsets = pd.to_numeric(group["offset_m"]).astype(float).dropna().to_numpy()
        if len(offsets):
            ax.hist(np.clip(offsets, 0, max_m), bins=bins, histtype="step", lw=1.5,
                    label=f"{status} (n={len(offsets)})")  # fmt: skip
    ax.axvline(200, color="r", ls=":", label="E029: 200 m")
    ax.set_yscale("log")
    ax.set_xlabel(f"offset from the shape (m; last bin ≥ {max_m:.0f} m)")
    ax.set_ylabel("fixes")
    ax.set_title("How far fixes lie from their shape")
    ax.legend(fontsize=7)
    return fig


def plot_trajectories(
    trajectories: pd.DataFrame, timezone: str = "UTC", title: str = "Distance–time"
) -> Figure:
    """Distance along the shape against time, one line per trajectory.

    Columns in (``select_trajectories``): ``trajectory_id, vehicle_timestamp,
    dist_along_m``; optional ``is_reacquired`` (drawn as crosses: a jump after a gap) and
    ``is_dwell`` (dots: dwelling at a stop), marked up to :data:`MAX_MARKED` trajectories.
    """
    fig, ax = new_figure(figsize=(7.5, 4.2))
    n = trajectories["trajectory_id"].nunique()
    for _, traj in trajectories.groupby("trajectory_id", sort=False):
        x = to_local(traj["vehicle_timestamp"], timezone)
        line = ax.plot(x, traj["dist_along_m"].to_numpy(dtype=float) / 1000, lw=1)[0]
        for column, marker in (("is_reacquired", "x"), ("is_dwell", ".")):
            if column in traj and n <= MAX_MARKED:
                sel = traj[column].fillna(False).to_numpy(dtype=bool)
                y = traj["dist_along_m"].to_numpy(dtype=float)[sel] / 1000
                ax.plot(x[sel], y, marker, color=line.get_color(), ms=4)
    ax.set_ylabel("distance along the shape (km)")
    marks = "; × re-acquired, • dwelling" if n <= MAX_MARKED else ""
    ax.set_title(f"{title} ({n} trajectories{marks})")
    _time_axis(ax, timezone)
    return fig


def plot_headways(headways: pd.DataFrame, timezone: str = "UTC", title: str = "Headways") -> Figure:
    """Headway at an observation point against passing time (from ``compute_headways``)."""
    fig, ax = new_figure(figsize=(7, 3.5))
    x = to_local(headways["passed_at"], timezone)
    ax.stem(x, headways["headway_s"].to_numpy(dtype=float) / 60, basefmt=" ")
    median = headways["headway_s"].median() / 60
    ax.axhline(median, color="k", ls="--", lw=1, label=f"median {median:.1f} min")
    ax.set_ylabel("headway (min)")
    ax.set_title(title)
    ax.legend()
    _time_axis(ax, timezone)
    return fig
