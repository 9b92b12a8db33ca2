"""The prediction table built from quantile forecasts (tiny in-code shapes and stops)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.test_forecast_outputs import X0, Y0, lonlat_at, tiny_artefacts
from transitnet.forecast_table import build_forecast_table, quantile_label

T0 = pd.Timestamp("2024-05-06T07:00:00Z")


def tiny_meta() -> pd.DataFrame:
    """Window 0: trip t1 at 250 m on E; window 1: a trip on an unknown shape."""
    return pd.DataFrame(
        {
            "feed_id": ["f", "f"],
            "vehicle_id": ["v1", "v2"],
            "trip_id": ["t1", "t9"],
            "shape_id": ["E", "X"],
            "dist_along_m": [250.0, 10.0],
            "anchor_time": [T0, T0 + pd.Timedelta("30s")],
        }
    )


#: (N=2, H=2, Q=3) metres travelled: P10, P50, P90 at 60 s and 120 s.
PRED = np.array([[[100, 200, 300], [300, 500, 700]], [[0, 0, 0], [1, 2, 3]]], dtype=float)


def test_quantile_labels() -> None:
    assert [quantile_label(q) for q in (0.1, 0.5, 0.9, 0.025, 1 - 0.9)] == [
        "p10", "p50", "p90", "p2_5", "p10",
    ]  # fmt: skip


def test_rows_per_window_and_horizon_with_positions_and_etas() -> None:
    df = build_forecast_table(tiny_meta(), PRED, [60, 120], [0.1, 0.5, 0.9], tiny_artefacts(), 2)
    assert len(df) == 4 and df["window"].tolist() == [0, 0, 1, 1]
    assert df["horizon_s"].tolist() == [60, 120, 60, 120]
    assert df["target_time"].tolist() == [T0 + pd.Timedelta(s, "s") for s in (60, 120, 90, 150)]
    assert str(df["anchor_time"].dtype) == "datetime64[us, UTC]"
    assert df["dist_along_p50_m"].tolist()[:2] == [450.0, 750.0]
    np.testing.assert_allclose(df.loc[1, ["lon_p90", "lat_p90"]], lonlat_at(X0 + 950, Y0))
    assert df.loc[2:, ["lat_p10", "lon_p50", "lat_p90"]].isna().all().all()  # unknown shape
    first = df.iloc[0]
    assert (first["stop1_id"], first["stop2_id"]) == ("s2", "s3")
    assert (first["stop1_ahead_m"], first["stop2_ahead_m"]) == (150.0, 350.0)
    assert first["stops_via"] == "trip"
    # stop 1 is 150 m ahead: P90 distance reaches it at 30 s, P50 at 45 s, P10 at 75 s
    assert first["stop1_eta_p10"] == T0 + pd.Timedelta("30s")
    assert first["stop1_eta_p50"] == T0 + pd.Timedelta("45s")
    assert first["stop1_eta_p90"] == T0 + pd.Timedelta("75s")
    assert pd.isna(first["stop2_eta_p90"])  # P10 curve reaches only 300 m by 120 s
    assert df.loc[2:, ["stop1_id", "stop1_eta_p50", "stops_via"]].isna().all().all()


def test_without_static_every_position_and_stop_column_is_null() -> None:
    with_static = build_forecast_table(
        tiny_meta(), PRED, [60, 120], [0.1, 0.5, 0.9], tiny_artefacts()
    )
    bare = build_forecast_table(tiny_meta(), PRED, [60, 120], [0.1, 0.5, 0.9])
    assert list(bare.columns) == list(with_static.columns)
    assert (bare.dtypes == with_static.dtypes).all()
    nullable = [c for c in bare.columns if c.startswith(("lat_", "lon_", "stop"))]
    assert len(nullable) == 6 + 1 + 3 * 6 and bare[nullable].isna().all().all()
    assert bare["travelled_p50_m"].notna().all()


def test_empty_windows_give_an_empty_table_with_every_column() -> None:
    meta = tiny_meta().iloc[:0]
    df = build_forecast_table(
        meta, np.zeros((0, 2, 3)), [60, 120], [0.1, 0.5, 0.9], tiny_artefacts()
    )
    assert df.empty and "stop3_eta_p90" in df.columns and "lat_p50" in df.columns


@pytest.mark.parametrize(
    ("meta", "pred", "horizons", "match"),
    [
        (tiny_meta().drop(columns="anchor_time"), PRED, [60, 120], "anchor_time"),
        (tiny_meta(), PRED[:, :1], [60, 120], "expected"),
        (tiny_meta(), PRED, [120, 60], "increasing"),
    ],
)
def test_bad_input_is_a_clear_error(
    meta: pd.DataFrame, pred: np.ndarray, horizons: list[int], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        build_forecast_table(meta, pred, horizons, [0.1, 0.5, 0.9], tiny_artefacts())
