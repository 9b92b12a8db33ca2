import numpy as np
import pandas as pd
import pytest

from transitnet.datasets.windows import (
    CONTEXT_FEATURES,
    PAST_FEATURES,
    WindowConfig,
    build_windows,
    interpolate_future,
)


def _matched(
    n: int = 12, step_s: int = 30, speed: float = 10.0, vehicle: str = "v1"
) -> pd.DataFrame:
    t0 = pd.Timestamp("2024-05-06 08:00:00", tz="UTC")
    times = [t0 + pd.Timedelta(seconds=step_s * i) for i in range(n)]
    return pd.DataFrame(
        {
            "feed_id": "f",
            "vehicle_id": vehicle,
            "trip_id": "t1",
            "start_date": "20240506",
            "vehicle_timestamp": pd.Series(times, dtype="datetime64[us, UTC]"),
            "line_key": "L1",
            "shape_id": "s1",
            "dist_along_m": np.arange(n) * step_s * speed,
            "offset_m": 1.0,
            "progress": np.linspace(0, 1, n),
            "speed_along_mps": speed,
            "match_status": "ok",
            "is_stale": False,
            "is_dwell": False,
        }
    )


def test_targets_are_distance_travelled_and_masked_beyond_the_trip() -> None:
    w = build_windows(_matched(), WindowConfig(past_fixes=4, horizons_s=(60, 120, 300)))
    assert len(w) == 12
    assert w.past.shape == (12, 4, len(PAST_FEATURES))
    assert w.context.shape == (12, len(CONTEXT_FEATURES))
    # 10 m/s: 60 s -> 600 m, 120 s -> 1200 m; the last fix is 330 s after the first.
    np.testing.assert_allclose(w.targets[0, :2], [600.0, 1200.0])
    assert w.target_mask[0].tolist() == [True, True, True]
    assert w.target_mask[-1].tolist() == [False, False, False]
    assert w.target_mask[-2].tolist() == [False, False, False]  # 30 s left, 60 s horizon
    assert w.target_mask[-3].tolist() == [True, False, False]  # exactly 60 s left
    np.testing.assert_allclose(w.targets[-3, 0], 600.0)


def test_interpolation_between_irregular_fixes() -> None:
    traj = np.array([0, 0, 0, 1, 1])
    t = np.array([0.0, 50.0, 100.0, 0.0, 100.0])
    d = np.array([0.0, 100.0, 400.0, 0.0, 10.0])
    targets, mask = interpolate_future(traj, t, d, (60,))
    np.testing.assert_allclose(targets[:, 0], [160.0, 0, 0, 6.0, 0], atol=1e-4)
    assert mask[:, 0].tolist() == [True, False, False, True, False]
    # 2nd fix: 50 + 60 = 110 is past the last fix (100) -> masked, not extrapolated.


def test_windows_never_cross_trajectories_and_padding_is_zero() -> None:
    df = pd.concat([_matched(5, vehicle="a"), _matched(5, vehicle="b")], ignore_index=True)
    w = build_windows(df, WindowConfig(past_fixes=8, horizons_s=(60,)))
    assert w.lengths.tolist() == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
    assert np.all(w.past[0, 1:] == 0)
    age = PAST_FEATURES.index("age_s")
    assert w.past[4, 0, age] == pytest.approx(120.0)  # oldest fix is 4 steps back
    assert w.past[4, 4, age] == 0.0  # the anchor itself
    assert w.meta["trajectory"].nunique() == 2


def test_unusable_rows_are_left_out_and_gaps_split_trajectories() -> None:
    df = _matched(6)
    df.loc[2, "match_status"] = "off_shape"
    df.loc[3:, "vehicle_timestamp"] += pd.Timedelta(hours=1)
    w = build_windows(df, WindowConfig(past_fixes=3, horizons_s=(60,), max_gap_s=600))
    assert len(w) == 5
    assert w.meta["trajectory"].nunique() == 2


def test_fit_scale_only_centres_constant_features() -> None:
    from transitnet.datasets.batches import fit_scale

    values = np.array([[1.0, 5.0], [3.0, 5.0]])
    mean, std = fit_scale(values)
    np.testing.assert_allclose(mean, [2.0, 5.0])
    np.testing.assert_allclose(std, [1.0, 1.0])


