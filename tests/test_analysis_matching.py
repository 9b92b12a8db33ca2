from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyproj import Transformer

from transitnet import analysis_matching as amt
from transitnet.gtfs.artefacts import StaticArtefacts
from transitnet.gtfs.shapes import make_shape_table

CRS = "EPSG:32632"  # UTM 32N (the simulated network's zone)
_TO_LONLAT = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
X0, Y0 = 420_000.0, 5_090_000.0


def _matched(rows: list[tuple[str, int, float, str]]) -> pd.DataFrame:
    """(trajectory, seconds after 07:00 UTC, distance, status) → matched-like rows."""
    t0 = pd.Timestamp("2024-05-07T07:00", tz="UTC")
    return pd.DataFrame(
        {
            "trajectory_id": [r[0] for r in rows],
            "vehicle_id": [f"veh-{r[0]}" for r in rows],
            "trip_id": [f"trip-{r[0]}" for r in rows],
            "shape_id": "S",
            "line_key": "L",
            "vehicle_timestamp": pd.Series([t0 + pd.Timedelta(seconds=r[1]) for r in rows]).astype(
                "datetime64[us, UTC]"
            ),
            "dist_along_m": [r[2] for r in rows],
            "offset_m": [3.0] * len(rows),
            "match_status": [r[3] for r in rows],
            "is_stale": [False] * len(rows),
            "is_reacquired": [False] * len(rows),
        }
    )


def test_headways_interpolate_the_passing_time() -> None:
    matched = _matched(
        [
            ("a", 0, 0.0, "ok"),
            ("a", 100, 1000.0, "ok"),
            ("a", 200, 2000.0, "ok"),
            ("b", 300, 400.0, "ok"),
            ("b", 400, 600.0, "ok"),
            ("b", 500, 1600.0, "ok"),
            ("c", 50, 1500.0, "ok"),
            ("c", 90, 1800.0, "ok"),  # first seen past the point
            ("d", 600, 0.0, "off_shape"),
            ("d", 700, 2000.0, "off_shape"),  # not trusted
        ]
    )
    out = amt.compute_headways(matched, "S", 500.0)
    assert out["trajectory_id"].tolist() == ["a", "b"]
    assert out["passed_at"].tolist() == [
        pd.Timestamp("2024-05-07T07:00:50", tz="UTC"),
        pd.Timestamp("2024-05-07T07:05:50", tz="UTC"),
    ]
    assert np.isnan(out["headway_s"].iloc[0]) and out["headway_s"].iloc[1] == 300.0
    assert amt.compute_headways(matched, "other", 500.0).empty


def test_select_and_summarise_trajectories() -> None:
    matched = _matched(
        [
            ("a", 0, 100.0, "ok"),
            ("a", 60, 50.0, "fallback_variant"),
            ("b", 0, 0.0, "ok"),
            ("b", 30, 10.0, "trip_not_in_static"),
        ]
    )
    matched.loc[1, "is_stale"] = False
    with pytest.raises(ValueError, match="shape_id or a line_key"):
        amt.select_trajectories(matched)
    rows = amt.select_trajectories(matched, line_key="L")
    assert len(rows) == 3  # the unresolved fix is left out
    summary = amt.summarise_trajectories(rows)
    assert summary.loc["a", "net_m"] == -50.0 and summary.loc["a", "fixes"] == 2
    assert summary.loc["b", "fixes"] == 1 and summary.loc["a", "reacquired"] == 0
    status = amt.summarise_match_status(matched)
    assert status.loc["ok", "rows"] == 2 and status.loc["ok", "share"] == 0.5
    by_line = amt.summarise_match_status(matched, by="trajectory_id")
    assert by_line.loc[("b", "ok"), "share"] == 0.5


def _loop_artefacts() -> StaticArtefacts:
    """A 400 m square loop that starts and ends at its south-west corner."""
    xs = X0 + np.array([0.0, 100.0, 100.0, 0.0, 0.0])
    ys = Y0 + np.array([0.0, 0.0, 100.0, 100.0, 0.0])
    shapes = make_shape_table(["loop"], [xs], [ys], CRS)
    empty = pd.DataFrame()
    return StaticArtefacts("v1", shapes, empty, empty, None, empty, empty)


def test_naive_projection_cannot_tell_the_start_of_a_loop_from_its_end() -> None:
    art = _loop_artefacts()
    lon, lat = _TO_LONLAT.transform([X0 + 2.0, X0 + 50.0, X0], [Y0 + 1.0, Y0 + 100.0, Y0])
    matched = pd.DataFrame(
        {
            "latitude": [*list(lat), np.nan],
            "longitude": [*list(lon), 8.0],
            "shape_id": ["loop", "loop", "gone", "loop"],
            "dist_along_m": [398.0, 250.0, 0.0, 10.0],
        }
    )
    out = amt.compute_naive_projection(matched, art)
    assert out.index.tolist() == [0, 1]  # unknown shape and missing position left out
    assert out.loc[0, "naive_dist_m"] == pytest.approx(2.0, abs=0.01)  # the start corner
    assert out.loc[0, "naive_error_m"] == pytest.approx(-396.0, abs=0.01)
    assert out.loc[1, "naive_error_m"] == pytest.approx(0.0, abs=0.01)
