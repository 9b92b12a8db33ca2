"""The forecasting experiment's Auckland schedule_delay on the timetable from TripUpdates."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from tests.test_evaluate_eta import HORIZONS, T0, V82, tiny_artefacts, tiny_windows
from transitnet.evaluate import Evaluation, summarise
from transitnet.realtime.trip_updates import STOP_EVENT_COLUMNS

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import exp_forecast as exp
import exp_forecast_report


def _events(trip: str, arrivals_s: list[float], delay_s: int) -> pd.DataFrame:
    """Arrivals of ``trip`` at stops A.. (v82 ids), ``delay_s`` late on the timetable."""
    n = len(arrivals_s)
    frame = pd.DataFrame(
        {
            "trip_id": trip + V82,
            "stop_id": [s + V82 for s in "ABCD"[:n]],
            "stop_sequence": pd.array(range(1, n + 1), dtype="Int64"),
            "start_time": "17:00:00",
            "arrival_time": [T0 + pd.Timedelta(seconds=t + delay_s) for t in arrivals_s],
            "arrival_delay_s": pd.array([delay_s] * n, dtype="Int64"),
        }
    ).reindex(columns=list(STOP_EVENT_COLUMNS))
    frame["departure_time"] = pd.to_datetime(frame["departure_time"], utc=True)
    frame["departure_delay_s"] = frame["departure_delay_s"].astype("Int64")
    return frame


def test_schedule_delay_on_the_recovered_timetable_is_scored_on_its_windows() -> None:
    windows = tiny_windows(["RT" + V82, "OTHER" + V82], [1500.0, 1500.0])
    model = np.repeat(windows.targets[:, :, None], 3, axis=2)
    evaluation = Evaluation(windows, model, {}, (0.1, 0.5, 0.9), tiny_artefacts())
    # the timetable runs A..D (1..4 km) at 10 m/s; the trip runs 5 min late all along
    exp.add_schedule_delay(evaluation, _events("RT", [0.0, 100.0, 200.0, 300.0], 300), "UTC")
    pred = evaluation.baselines["schedule_delay"]
    assert pred.shape == (2, len(HORIZONS))
    # at 1.5 km the timetable says 50 s; +60 s → 2.1 km, +120 s → 2.7 km, then the last stop
    np.testing.assert_allclose(pred[0], [600.0, 1200.0, 2500.0, 2500.0, 2500.0])
    assert np.isnan(pred[1]).all()  # OTHER reported nothing: no schedule, not filled in
    metrics = summarise(evaluation)
    assert metrics["schedule_delay"]["available_share"] == 0.5
    assert metrics["schedule_delay"]["n"]["60"] == 1
    assert "model_mae_m_same_windows" in metrics["schedule_delay"]


def test_schedule_delay_is_left_out_when_no_window_has_a_timetable() -> None:
    windows = tiny_windows(["OTHER" + V82], [1500.0])
    model = np.repeat(windows.targets[:, :, None], 3, axis=2)
    evaluation = Evaluation(windows, model, {}, (0.1, 0.5, 0.9), tiny_artefacts())
    exp.add_schedule_delay(evaluation, _events("RT", [0.0, 100.0], 0), "UTC")
    assert "schedule_delay" not in evaluation.baselines


def test_partial_block_states_the_model_improvement() -> None:
    part = {
        "available_share": 0.999,
        "mae_m": {"300": 500.0, "600": 800.0},
        "model_mae_m": {"300": 400.0, "600": 680.0},
    }
    lines = exp_forecast_report.format_partial("schedule_delay", part)
    assert lines[0].startswith("`schedule_delay` applies to 99.9% of the test windows")
    assert lines[-3:] == [
        "| schedule_delay | 500 | 800 |",
        "| model | 400 | 680 |",
        "| model better by | 20.0% | 15.0% |",
    ]
