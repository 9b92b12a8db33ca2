import numpy as np
import pandas as pd

from tests.datasets.test_windows import _matched
from tests.gtfs.test_timetable import tiny_timetable_rows
from transitnet.baselines import ScheduleDelay
from transitnet.datasets.schedule import (
    MAX_DELAY_S,
    SCHEDULE_FEATURES,
    SCHEDULE_OFFSETS_S,
    compute_schedule_context,
)
from transitnet.datasets.windows import (
    CONTEXT_FEATURES,
    PAST_FEATURES,
    WindowConfig,
    build_windows,
)
from transitnet.gtfs.timetable import Timetable

#: _matched(): trip t1 on shape s1 from 2024-05-06 08:00 UTC at 10 m/s, a fix every 30 s.
T0_S = 8 * 3600.0


def _timetable(delay_s: float = 0.0, trip: str = "t1", shape: str = "s1") -> Timetable:
    """t1 scheduled at 10 m/s along s1 from 08:00 UTC (+ ``-delay_s``), stops every 1.2 km."""
    dist = np.arange(0.0, 6001.0, 1200.0)
    times = T0_S - delay_s + dist / 10.0
    rows = pd.DataFrame(
        {
            "trip_id": trip,
            "stop_sequence": np.arange(1, len(dist) + 1),
            "stop_index": np.arange(len(dist)),
            "stop_id": [f"s{i}" for i in range(len(dist))],
            "arrival_s": times,
            "departure_s": times,
            "dist_m": dist,
            "shape_id": shape,
        }
    )
    tt = Timetable.from_stop_times(rows)
    assert tt is not None
    return tt


def _ctx(windows, name: str) -> np.ndarray:
    return windows.context[:, CONTEXT_FEATURES.index(name)].astype(np.float64)


def test_schedule_features_are_what_schedule_delay_forecasts() -> None:
    config = WindowConfig(past_fixes=4, horizons_s=SCHEDULE_OFFSETS_S)
    w = build_windows(_matched(n=20), config, timetable=_timetable(delay_s=120.0))
    baseline = ScheduleDelay.from_timetable(_timetable(delay_s=120.0))(w)
    for j, h in enumerate(SCHEDULE_OFFSETS_S):
        np.testing.assert_allclose(_ctx(w, f"sched_ahead_{h}s_m"), baseline[:, j], atol=0.05)
    # on schedule at 10 m/s: 60 s ahead is 600 m until the end of the timetable (6 km)
    np.testing.assert_allclose(_ctx(w, "sched_ahead_60s_m")[:5], 600.0, atol=0.05)
    np.testing.assert_allclose(_ctx(w, "sched_delay_s"), 120.0, atol=1e-3)
    assert (_ctx(w, "has_schedule") == 1).all()
    # 120 s late at 10 m/s: the on-time schedule is 1200 m ahead now, 4200 m in 300 s
    # (until the timetable's last stop at 6 km caps it)
    np.testing.assert_allclose(_ctx(w, "sched_on_time_0s_m")[:3], 1200.0, atol=0.05)
    np.testing.assert_allclose(_ctx(w, "sched_on_time_300s_m")[:3], 4200.0, atol=0.05)
    # the per-fix delay reaches the past features (the encoder sees its history)
    delay = w.past[:, :, PAST_FEATURES.index("delay_s")]
    has = w.past[:, :, PAST_FEATURES.index("has_delay")]
    valid = np.arange(4)[None, :] < w.lengths[:, None]
    np.testing.assert_allclose(delay[valid], 120.0, atol=1e-3)
    assert (has[valid] == 1).all() and (has[~valid] == 0).all()
    np.testing.assert_allclose(w.meta["delay_s"].to_numpy(np.float64), 120.0, atol=1e-3)


def test_a_matcher_delay_is_kept_and_only_missing_ones_are_filled() -> None:
    df = _matched(n=6).assign(delay_s=[30.0, np.nan, 30.0, np.nan, np.nan, np.nan])
    w = build_windows(df, WindowConfig(past_fixes=2), timetable=_timetable(delay_s=120.0))
    np.testing.assert_allclose(w.meta["delay_s"].to_numpy(np.float64), [30, 120, 30, 120, 120, 120])


def test_no_timetable_or_no_usable_trip_gives_zeros_and_flag_0() -> None:
    config = WindowConfig(past_fixes=4)
    names = [CONTEXT_FEATURES.index(n) for n in SCHEDULE_FEATURES]
    for timetable in (None, _timetable(trip="other"), _timetable(shape="another-shape")):
        w = build_windows(_matched(n=12), config, timetable=timetable)
        assert len(w) == 12
        assert (w.context[:, names] == 0).all()


def test_mixed_windows_flag_only_the_scheduled_trip() -> None:
    other = _matched(n=12, vehicle="v2").assign(trip_id="t2")
    w = build_windows(pd.concat([_matched(n=12), other]), timetable=_timetable())
    flag = _ctx(w, "has_schedule")
    trips = w.meta["trip_id"].to_numpy()
    assert (flag[trips == "t1"] == 1).all() and (flag[trips == "t2"] == 0).all()
    assert (_ctx(w, "sched_ahead_300s_m")[trips == "t2"] == 0).all()


def test_static_trip_id_is_looked_up_first_then_the_realtime_id() -> None:
    at = pd.DataFrame(
        {
            "trip_id": ["rt-1", "T1"],
            "static_trip_id": ["T1", None],
            "shape_id": ["S1", "S1"],
            "dist_along_m": [0.0, 0.0],
            "t_s": [1030.0, 1030.0],  # 30 s late on a service day whose origin is 1970-01-01
            "service_date": ["1970-01-01", "1970-01-01"],
        }
    )
    tt = Timetable.from_stop_times(tiny_timetable_rows())
    out = compute_schedule_context(at, tt, "UTC")
    assert out[:, SCHEDULE_FEATURES.index("has_schedule")].tolist() == [1.0, 1.0]
    np.testing.assert_allclose(out[:, SCHEDULE_FEATURES.index("sched_delay_s")], 30.0)
    np.testing.assert_allclose(out[:, SCHEDULE_FEATURES.index("sched_ahead_60s_m")], 600.0)


def test_delay_from_a_wrong_service_day_is_clipped_and_a_missing_day_gives_0() -> None:
    at = pd.DataFrame(
        {
            "trip_id": ["T1", "T1"],
            "shape_id": ["S1", "S1"],
            "dist_along_m": [0.0, 0.0],
            "t_s": [86400.0 + 1000.0, 1000.0],
            "service_date": ["1970-01-01", None],
        }
    )
    out = compute_schedule_context(at, Timetable.from_stop_times(tiny_timetable_rows()), "UTC")
    delay = out[:, SCHEDULE_FEATURES.index("sched_delay_s")]
    assert delay.tolist() == [MAX_DELAY_S, 0.0]
    assert np.isfinite(out).all()
    # without a trustworthy delay the on-time features fall back to keeping the delay
    on_time = out[:, SCHEDULE_FEATURES.index("sched_on_time_300s_m")]
    ahead = out[:, SCHEDULE_FEATURES.index("sched_ahead_300s_m")]
    np.testing.assert_allclose(on_time, ahead)
    assert (out[:, SCHEDULE_FEATURES.index("sched_on_time_0s_m")] == 0).all()