def test_shape_length_is_recovered_from_progress_for_distance_features() -> None:
    df = _matched(12)  # 10 m/s every 30 s: 0..3300 m, progress 0..1
    df["progress"] = df["dist_along_m"] / 4000.0  # the shape is 4 km long
    w = build_windows(df, WindowConfig(past_fixes=3, horizons_s=(60,)))
    ctx = {name: w.context[:, i] for i, name in enumerate(CONTEXT_FEATURES)}
    np.testing.assert_allclose(ctx["shape_km"], 4.0, rtol=1e-6)
    np.testing.assert_allclose(ctx["dist_km"], df["dist_along_m"] / 1000.0, rtol=1e-6)
    np.testing.assert_allclose(ctx["remaining_m"], 4000.0 - df["dist_along_m"], atol=1e-2)
    # a stored shape length wins; a shape with no informative progress stays unknown (0)
    df["shape_length_m"] = 5000.0
    w = build_windows(df, WindowConfig(past_fixes=3, horizons_s=(60,)))
    np.testing.assert_allclose(w.context[:, CONTEXT_FEATURES.index("shape_km")], 5.0)
    unknown = _matched(4).assign(progress=0.0)
    w = build_windows(unknown, WindowConfig(past_fixes=3, horizons_s=(60,)))
    assert (w.context[:, CONTEXT_FEATURES.index("remaining_m")] == 0).all()
    assert np.isfinite(w.context).all()


@pytest.mark.real_data
def test_real_austin_windows_know_where_the_vehicle_is_on_its_shape(shared_data, tmp_path) -> None:
    from transitnet.gtfs.artefacts import load_or_build_artefacts
    from transitnet.gtfs.match import match_positions

    csv = shared_data / "austin-capmetro" / "vehicle_positions" / "2017-03-16.csv"
    ids = {c: str for c in ("vehicle_id", "route_id", "trip_id", "trip_headsign")}
    rows = pd.read_csv(csv, dtype=ids).iloc[:6000]
    rows = rows.drop(columns=["timestamp", "speed"]).assign(
        vehicle_timestamp=pd.to_datetime(rows["timestamp"], utc=True), feed_id="austin"
    )
    art = load_or_build_artefacts(shared_data / "austin-capmetro" / "gtfs_2017-01", tmp_path)
    matched = match_positions(rows, art)
    w = build_windows(matched, WindowConfig(timezone="America/Chicago"))
    assert len(w) > 4000 and np.isfinite(w.context).all()
    ctx = {name: w.context[:, i].astype(np.float64) for i, name in enumerate(CONTEXT_FEATURES)}
    true_len = art.shapes.length_m()[art.shapes.index_of(w.meta["shape_id"])]
    np.testing.assert_allclose(ctx["shape_km"] * 1000, true_len, rtol=1e-4)
    dist = w.meta["dist_along_m"].to_numpy()
    np.testing.assert_allclose(ctx["remaining_m"], np.maximum(true_len - dist, 0), atol=1.0)
    assert (ctx["remaining_m"] > 0).mean() > 0.95


def test_latest_only_serves_the_last_window_of_each_trajectory() -> None:
    df = pd.concat(
        [_matched(7, vehicle="a"), _matched(5, vehicle="b", speed=4.0)], ignore_index=True
    )
    cfg = WindowConfig(past_fixes=3, horizons_s=(60, 120))
    full = build_windows(df, cfg)
    latest = build_windows(df, cfg, latest_only=True)
    last = np.r_[
        full.meta["trajectory"].to_numpy()[1:] != full.meta["trajectory"].to_numpy()[:-1], True
    ]
    assert len(latest) == 2 and latest.meta["vehicle_id"].tolist() == ["a", "b"]
    np.testing.assert_array_equal(latest.past, full.past[last])
    np.testing.assert_array_equal(latest.context, full.context[last])
    np.testing.assert_array_equal(latest.lengths, full.lengths[last])
    assert not latest.target_mask.any()
    assert len(build_windows(df.iloc[:0], cfg, latest_only=True)) == 0


