from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from transitnet.gtfs.timetable import (
    TIMETABLE_COLUMNS,
    Timetable,
    attach_shapes,
    compute_schedule_ahead,
    read_timetable,
    write_timetable,
)


def tiny_timetable_rows() -> pd.DataFrame:
    """Trip T1 on shape S1: stops at 0, 1000, 3000 m; arrives 100 s, waits 60 s at 1000 m.

    Trip T2 has one stop only (unusable).
    """
    return pd.DataFrame(
        {
            "trip_id": ["T1", "T1", "T1", "T2"],
            "stop_sequence": pd.array([1, 2, 3, 1], dtype="Int64"),
            "stop_index": [0, 1, 2, 0],
            "stop_id": ["a", "b", "c", "a"],
            "arrival_s": [1000.0, 1100.0, 1360.0, 500.0],
            "departure_s": [1000.0, 1160.0, 1360.0, 500.0],
            "dist_m": [0.0, 1000.0, 3000.0, 0.0],
            "shape_id": ["S1", "S1", "S1", "S2"],
        }
    )


def test_schedule_ahead_keeps_the_current_delay() -> None:
    tt = Timetable.from_stop_times(tiny_timetable_rows())
    assert tt is not None
    code = tt.find_trips(np.array(["T1", "T1", "T1"]), np.array(["S1", "S1", "S1"]))
    assert code.tolist() == [0, 0, 0]
    ahead, s0 = compute_schedule_ahead(tt.index, code, np.array([0.0, 500.0, 1000.0]), (60, 200))
    # at 0 m: 60 s later the timetable is at 600 m; 200 s later it has waited at 1000 m
    # (1100..1160) and run 40 s of the 200 s leg to 3000 m -> 1400 m
    np.testing.assert_allclose(ahead[0], [600.0, 1400.0])
    # at a stop the schedule has the vehicle leaving (departure 1160 s at 1000 m)
    np.testing.assert_allclose(s0, [1000.0, 1050.0, 1160.0])
    np.testing.assert_allclose(ahead[1], [500.0, 1400.0])  # reaches 1000 m, waits 60 s there
    np.testing.assert_allclose(ahead[2], [600.0, 2000.0])  # the last stop caps it


def test_trips_on_another_shape_unknown_or_with_one_stop_have_no_schedule() -> None:
    tt = Timetable.from_stop_times(tiny_timetable_rows())
    assert tt is not None
    code = tt.find_trips(np.array(["T1", "T1", "T2", "T9"]), np.array(["S1", "Sx", "S2", "S1"]))
    assert code.tolist() == [0, -1, -1, -1]
    ahead, _ = compute_schedule_ahead(tt.index, code, np.zeros(4), (60,))
    assert np.isfinite(ahead[0]).all() and np.isnan(ahead[1:]).all()


def test_fallback_ids_are_tried_where_the_first_ids_find_nothing() -> None:
    tt = Timetable.from_stop_times(tiny_timetable_rows())
    assert tt is not None
    code = tt.find_trips(
        np.array(["static-9", "T1"]), np.array(["S1", "S1"]), np.array(["T1", "zz"])
    )
    assert code.tolist() == [0, 0]


def test_file_round_trip_and_bad_files(tmp_path: Path) -> None:
    rows = tiny_timetable_rows()
    path = write_timetable(rows, tmp_path / "sub" / "tt.parquet")
    assert not [p for p in path.parent.iterdir() if p.name != "tt.parquet"]  # no temp file left
    tt = read_timetable(path)
    assert tt is not None
    assert list(tt.index.trip_ids) == ["T1", "T2"]
    assert tt.trip_shapes.to_dict() == {"T1": "S1", "T2": "S2"}
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_timetable(tmp_path / "missing.parquet")
    with pytest.raises(ValueError, match="shape_id"):
        write_timetable(rows.drop(columns=["shape_id"]), tmp_path / "x.parquet")
    rows.drop(columns=["shape_id"]).to_parquet(tmp_path / "not_tt.parquet")
    with pytest.raises(ValueError, match="shape_id"):
        read_timetable(tmp_path / "not_tt.parquet")
    empty = write_timetable(rows.iloc[:0], tmp_path / "empty.parquet")
    assert read_timetable(empty) is None  # logged, not a crash


def test_attach_shapes_from_trips() -> None:
    rows = tiny_timetable_rows().drop(columns=["shape_id"])
    trips = pd.DataFrame({"trip_id": ["T1", "T2"], "shape_id": ["S1", None]})
    out = attach_shapes(rows, trips)
    assert list(out.columns) == list(TIMETABLE_COLUMNS)
    assert out["shape_id"].isna().sum() == 1
    tt = Timetable.from_stop_times(out)
    assert tt is not None and tt.trip_shapes.to_dict() == {"T1": "S1"}
