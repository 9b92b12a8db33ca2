from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.class_fixtures import ORIGIN, make_positions
from transitnet.datasets.class_batches import (
    ClassWindowDataset,
    sample_per_class,
    sample_trajectories,
    select_windows,
)
from transitnet.datasets.class_windows import (
    CLASS_FEATURES,
    POSITION_INPUTS,
    ClassWindowConfig,
    build_class_windows,
    compute_origin,
    project_local,
)

F = {name: i for i, name in enumerate(CLASS_FEATURES)}
M_PER_DEG_LAT = 6_371_008.8 * np.pi / 180


def _track(n=6, dt=30.0, step_east_m=150.0, **extra):
    """One vehicle driving due east from the origin, a fix every ``dt`` seconds."""
    t0 = pd.Timestamp("2024-05-06 08:00", tz="UTC")
    lon_step = step_east_m / (M_PER_DEG_LAT * np.cos(np.radians(ORIGIN[0])))
    return pd.DataFrame(
        {
            "feed_id": "f",
            "vehicle_id": "v1",
            "trip_id": "t1",
            "route_id": "R1",
            "latitude": ORIGIN[0],
            "longitude": ORIGIN[1] + lon_step * np.arange(n),
            "bearing": np.nan,
            "vehicle_timestamp": pd.Series(t0 + pd.to_timedelta(dt * np.arange(n), unit="s")),
            **extra,
        }
    )


def test_features_of_a_bus_driving_east():
    cfg = ClassWindowConfig(window_fixes=4, min_fixes=2, stride=1)
    w = build_class_windows(_track(), cfg, ORIGIN)
    assert len(w) == 5 and w.lengths.tolist() == [2, 3, 4, 4, 4]
    last = w.features[-1, :4]  # fixes 2..5
    np.testing.assert_allclose(last[:, F["x_km"]], [0.3, 0.45, 0.6, 0.75], atol=1e-3)
    np.testing.assert_allclose(last[:, F["y_km"]], 0.0, atol=1e-6)
    np.testing.assert_allclose(last[:, F["dx_m"]], 150.0, atol=0.5)
    np.testing.assert_allclose(last[:, F["heading_sin"]], 1.0, atol=1e-6)  # due east
    np.testing.assert_allclose(last[:, F["heading_cos"]], 0.0, atol=1e-6)
    np.testing.assert_allclose(last[:, F["speed_mps"]], 5.0, atol=0.02)
    np.testing.assert_allclose(last[:, F["dt_s"]], 30.0)
    tod = 2 * np.pi * (8 * 3600 + 30 * np.arange(2, 6)) / 86400
    np.testing.assert_allclose(last[:, F["tod_sin"]], np.sin(tod), atol=1e-6)
    first = w.features[0]  # the trajectory's first fix has no displacement
    assert first[0, F["dx_m"]] == 0 and first[0, F["has_heading"]] == 0
    assert (first[2:] == 0).all()  # padding
    assert w.meta["line_key"].tolist() == ["R1"] * 5
    assert (w.meta["start_time"] <= w.meta["anchor_time"]).all()


def test_anchors_follow_the_stride_and_always_cover_the_last_fix():
    cfg = ClassWindowConfig(window_fixes=4, min_fixes=3, stride=3)
    w = build_class_windows(_track(n=8), cfg, ORIGIN)
    assert w.meta["n_fixes"].tolist() == [3, 4, 4]  # anchors at fixes 3, 6 and the last (8)
    assert w.dropped["not_in_window"] == 0


def test_stationary_fix_uses_the_reported_bearing_else_no_heading():
    df = _track(n=4, step_east_m=0.0, bearing=[np.nan, 90.0, 400.0, np.nan])
    w = build_class_windows(df, ClassWindowConfig(window_fixes=4, min_fixes=4), ORIGIN)
    f = w.features[0]
    assert f[1, F["has_heading"]] == 1 and f[1, F["heading_sin"]] == pytest.approx(1.0)
    assert f[2, F["has_heading"]] == 0  # 400° is not a bearing
    assert f[3, F["has_heading"]] == 0 and f[3, F["speed_mps"]] == 0


def test_bad_fixes_are_counted_never_silently_lost():
    df = _track(n=10)
    df.loc[1, ["latitude", "longitude"]] = 0.0  # a missing position decoded as (0, 0)
    df.loc[2, "latitude"] = 95.0
    df.loc[3, "vehicle_timestamp"] = pd.NaT
    df.loc[4, "vehicle_id"] = None  # no label or entity fallback either
    dup = df.iloc[[8]].copy()
    unassigned = _track(n=5).assign(vehicle_id="v9", trip_id=None, route_id=None)
    w = build_class_windows(
        pd.concat([df, dup, unassigned], ignore_index=True),
        ClassWindowConfig(window_fixes=4, min_fixes=2, stride=1),
        ORIGIN,
    )
    assert w.dropped["bad_position"] == 2
    assert w.dropped["no_timestamp"] == 1 and w.dropped["no_vehicle"] == 1
    assert w.dropped["repeated_fix"] == 1 and w.dropped["unlabelled"] == 5
    assert w.meta["line_key"].isna().sum() == 4  # the unassigned vehicle is kept, unlabelled
    assert np.isfinite(w.features).all()


def test_vehicle_label_is_the_fallback_vehicle_key():
    df = _track(n=4, vehicle_label="bus-7").assign(vehicle_id=None)
    w = build_class_windows(df, ClassWindowConfig(window_fixes=4, min_fixes=4), ORIGIN)
    assert w.meta["vehicle_key"].tolist() == ["bus-7"] and w.dropped["no_vehicle"] == 0


