from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from transitnet import analysis_quality as aq
from transitnet.schema import VP_RULES


def _utc(*times: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(times), utc=True)).astype("datetime64[us, UTC]")


def test_summarise_contents_counts_set_values_only() -> None:
    frame = pd.DataFrame(
        {
            "speed": pd.Series([None, None, None], dtype="Float64"),
            "trip_id": pd.Series(["a", "", "a"], dtype="string"),
            "flag_e026": pd.Series([True, False, None], dtype="boolean"),
        }
    )
    out = aq.summarise_contents(frame)
    assert out.index.tolist() == ["speed", "trip_id"]  # flags left out by default
    assert out.loc["speed", "set_share"] == 0.0 and out.loc["speed", "example"] == ""
    assert out.loc["trip_id", "set_share"] == pytest.approx(2 / 3)
    assert out.loc["trip_id", "distinct"] == 1 and out.loc["trip_id", "example"] == "a"


def test_flags_null_means_not_evaluated() -> None:
    frame = pd.DataFrame(
        {
            "header_timestamp": _utc("2024-01-01T00:00", "2024-01-01T00:00", "2024-01-01T00:20"),
            "flag_e026": pd.Series([True, False, None], dtype="boolean"),
            "flag_e003": pd.Series([None, None, None], dtype="boolean"),
        }
    )
    summary = aq.summarise_flags(frame)
    assert summary.index.tolist() == list(VP_RULES)
    assert summary.loc["E026", ["evaluated", "flagged"]].tolist() == [2, 1]
    assert summary.loc["E026", "share"] == 0.5
    assert summary.loc["E003", "evaluated"] == 0 and np.isnan(summary.loc["E003", "share"])
    assert summary.loc["E003", "needs_static"] and summary.loc["W008", "scope"] == "feed"
    assert np.isnan(summary.loc["E027", "share"])  # no column at all: not evaluated
    rates = aq.compute_flag_rates(frame, "15min")
    assert rates.columns.tolist() == ["E026"]  # only rules raised somewhere
    assert rates["E026"].tolist()[0] == 0.5 and np.isnan(rates["E026"].tolist()[1])
    chosen = aq.compute_flag_rates(frame, "15min", rules=["E003", "E027"])
    assert chosen.isna().all().all()


def test_freshness_with_a_fetch_clock() -> None:
    rows = pd.DataFrame(
        {
            "source_file": ["s1", "s1", "s2", "s2"],
            "vehicle_id": ["a", "b", "a", "b"],
            "fetched_at": _utc(*["2024-01-01T00:00:40"] * 2, *["2024-01-01T00:01:10"] * 2),
            "header_timestamp": _utc(*["2024-01-01T00:00:30"] * 2, *["2024-01-01T00:01:00"] * 2),
            "vehicle_timestamp": _utc(
                "2024-01-01T00:00:20",
                "2024-01-01T00:00:00",
                "2024-01-01T00:00:50",
                "2024-01-01T00:00:00",
            ),
        }
    )
    out = aq.compute_freshness(rows)
    assert out["clock"].tolist() == ["fetched_at", "fetched_at"]
    assert out["header_age_s"].tolist() == [10.0, 10.0]
    assert out["vehicle_age_p50_s"].tolist() == [30.0, 45.0]
    assert out["republished_share"].tolist() == [0.0, 0.5]  # b re-sends its 00:00:00 fix
    assert out["max_age_p90_s"].iloc[1] == pytest.approx(65.0)  # 20 s and 70 s
    assert out["meets_guideline"].tolist() == [True, True]
    summary = aq.summarise_freshness(out)
    assert summary["snapshots"] == 2 and summary["refresh_p50_s"] == 30.0
    assert summary["share_meeting_guideline"] == 1.0
    assert summary["republished_share"] == 0.25


def test_freshness_without_a_fetch_clock_is_not_judged() -> None:
    rows = pd.DataFrame(
        {
            "vehicle_id": ["a"],
            "header_timestamp": _utc("2024-01-01T00:00:30"),
            "vehicle_timestamp": _utc("2024-01-01T00:00:00"),
        }
    )
    out = aq.compute_freshness(rows)
    assert out["clock"].tolist() == ["header_timestamp"]
    assert out["header_age_s"].isna().all() and out["vehicle_age_p50_s"].tolist() == [30.0]
    assert out["meets_guideline"].isna().all()
    assert np.isnan(aq.summarise_freshness(out)["share_meeting_guideline"])


def test_cadence_gaps_and_repeated_positions() -> None:
    frame = pd.DataFrame(
        {
            "vehicle_id": ["a", "a", "a", "b", "b"],
            "vehicle_label": [None] * 5,
            "vehicle_timestamp": _utc(
                "2024-01-01T00:00:00",
                "2024-01-01T00:00:30",
                "2024-01-01T00:02:30",
                "2024-01-01T00:00:00",
                "2024-01-01T00:00:40",
            ),
            "latitude": [46.0, 46.001, 46.001, 47.0, None],
            "longitude": [8.0, 8.0, 8.0, 8.0, 8.0],
        }
    )
    out = aq.compute_cadence(frame)
    assert out["vehicle"].tolist() == ["id:a", "id:a", "id:b"]
    assert out["gap_s"].tolist() == [30.0, 120.0, 40.0]
    assert out["moved_m"].iloc[0] == pytest.approx(111.2, abs=0.5)
    assert out["is_repeat_position"].tolist() == [False, True, False]  # b's fix has no position
    summary = aq.summarise_cadence(out)
    assert summary["vehicles"] == 2 and summary["gap_p50_s"] == 40.0
    assert summary["share_over_90s"] == pytest.approx(1 / 3)


def test_vehicle_keys_fall_back_to_label_and_entity() -> None:
    frame = pd.DataFrame(
        {
            "vehicle_id": ["v", "", None, None],
            "vehicle_label": [None, "L", None, None],
            "entity_id": ["e1", "e2", "e3", None],
        }
    )
    keys = aq.compute_vehicle_keys(frame)
    assert keys.tolist()[:3] == ["id:v", "label:L", "entity:e3"] and pd.isna(keys.iloc[3])


def test_count_activity_per_bin() -> None:
    frame = pd.DataFrame(
        {
            "vehicle_id": ["a", "b", "a"],
            "trip_id": ["t1", "t2", "t1"],
            "route_id": ["r", "r", "r"],
            "vehicle_timestamp": _utc("2024-01-01T00:01", "2024-01-01T00:02", "2024-01-01T00:20"),
        }
    )
    out = aq.count_activity(frame, "15min")
    assert out[["vehicles", "trips", "routes", "fixes"]].to_numpy().tolist() == [
        [2, 2, 1, 2],
        [1, 1, 1, 1],
    ]
