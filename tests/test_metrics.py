import numpy as np

from transitnet.gtfs.shapes import make_shape_table
from transitnet.metrics import (
    compute_coverage,
    compute_eta_band_accuracy,
    compute_mae,
    compute_masked_mean,
    compute_per_line_mae,
    compute_per_line_mean,
    compute_position_error,
    compute_rmse,
    summarise_by_horizon,
)


def test_mae_rmse_ignore_masked_targets() -> None:
    pred = np.array([[10.0, 0.0], [0.0, 100.0]])
    target = np.array([[0.0, 5.0], [4.0, 1e6]])
    mask = np.array([[True, True], [True, False]])
    np.testing.assert_allclose(compute_mae(pred, target, mask), [7.0, 5.0])
    np.testing.assert_allclose(compute_rmse(pred, target, mask), [np.sqrt(58.0), 5.0])
    none = np.zeros_like(mask)
    assert np.isnan(compute_mae(pred, target, none)).all()


def test_coverage_and_per_line() -> None:
    target = np.array([[1.0], [5.0], [9.0], [20.0]])
    mask = np.ones_like(target, dtype=bool)
    cov = compute_coverage(np.full_like(target, 0.0), np.full_like(target, 10.0), target, mask)
    assert cov[0] == 0.75
    per = compute_per_line_mae(target * 0, target, mask, np.array(["a", "a", "b", "b"]), [60])
    assert per["a"] == {"mae_m": {"60": 3.0}, "n": 2}
    assert per["b"]["mae_m"]["60"] == 14.5
    assert summarise_by_horizon(np.array([1.0, 2.0]), [60, 120]) == {"60": 1.0, "120": 2.0}


def test_eta_bands_follow_the_transit_app_table() -> None:
    horizon = np.array([60.0, 60.0, 60.0, 400.0, 700.0])
    actual = np.zeros(5)
    predicted = np.array([-31.0, 89.0, 91.0, -60.0, 271.0])  # early 31: out; late 89: in
    acc = compute_eta_band_accuracy(predicted, actual, horizon)
    assert acc["0-3"] == 1 / 3
    assert acc["6-10"] == 1.0
    assert acc["10-15"] == 0.0  # 271 s late > 270 s
    assert acc["3-6"] != acc["3-6"]  # no predictions in that bucket -> NaN, left out
    assert abs(acc["score"] - (1 / 3 + 1.0 + 0.0) / 3) < 1e-9


def test_position_error_on_an_l_shaped_shape() -> None:
    # (0, 0) -> (1000, 0) -> (1000, 1000): 2 km, a right angle at 1 km
    shapes = make_shape_table(
        ["L"], [np.array([0.0, 1000, 1000])], [np.array([0.0, 0, 1000])], "EPSG:32760"
    )
    anchor = np.array([500.0, 500.0, 500.0, 500.0])
    pred = np.array([[1000.0, 1500.0], [0.0, 0.0], [5000.0, 100.0], [10.0, 10.0]])
    target = np.array([[500.0, 500.0], [1000.0, 0.0], [1500.0, 100.0], [0.0, 0.0]])
    err = compute_position_error(shapes, ["L", "L", "L", "unknown"], anchor, pred, target)
    # straight-line gaps: (1000,500)-(1000,0); (1000,1000)-(1000,0); (500,0)-(1000,500)
    np.testing.assert_allclose(err[0], [500.0, 1000.0])
    np.testing.assert_allclose(err[1], [np.hypot(500.0, 500.0), 0.0])  # shorter than 1000 m
    np.testing.assert_allclose(err[2], [0.0, 0.0])  # both beyond the end: clamped to it
    assert np.isnan(err[3]).all()  # unknown shape: no position, never a silent 0


def test_masked_means_overall_and_per_line() -> None:
    values = np.array([[1.0, 10.0], [3.0, np.nan], [5.0, 50.0]])
    mask = np.array([[True, True], [True, False], [False, True]])
    np.testing.assert_allclose(compute_masked_mean(values, mask), [2.0, 30.0])
    per_line = compute_per_line_mean(values, mask, np.array(["a", "a", "b"]), (60, 120))
    assert per_line["a"] == {"60": 2.0, "120": 10.0}
    assert per_line["b"]["120"] == 50.0 and np.isnan(per_line["b"]["60"])
