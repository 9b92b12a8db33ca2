"""similar:auto's choice: known lines that drive the new line's path, the same way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from transitnet.gtfs.artefacts import StaticArtefacts, load_or_build_artefacts
from transitnet.gtfs.shapes import make_shape_table
from transitnet.gtfs.similar_lines import (
    choose_similar_lines,
    compute_line_shapes,
    rank_similar_lines,
)


def _artefacts(shapes: dict[str, tuple[list[float], list[float]]], trips: list[tuple[str, str]]):
    table = make_shape_table(
        list(shapes),
        [np.asarray(x, dtype=float) for x, _ in shapes.values()],
        [np.asarray(y, dtype=float) for _, y in shapes.values()],
        "EPSG:32614",
    )
    frame = pd.DataFrame(trips, columns=["line_key", "shape_id"])
    frame["trip_id"] = [f"t{i}" for i in range(len(frame))]
    empty = pd.DataFrame()
    return StaticArtefacts("syn", table, frame, empty, None, empty, empty)


SHAPES = {
    "new": ([0, 2000], [0, 0]),
    "half_same_way": ([0, 1000], [10, 10]),
    "reverse": ([2000, 0], [-10, -10]),  # the same road, driven the other way
    "far": ([0, 2000], [500, 500]),
    "rare_full": ([0, 2000], [5, 5]),
}


def test_only_the_same_road_driven_the_same_way_counts() -> None:
    trips = [("N", "new"), ("S", "half_same_way"), ("R", "reverse"), ("F", "far")]
    trips += [("X", "far")] * 19 + [("X", "rare_full")]  # X's full overlap is 5 % of its trips
    art = _artefacts(SHAPES, trips)
    ranked = rank_similar_lines(art, "N", ["S", "R", "F", "X", "unknown_line"])
    got = dict(zip(ranked["line_key"], ranked["overlap"], strict=True))
    assert set(got) == {"S", "R", "F", "X"}  # lines without a shape are left out
    assert got["S"] == pytest.approx(21 / 41)  # samples at 0, 50, …, 1000 m of 0..2000 m
    assert got["R"] == got["F"] == got["X"] == 0.0
    assert ranked["line_key"].iloc[0] == "S" and choose_similar_lines(ranked, "N") == ["S"]
    assert rank_similar_lines(art, "N", ["R"], max_angle_deg=180)["overlap"].iloc[0] == 1.0


def test_rare_shapes_are_left_out_and_nothing_shared_is_a_clear_error() -> None:
    art = _artefacts(
        SHAPES, [("N", "new"), ("X", "far")] + [("X", "far")] * 19 + [("X", "rare_full")]
    )
    shapes = compute_line_shapes(art.trips)
    assert set(shapes.loc[shapes["line_key"] == "X", "shape_id"]) == {"far"}
    ranked = rank_similar_lines(art, "N", ["X"])
    with pytest.raises(ValueError, match="no known line drives any of line 'N'"):
        choose_similar_lines(ranked, "N")
    with pytest.raises(ValueError, match="has no shape"):
        rank_similar_lines(art, "Q", ["X"])


@pytest.mark.real_data
def test_auckland_route_70_directions_are_not_similar_to_each_other(
    shared_data: Path, tmp_path: Path
) -> None:
    static = shared_data / "auckland-2019-08-13" / "static_subset_2019-06"
    art = load_or_build_artefacts(static, tmp_path)
    ranked = rank_similar_lines(art, "07005", ["07006", "07007"])
    got = dict(zip(ranked["line_key"], ranked["overlap"], strict=True))
    # 07006 runs route 70 the other way, along the same roads: 91 % within 50 m, 0 % same way.
    assert got["07006"] == 0.0
    assert rank_similar_lines(art, "07005", ["07006"], max_angle_deg=180)["overlap"].iloc[0] > 0.8
    assert choose_similar_lines(ranked, "07005") == ["07007"] and 0.3 < got["07007"] < 0.7


@pytest.mark.real_data
def test_austin_metrorapid_lines_rank_the_local_routes_on_their_corridors_first(
    shared_data: Path, tmp_path: Path
) -> None:
    art = load_or_build_artefacts(shared_data / "austin-capmetro" / "gtfs_2017-01", tmp_path)
    known = sorted(set(art.trips["line_key"].dropna()) - {"801", "803"})
    # 801 runs N Lamar / S Congress like route 1; 803 Burnet / S Lamar like route 3.
    assert choose_similar_lines(rank_similar_lines(art, "801", known), "801")[0] == "1"
    assert choose_similar_lines(rank_similar_lines(art, "803", known), "803")[0] == "3"