def test_time_of_day_and_day_of_week_are_local_across_dst() -> None:
    from transitnet.datasets.features import compute_local_seconds

    # 2017-03-12 08:30 UTC is 02:30 CST... which does not exist: clocks jump to 03:30 CDT
    times = pd.Series(pd.to_datetime(["2017-03-12 06:00", "2017-03-12 09:00"], utc=True))
    local = compute_local_seconds(times, "America/Chicago")
    assert (local % 86400 / 3600).tolist() == [0.0, 4.0]  # 00:00 CST, 04:00 CDT
    assert ((local // 86400 + 3) % 7).tolist() == [6.0, 6.0]  # a Sunday


@pytest.mark.real_data
def test_serving_fast_paths_equal_the_reference_on_real_austin_rows(shared_data, tmp_path) -> None:
    from transitnet.datasets.features import compute_shape_length
    from transitnet.datasets.windows import compute_service_date, prepare_trajectories
    from transitnet.gtfs.artefacts import load_or_build_artefacts
    from transitnet.gtfs.match import match_positions

    csv = shared_data / "austin-capmetro" / "vehicle_positions" / "2017-03-16.csv"
    ids = {c: str for c in ("vehicle_id", "route_id", "trip_id", "trip_headsign")}
    rows = pd.read_csv(csv, dtype=ids).iloc[20000:32000]
    rows = rows.drop(columns=["timestamp", "speed"]).assign(
        vehicle_timestamp=pd.to_datetime(rows["timestamp"], utc=True), feed_id="austin"
    )
    art = load_or_build_artefacts(shared_data / "austin-capmetro" / "gtfs_2017-01", tmp_path)
    matched = match_positions(rows, art).sample(frac=1.0, random_state=0)  # any input order
    cfg = WindowConfig(timezone="America/Chicago")
    # Reference order: the 4-column string groupby + lexsort the integer sorts replace.
    ok = matched["match_status"].isin(cfg.statuses) & matched["dist_along_m"].notna()
    usable = matched[ok.to_numpy(dtype=bool)]
    keys = usable[["feed_id", "vehicle_id", "trip_id"]].astype("string").fillna("?")
    start = usable["start_date"] if "start_date" in usable else None
    keys["service_date"] = compute_service_date(usable["vehicle_timestamp"], cfg.timezone, start)
    code = keys.groupby(list(keys.columns), sort=True).ngroup().to_numpy()
    t = usable["vehicle_timestamp"].astype("int64").to_numpy() / 1e6
    order = np.lexsort((t, code))
    keep = np.r_[True, (np.diff(code[order]) != 0) | (np.diff(t[order]) != 0)]
    df = prepare_trajectories(matched, cfg)
    assert len(df) > 8000 and len(df) == keep.sum()
    for column in ("vehicle_id", "trip_id", "vehicle_timestamp", "dist_along_m"):
        expected = usable[column].to_numpy()[order[keep]]
        np.testing.assert_array_equal(df[column].to_numpy(), expected)
    # Reference shape length: pandas' groupby median.
    est = df["dist_along_m"] / df["progress"].where(df["progress"].between(1e-6, 1 - 1e-9))
    est = est.where(df["dist_along_m"] > 0)
    median = est.groupby(df["shape_id"].astype("string").fillna("").to_numpy()).transform("median")
    assert "shape_length_m" not in df and np.isfinite(median).mean() > 0.9
    np.testing.assert_array_equal(compute_shape_length(df), median.to_numpy())
    # Serving (latest_only) equals the last window of each trajectory of the full cut.
    full = build_windows(matched, cfg)
    latest = build_windows(matched, cfg, latest_only=True)
    traj = full.meta["trajectory"].to_numpy()
    last = np.r_[traj[1:] != traj[:-1], True]
    assert len(latest) == last.sum() > 150
    np.testing.assert_array_equal(latest.past, full.past[last])
    np.testing.assert_array_equal(latest.lengths, full.lengths[last])
    np.testing.assert_array_equal(latest.context, full.context[last])
    pd.testing.assert_frame_equal(latest.meta, full.meta[last].reset_index(drop=True))