def test_gaps_and_trip_changes_start_new_trajectories():
    a = _track(n=6)
    a.loc[3:, "vehicle_timestamp"] += pd.Timedelta(minutes=30)  # a 30-minute gap
    b = _track(n=4).assign(trip_id="t2", route_id="R2")
    b["vehicle_timestamp"] += pd.Timedelta(hours=2)
    w = build_class_windows(
        pd.concat([a, b]), ClassWindowConfig(window_fixes=3, min_fixes=3), ORIGIN
    )
    assert w.meta["trajectory"].nunique() == 3
    assert sorted(w.meta["line_key"].unique()) == ["R1", "R2"]
    assert (w.features[:, :, F["dt_s"]] <= 600).all()


def test_route_direction_keys_and_config_errors():
    df = _track(n=4, direction_id=1)
    cfg = ClassWindowConfig(window_fixes=4, min_fixes=4, line_key_mode="route_direction")
    assert build_class_windows(df, cfg, ORIGIN).meta["line_key"].tolist() == ["R1:1"]
    with pytest.raises(ValueError, match="min_fixes"):
        ClassWindowConfig(window_fixes=3, min_fixes=4)
    with pytest.raises(ValueError, match="line_key_mode"):
        ClassWindowConfig(line_key_mode="short_name")
    with pytest.raises(ValueError, match="lack columns"):
        build_class_windows(df.drop(columns="route_id"), ClassWindowConfig(), ORIGIN)
    with pytest.raises(ValueError, match="no valid positions"):
        compute_origin(df.assign(latitude=0.0, longitude=0.0))


def test_projection_is_metric_near_the_origin():
    x, y = project_local(np.array([ORIGIN[0] + 0.01]), np.array([ORIGIN[1] + 0.01]), ORIGIN)
    assert y[0] == pytest.approx(1111.95, rel=1e-4)
    assert x[0] == pytest.approx(1111.95 * np.cos(np.radians(ORIGIN[0])), rel=1e-4)


def test_periods_sampling_and_dataset():
    pos = pd.concat([make_positions(day="2024-05-06"), make_positions(day="2024-05-07", seed=1)])
    w = build_class_windows(pos, ClassWindowConfig(stride=2), compute_origin(pos))
    assert set(select_windows(w, ["2024-05-07"]).meta["service_date"]) == {"2024-05-07"}
    start, end = (
        pd.Timestamp("2024-05-06 07:30", tz="UTC"),
        pd.Timestamp("2024-05-06 08:00", tz="UTC"),
    )
    part = select_windows(w, start=start, end=end)
    assert len(part) and (part.meta["start_time"] >= start).all()
    assert (part.meta["anchor_time"] < end).all()  # no window straddles a period boundary
    two = sample_trajectories(w, ["A", "C"], 2, seed=3)
    assert two.meta.groupby("line_key")["trajectory"].nunique().to_dict() == {"A": 2, "C": 2}
    assert sample_trajectories(w, ["A"], 2, seed=3).meta.equals(
        sample_trajectories(w, ["A"], 2, seed=3).meta
    )
    with pytest.raises(ValueError, match="no trajectory"):
        sample_trajectories(w, ["Z"], 1)
    with pytest.raises(ValueError, match="at least one"):
        sample_trajectories(w, ["A"], 0)
    assert sample_per_class(w, 3).meta["line_key"].value_counts().max() == 3
    scale = (np.ones(len(CLASS_FEATURES)), 2 * np.ones(len(CLASS_FEATURES)))
    ds = ClassWindowDataset(w, np.arange(len(w)) % 5, scale)
    batch = ds.__getitems__([0, 3])
    assert batch.features.shape == (2, 8, len(CLASS_FEATURES)) and batch.labels.tolist() == [0, 3]
    valid = torch.arange(8)[None, :] < batch.lengths[:, None]
    assert (batch.features[~valid] == 0).all()
    expect = (w.features[3, 0] - 1.0) / 2.0
    np.testing.assert_allclose(batch.features[1, 0].numpy(), expect, rtol=1e-6)


@pytest.mark.real_data
def test_real_austin_day_becomes_labelled_windows(shared_data: Path, tmp_path: Path):
    from transitnet.store.importers import import_paths
    from transitnet.store.parquet import read_positions

    csv = shared_data / "austin-capmetro" / "vehicle_positions" / "2017-03-16.csv"
    import_paths(tmp_path / "store", "austin", [csv], progress=False)
    pos = read_positions(tmp_path / "store", columns=list(POSITION_INPUTS))
    cfg = ClassWindowConfig(timezone="America/Chicago")
    w = build_class_windows(pos, cfg, compute_origin(pos))
    kept = len(pos) - sum(w.dropped[k] for k in ("bad_position", "no_timestamp", "no_vehicle"))
    assert kept == len(pos) - w.dropped["bad_position"] > 0.99 * len(pos)
    assert len(w) > 5000 and w.meta["line_key"].nunique() > 50
    assert np.isfinite(w.features).all()
    assert set(w.meta["line_key"]) <= set(pos["route_id"].dropna())
    # Speeds from real 2-minute fixes are bus-like: median between 2 and 15 m/s.
    moving = w.features[:, :, F["speed_mps"]][w.features[:, :, F["has_heading"]] > 0]
    assert 2.0 < float(np.median(moving)) < 15.0
    assert (np.abs(w.features[:, :, F["x_km"]]) < 60).all()  # within the metro area
