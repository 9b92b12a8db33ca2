import numpy as np
import pandas as pd

from tests.datasets.test_windows import _matched
from transitnet.baselines import (
    HistoricalMean,
    compute_baselines,
    predict_constant_speed,
    predict_persistence,
)
from transitnet.datasets.windows import WindowConfig, build_windows


def _windows(speed: float, line: str = "L1", n: int = 30):
    df = _matched(n, speed=speed)
    df["line_key"] = line
    return build_windows(df, WindowConfig(past_fixes=4, horizons_s=(60, 120)))


def test_persistence_and_constant_speed() -> None:
    w = _windows(8.0)
    assert np.all(predict_persistence(w) == 0)
    pred = predict_constant_speed(w)
    np.testing.assert_allclose(pred[5], [480.0, 960.0], rtol=1e-5)
    # first fix of a trajectory: anchor speed (8 m/s) stands in for the window's speed
    np.testing.assert_allclose(pred[0], [480.0, 960.0], rtol=1e-5)


def test_historical_mean_learns_per_line_and_backs_off() -> None:
    w1, w2 = _windows(5.0, "A"), _windows(10.0, "B")
    train_meta = pd.concat([w1.meta, w2.meta], ignore_index=True)
    from transitnet.datasets.windows import Windows

    train = Windows(
        np.concatenate([w1.past, w2.past]),
        np.concatenate([w1.lengths, w2.lengths]),
        np.concatenate([w1.context, w2.context]),
        np.concatenate([w1.targets, w2.targets]),
        np.concatenate([w1.target_mask, w2.target_mask]),
        train_meta,
        w1.horizons_s,
    )
    model = HistoricalMean(segment_m=1e9, min_count=3).fit(train)
    np.testing.assert_allclose(model(_windows(5.0, "A"))[0], [300.0, 600.0], rtol=1e-5)
    np.testing.assert_allclose(model(_windows(10.0, "B"))[0], [600.0, 1200.0], rtol=1e-5)
    unseen = model(_windows(7.0, "C"))[0]  # no group: the all-lines mean
    np.testing.assert_allclose(unseen, [450.0, 900.0], rtol=1e-5)
    preds = compute_baselines(train, _windows(5.0, "A"))
    assert set(preds) == {"persistence", "constant_speed", "historical_mean"}
