from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from transitnet import analysis_plots as ap
from transitnet.report import save_figure


def _utc(times: list[str]) -> pd.Series:
    return pd.Series(pd.to_datetime(times, utc=True)).astype("datetime64[us, UTC]")


def _trajectories() -> pd.DataFrame:
    times = _utc([f"2024-05-07T06:{m:02d}" for m in (0, 2, 4, 10, 12)])
    return pd.DataFrame(
        {
            "trajectory_id": ["a", "a", "a", "b", "b"],
            "vehicle_timestamp": times,
            "dist_along_m": [0.0, 500.0, 900.0, 0.0, 400.0],
            "is_reacquired": [False, True, False, False, False],
            "is_dwell": pd.array([False, False, True, None, False], "boolean"),
        }
    )


def test_figures_stay_out_of_pyplot_and_save_as_png(tmp_path: Path) -> None:
    before = plt.get_fignums()
    fig = ap.plot_trajectories(_trajectories(), "Europe/Zurich", "test")
    assert isinstance(fig, Figure) and plt.get_fignums() == before  # shown once, when returned
    ax = fig.axes[0]
    assert len([ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]) == 2
    assert "2 trajectories" in ax.get_title() and "Europe/Zurich" in ax.get_xlabel()
    first = ax.get_lines()[0].get_xdata()
    assert pd.Timestamp(first[0]) == pd.Timestamp("2024-05-07T08:00")  # local clock (CEST)
    path = save_figure(fig, tmp_path / "t.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quality_plots_draw_their_tables() -> None:
    contents = pd.DataFrame({"set_share": [1.0, 0.0, 0.5]}, index=["a", "b", "c"])
    assert len(ap.plot_contents(contents).axes[0].patches) == 3
    bins = pd.DatetimeIndex(_utc(["2024-05-07T06:00", "2024-05-07T06:15"]))
    rates = pd.DataFrame({"E039": [1.0, 1.0], "E012": [0.0, np.nan]}, index=bins)
    ax = ap.plot_flag_rates(rates, "UTC").axes[0]
    assert next(t.get_text() for t in ax.get_legend().get_texts()).startswith("E039 is_deleted")
    assert "no rule raised" in ap.plot_flag_rates(rates[[]]).axes[0].texts[0].get_text()
    activity = pd.DataFrame({"vehicles": [3, 4], "trips": [3, 5], "routes": [1, 2]}, index=bins)
    assert len(ap.plot_activity(activity).axes[0].get_lines()) == 3


def test_freshness_cadence_and_matching_plots() -> None:
    freshness = pd.DataFrame(
        {
            "snapshot_time": _utc(["2024-05-07T06:00:00", "2024-05-07T06:00:30"]),
            "clock": ["header_timestamp"] * 2,
            "header_age_s": [np.nan, np.nan],
            "vehicle_age_p50_s": [10.0, 12.0],
            "vehicle_age_p90_s": [60.0, 95.0],
            "republished_share": [0.0, 0.2],
        }
    )
    fig = ap.plot_freshness(freshness)
    assert len(fig.axes[0].get_lines()) == 3  # p50, p90, guideline; no header age without a clock
    cadence = pd.DataFrame(
        {"gap_s": [30.0, 31.0, 400.0], "is_repeat_position": [False, True, False]}
    )
    ax = ap.plot_cadence(cadence, max_s=300).axes[0]
    assert "33.3 %" in ax.get_title() and sum(p.get_height() for p in ax.patches) == 3
    summary = pd.DataFrame({"rows": [90, 10], "share": [0.9, 0.1]}, index=["ok", "off_shape"])
    assert [t.get_text() for t in ap.plot_match_status(summary).axes[0].texts] == [
        "90.0 %",
        "10.0 %",
    ]
    matched = pd.DataFrame(
        {"match_status": ["ok", "ok", "off_shape"], "offset_m": [1.0, 2.0, 900.0]}
    )
    assert len(ap.plot_offsets(matched).axes[0].patches) == 2
    headways = pd.DataFrame(
        {"passed_at": _utc(["2024-05-07T06:00", "2024-05-07T06:10"]), "headway_s": [np.nan, 600.0]}
    )
    assert "10.0 min" in ap.plot_headways(headways).axes[0].get_legend().get_texts()[0].get_text()
