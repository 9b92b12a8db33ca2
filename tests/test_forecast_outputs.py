"""Forecast outputs: positions on the shape, arrival offsets, next stops (tiny in-code data)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from transitnet.forecast_outputs import (
    NEXT_STOP_COLUMNS,
    compute_arrival_offsets,
    compute_forecast_lonlat,
    find_next_stops,
)
from transitnet.gtfs.artefacts import StaticArtefacts
from transitnet.gtfs.shapes import ShapeTable, make_shape_table, unproject_xy

CRS = "EPSG:32760"  # UTM 60S (Auckland)
X0, Y0 = 300_000.0, 5_920_000.0


def tiny_shapes() -> ShapeTable:
    """``E``: 1000 m due east (vertices every 500 m); ``N``: 400 m due north."""
    return make_shape_table(
        ["E", "N"],
        [np.array([X0, X0 + 500, X0 + 1000]), np.array([X0, X0])],
        [np.array([Y0, Y0, Y0]), np.array([Y0, Y0 + 400])],
        CRS,
    )


def tiny_artefacts(stop_dist: pd.DataFrame | None = None) -> StaticArtefacts:
    """Trips t1 (pattern p1: six stops every 200 m on E), t2 (p2: two stops), t3 (none)."""
    if stop_dist is None:
        p1 = [("E", "p1", i, 10 * (i + 1), f"s{i}", 200.0 * i) for i in range(6)]
        p2 = [("E", "p2", 0, 1, "s0", 0.0), ("E", "p2", 1, 2, "s5", 1000.0)]
        stop_dist = pd.DataFrame(
            p1 + p2,
            columns=["shape_id", "pattern_id", "stop_index", "stop_sequence", "stop_id", "dist_m"],
        )
    trips = pd.DataFrame(
        {
            "trip_id": ["t1", "t2", "t3"],
            "shape_id": ["E", "E", "E"],
            "pattern_id": pd.array(["p1", "p2", None], dtype="string"),
        }
    )
    empty = pd.DataFrame()
    return StaticArtefacts("v", tiny_shapes(), trips, stop_dist, None, empty, empty)


def lonlat_at(x: float, y: float) -> tuple[float, float]:
    lon, lat = unproject_xy(CRS, np.array([x]), np.array([y]))
    return float(lon[0]), float(lat[0])


def test_lonlat_on_the_shape_clamped_and_nan_where_unknown() -> None:
    shapes = tiny_shapes()
    shape_id = pd.Series(["E", "E", "N", "X", None], dtype="string")
    anchor = np.array([100.0, 900.0, 0.0, 10.0, 10.0])
    travelled = np.array([[150.0, 600.0], [50.0, 500.0], [-30.0, 200.0], [1.0, 2.0], [1.0, 2.0]])
    lon, lat = compute_forecast_lonlat(shapes, shape_id, anchor, travelled)
    assert lon.shape == lat.shape == (5, 2)
    np.testing.assert_allclose((lon[0, 0], lat[0, 0]), lonlat_at(X0 + 250, Y0), atol=1e-9)
    np.testing.assert_allclose((lon[0, 1], lat[0, 1]), lonlat_at(X0 + 700, Y0), atol=1e-9)
    # past the end of E and before the start of N: clamped to the ends
    np.testing.assert_allclose((lon[1, 1], lat[1, 1]), lonlat_at(X0 + 1000, Y0), atol=1e-9)
    np.testing.assert_allclose((lon[2, 0], lat[2, 0]), lonlat_at(X0, Y0), atol=1e-9)
    np.testing.assert_allclose((lon[2, 1], lat[2, 1]), lonlat_at(X0, Y0 + 200), atol=1e-9)
    assert np.isnan(lon[3:]).all() and np.isnan(lat[3:]).all()


def test_lonlat_keeps_quantile_axis_and_nan_inputs() -> None:
    shapes = tiny_shapes()
    travelled = np.array([[[0.0, 100.0, np.nan]]])  # (N=1, H=1, Q=3)
    lon, lat = compute_forecast_lonlat(shapes, ["E"], [np.nan], travelled)
    assert lon.shape == lat.shape == (1, 1, 3) and np.isnan(lon).all() and np.isnan(lat).all()
    lon, _ = compute_forecast_lonlat(shapes, ["E"], [200.0], travelled)
    np.testing.assert_allclose(lon[0, 0, 1], lonlat_at(X0 + 300, Y0)[0], atol=1e-9)
    assert np.isnan(lon[0, 0, 2]) and np.isfinite(lon[0, 0, :2]).all()


def test_lonlat_refuses_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="first dimension"):
        compute_forecast_lonlat(tiny_shapes(), ["E", "E"], [0.0], np.zeros((2, 3)))


def test_arrival_offsets_interpolate_between_knots() -> None:
    travelled = np.array([[300.0, 600.0, 1500.0]])
    ahead = np.array([[150.0, 600.0, 1000.0, 1500.0, 2000.0, 0.0, -5.0, np.nan]])
    out = compute_arrival_offsets([60, 120, 300], travelled, ahead)
    expected = [30.0, 120.0, 120.0 + 400 / 900 * 180, 300.0, np.nan, 0.0, 0.0, np.nan]
    np.testing.assert_allclose(out[0], expected)


def test_arrival_offsets_use_the_monotone_curve_and_stop_at_nan_knots() -> None:
    dip = compute_arrival_offsets([60, 120, 300], [[300.0, 200.0, 900.0]], [[300.0, 600.0]])
    np.testing.assert_allclose(dip[0], [60.0, 120.0 + 300 / 600 * 180])
    gap = compute_arrival_offsets([60, 120, 300], [[300.0, np.nan, 900.0]], [[200.0, 400.0]])
    np.testing.assert_allclose(gap[0], [40.0, np.nan])
    still = compute_arrival_offsets([60, 120], [[0.0, 0.0]], [[1.0, 0.0]])
    np.testing.assert_allclose(still[0], [np.nan, 0.0])


def test_arrival_offsets_are_monotone_in_distance() -> None:
    rng = np.random.default_rng(0)
    travelled = np.cumsum(rng.uniform(-50, 400, (200, 5)), axis=1)
    ahead = np.sort(rng.uniform(-100, 2000, (200, 6)), axis=1)
    out = compute_arrival_offsets([60, 120, 300, 600, 900], travelled, ahead)
    steps = np.diff(out, axis=1)
    assert (steps[np.isfinite(steps)] >= -1e-9).all()
    # once a distance is out of reach, every farther one is too
    assert not (np.isnan(out[:, :-1]) & np.isfinite(out[:, 1:])).any()


@pytest.mark.parametrize(
    ("horizons", "travelled", "ahead", "match"),
    [
        ([60, 60], np.zeros((1, 2)), np.zeros((1, 1)), "increasing"),
        ([0, 60], np.zeros((1, 2)), np.zeros((1, 1)), "positive"),
        ([60, 120], np.zeros((1, 3)), np.zeros((1, 1)), "travelled_m"),
        ([60, 120], np.zeros((2, 2)), np.zeros((1, 1)), "ahead_m"),
    ],
)
def test_arrival_offsets_refuse_bad_input(
    horizons: list[int], travelled: np.ndarray, ahead: np.ndarray, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        compute_arrival_offsets(horizons, travelled, ahead)


def test_next_stops_downstream_with_nulls_where_unknown() -> None:
    meta = pd.DataFrame(
        {
            "trip_id": ["t1", "t1", "t1", "t1", "t2", "t3", "zz", "t1", "t1"],
            "shape_id": ["E", "E", "E", "E", "E", "E", "E", "N", "E"],
            "dist_along_m": [250.0, 900.0, 1000.0, -10.0, 10.0, 10.0, 10.0, 10.0, np.nan],
        }
    )
    out = find_next_stops(meta, tiny_artefacts(), n_stops=3)
    assert list(out.columns) == list(NEXT_STOP_COLUMNS)
    assert len(out) == 27 and (out["window"].to_numpy() == np.repeat(np.arange(9), 3)).all()
    ids = out["stop_id"].astype(object).where(out["stop_id"].notna(), None).to_numpy().reshape(9, 3)
    ahead = out["ahead_m"].to_numpy().reshape(9, 3)
    assert list(ids[0]) == ["s2", "s3", "s4"]
    np.testing.assert_allclose(ahead[0], [150.0, 350.0, 550.0])
    assert list(out["stop_sequence"].iloc[:3]) == [30, 40, 50]
    assert list(ids[1]) == ["s5", None, None] and np.isnan(ahead[1, 1:]).all()
    assert list(ids[2]) == [None, None, None]
    assert list(ids[3]) == ["s0", "s1", "s2"] and ahead[3, 0] == pytest.approx(10.0)
    assert list(ids[4]) == ["s5", None, None]  # pattern p2 has only two stops
    # t3 has no pattern and zz is not in the feed: the pattern most trips on E follow
    assert list(ids[5]) == list(ids[6]) == ["s1", "s2", "s3"]
    via = out["pattern_via"].iloc[::3].tolist()
    assert via[:7] == ["trip"] * 5 + ["shape"] * 2
    # no pattern on shape N, and no distance: nulls
    assert (ids[7:] == None).all() and np.isnan(ahead[7:]).all()  # noqa: E711
    assert via[7] is pd.NA


def test_next_stops_match_a_brute_force_search_on_many_windows() -> None:
    rng = np.random.default_rng(1)
    n = 800
    meta = pd.DataFrame(
        {
            "trip_id": rng.choice(["t1", "t2", "t3", "zz"], n),
            "shape_id": rng.choice(["E", "N"], n, p=[0.9, 0.1]),
            "dist_along_m": rng.uniform(-50, 1100, n),
        }
    )
    art = tiny_artefacts()
    out = find_next_stops(meta, art, n_stops=2)
    got = out["ahead_m"].to_numpy().reshape(n, 2)
    pattern = {"t1": "p1", "t2": "p2"}
    sd = art.stop_dist.sort_values("stop_index")
    trips, shapes, dists = (meta[c].tolist() for c in ("trip_id", "shape_id", "dist_along_m"))
    for i, (trip, shape, dist) in enumerate(zip(trips, shapes, dists, strict=True)):
        wanted = pattern.get(str(trip), "p1")  # p1: the smallest of E's equally common patterns
        mine = sd[(sd["shape_id"] == shape) & (sd["pattern_id"] == wanted)]
        ahead = mine["dist_m"].to_numpy(np.float64) - float(dist)
        ahead = ahead[ahead > 0][:2]
        expected = np.concatenate([ahead, np.full(2 - len(ahead), np.nan)])
        np.testing.assert_allclose(got[i], expected, err_msg=f"window {i}")


def test_next_stops_without_any_stop_pattern_are_null() -> None:
    empty = tiny_artefacts().stop_dist.iloc[:0]
    meta = pd.DataFrame({"trip_id": ["t1"], "shape_id": ["E"], "dist_along_m": [5.0]})
    out = find_next_stops(meta, tiny_artefacts(empty), n_stops=2)
    assert len(out) == 2 and out["stop_id"].isna().all() and out["ahead_m"].isna().all()
    none = find_next_stops(meta.iloc[:0], tiny_artefacts(), n_stops=2)
    assert none.empty and list(none.columns) == list(NEXT_STOP_COLUMNS)


def test_next_stops_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError, match="dist_along_m"):
        find_next_stops(pd.DataFrame({"trip_id": [], "shape_id": []}), tiny_artefacts())
    meta = pd.DataFrame({"trip_id": ["t1"], "shape_id": ["E"], "dist_along_m": [5.0]})
    with pytest.raises(ValueError, match="n_stops"):
        find_next_stops(meta, tiny_artefacts(), n_stops=0)


def test_next_stops_with_null_trip_or_shape_ids() -> None:
    meta = pd.DataFrame(
        {
            "trip_id": pd.array([None, "t1", None], dtype="string"),
            "shape_id": pd.array(["E", None, None], dtype="string"),
            "dist_along_m": [250.0, 250.0, 250.0],
        }
    )
    out = find_next_stops(meta, tiny_artefacts(), n_stops=1)
    assert out["stop_id"].tolist()[0] == "s2" and out["pattern_via"].tolist()[0] == "shape"
    assert out["stop_id"].iloc[1:].isna().all() and out["pattern_via"].iloc[1:].isna().all()
