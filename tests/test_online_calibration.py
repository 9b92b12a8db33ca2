"""Online recalibration: uses only resolved outcomes, adapts to drift, serving = batch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from transitnet.metrics import compute_coverage
from transitnet.online_calibration import (
    OnlineCalibrationConfig,
    OnlineCalibrator,
    apply_scales,
    compute_anchor_seconds,
    compute_conformity_scores,
    compute_online_scales,
)

QUANTILES = (0.1, 0.5, 0.9)
HORIZONS = (60, 300)


def drifting_forecasts(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, ...]:
    """A band of ±100 m around a perfect median; noise sd 60 m, then 180 m after 3 h."""
    rng = np.random.default_rng(seed)
    anchor = np.sort(rng.uniform(0, 6 * 3600, n))
    mid = np.tile(np.array([500.0, 2500.0]), (n, 1))
    raw = np.stack([mid - 100, mid, mid + 100], axis=2)
    sd = np.where(anchor < 3 * 3600, 60.0, 180.0)[:, None]
    target = mid + rng.normal(0, 1, (n, 2)) * sd
    return anchor, raw, target, np.ones((n, 2), dtype=bool)


def test_a_scale_at_least_the_score_covers_the_target() -> None:
    raw = np.array([[[80.0, 100.0, 130.0]]])
    for y, inside in ((95.0, True), (70.0, False), (125.0, True), (140.0, False)):
        s = compute_conformity_scores(raw, np.array([[y]]))
        assert (s[0, 0, 0] <= 1.0 and s[0, 0, 2] <= 1.0) == inside, y
        assert s[0, 0, 1] == 0.0


def test_online_scales_recover_coverage_after_drift_that_static_scales_miss() -> None:
    anchor, raw, target, mask = drifting_forecasts()
    prior = np.ones((2, 3), dtype=np.float32)
    static = compute_coverage(raw[..., 0], raw[..., 2], target, mask)
    scales = compute_online_scales(anchor, HORIZONS, raw, target, mask, QUANTILES, prior)
    online = apply_scales(raw, scales)
    late = anchor > 4 * 3600  # an hour after the change: the window has caught up
    cov = compute_coverage(online[late, :, 0], online[late, :, 2], target[late], mask[late])
    assert (static < 0.75).all()
    np.testing.assert_allclose(cov, 0.8, atol=0.04)
    np.testing.assert_array_equal(online[..., 1], raw[..., 1])  # the median never moves


def test_a_forecast_never_sees_an_outcome_resolved_after_it() -> None:
    anchor, raw, target, mask = drifting_forecasts(2000)
    prior = np.full((2, 3), 1.3, dtype=np.float32)
    cfg = OnlineCalibrationConfig(min_count=50)
    base = compute_online_scales(anchor, HORIZONS, raw, target, mask, QUANTILES, prior, cfg)
    cut = 2 * 3600.0
    poisoned = target.copy()
    poisoned[anchor > cut] += 5000.0  # huge errors, all resolved after `cut`
    again = compute_online_scales(anchor, HORIZONS, raw, poisoned, mask, QUANTILES, prior, cfg)
    before = anchor < cut
    np.testing.assert_array_equal(again[before], base[before])
    assert (again[anchor > cut + 3600, :, 2] > 10).all()


def test_too_few_resolved_outcomes_keep_the_validation_scales() -> None:
    anchor, raw, target, mask = drifting_forecasts(500)
    prior = np.array([[1.2, 1.0, 1.4], [1.5, 1.0, 1.6]], dtype=np.float32)
    cfg = OnlineCalibrationConfig(min_count=10_000)
    scales = compute_online_scales(anchor, HORIZONS, raw, target, mask, QUANTILES, prior, cfg)
    np.testing.assert_array_equal(scales, np.broadcast_to(prior, scales.shape))


def test_the_serving_calibrator_agrees_with_the_batch_computation() -> None:
    anchor, raw, target, mask = drifting_forecasts(3000)
    prior = np.ones((2, 3), dtype=np.float32)
    cfg = OnlineCalibrationConfig(min_count=50)
    batch = compute_online_scales(anchor, HORIZONS, raw, target, mask, QUANTILES, prior, cfg)
    live = OnlineCalibrator(HORIZONS, QUANTILES, prior, cfg)
    live.observe(anchor, raw, target, mask)  # stored now, each used only once resolved
    for i in (100, 1500, 2999):
        now = np.floor(anchor[i] / cfg.step_s) * cfg.step_s
        np.testing.assert_allclose(live.scales_at(now), batch[i], rtol=1e-6)


def test_mismatched_shapes_and_bad_settings_are_refused() -> None:
    anchor, raw, target, mask = drifting_forecasts(10)
    with pytest.raises(ValueError, match="must agree"):
        compute_online_scales(
            anchor, HORIZONS, raw, target[:, :1], mask, QUANTILES, np.ones((2, 3))
        )
    with pytest.raises(ValueError, match="invalid"):
        OnlineCalibrationConfig(window_s=0)


def test_anchor_seconds_are_epoch_seconds_whatever_the_unit_or_zone() -> None:
    start = pd.Timestamp("2019-08-13 03:00", tz="UTC")
    offsets = np.array([0.0, 1.5, 3600.0, 86_399.0])
    times = pd.Series(start + pd.to_timedelta(offsets, unit="s"))
    expected = start.timestamp() + offsets
    for unit in ("s", "ms", "us", "ns"):
        aware = times.astype(f"datetime64[{unit}, UTC]")
        want = np.floor(expected) if unit == "s" else expected
        np.testing.assert_allclose(compute_anchor_seconds(aware), want, rtol=0, atol=1e-6)
        naive = aware.dt.tz_localize(None)  # read as UTC
        np.testing.assert_array_equal(compute_anchor_seconds(naive), compute_anchor_seconds(aware))
    auckland = times.dt.tz_convert("Pacific/Auckland")
    np.testing.assert_array_equal(compute_anchor_seconds(auckland), expected)
