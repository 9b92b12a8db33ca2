import numpy as np
import pandas as pd

from transitnet.datasets.live import LIVE_FEATURES, LiveConfig, compute_live_context


def _fixes(rows):
    return pd.DataFrame(
        rows, columns=["shape_id", "line_key", "t_s", "dist_along_m", "speed_along_mps"]
    )


def test_speed_ahead_is_causal_and_banded():
    df = _fixes(
        [
            ("s", "L", 1000.0, 600.0, 3.0),  # anchor
            ("s", "L", 900.0, 1100.0, 6.0),  # 500 m ahead, 100 s before: band 0-1 km
            ("s", "L", 950.0, 2600.0, 10.0),  # 2 km ahead: band 1-3 km
            ("s", "L", 1000.0, 700.0, 99.0),  # same time as the anchor: not before it
            ("s", "L", 1010.0, 800.0, 99.0),  # after the anchor: never seen
            ("s", "L", 100.0, 900.0, 99.0),  # 900 s before: outside a 600 s look-back
            ("t", "L", 990.0, 900.0, 4.0),  # another shape of the line: line speed only
            ("s", "L", 990.0, 200.0, 7.0),  # behind the anchor: line speed only
        ]
    )
    out = compute_live_context(df, LiveConfig(window_s=600.0))
    f = dict(zip(LIVE_FEATURES, out[0], strict=True))
    assert f["ahead_speed_0_1km"] == 6.0 and f["ahead_n_0_1km"] == np.log1p(1)
    assert f["ahead_speed_1_3km"] == 10.0 and f["ahead_n_1_3km"] == np.log1p(1)
    assert np.isclose(f["line_speed"], (6.0 + 10.0 + 4.0 + 7.0) / 4)
    assert f["line_n"] == np.log1p(4)


def test_nothing_observed_gives_zeros_and_bad_rows_never_count():
    df = _fixes(
        [
            ("s", "L", 1000.0, 100.0, 3.0),
            ("s", "L", 990.0, 300.0, np.nan),  # no speed
            (None, "L", 990.0, 300.0, 5.0),  # no shape: line speed only
            ("s", None, 990.0, 400.0, 8.0),  # no line: speed ahead only
        ]
    )
    df["is_stale"] = [False, False, False, False]
    out = compute_live_context(df)
    f = dict(zip(LIVE_FEATURES, out[0], strict=True))
    assert f["ahead_speed_0_1km"] == 8.0 and f["line_speed"] == 5.0
    df.loc[3, "is_stale"] = True  # a stale repeat is not an observation
    f = dict(zip(LIVE_FEATURES, compute_live_context(df)[0], strict=True))
    assert f["ahead_speed_0_1km"] == 0.0 and f["ahead_n_0_1km"] == 0.0
    assert np.isfinite(compute_live_context(df)).all()
    empty = compute_live_context(df.iloc[:0])
    assert empty.shape == (0, len(LIVE_FEATURES))
