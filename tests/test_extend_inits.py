"""resolve_inits: per-line inits, similar:auto found in the static feed."""

from __future__ import annotations

from pathlib import Path

import pytest

from transitnet.datamodules.transit import TransitDataModule
from transitnet.extend_inits import resolve_inits


def test_other_inits_apply_to_every_new_line_and_auto_needs_the_static_feed(
    tmp_path: Path,
) -> None:
    dm = TransitDataModule(store=str(tmp_path))
    dm.vocab.add(["A", "B"])
    assert resolve_inits("mean", dm, ["C", "D"]) == ({"C": "mean", "D": "mean"}, {})
    with pytest.raises(ValueError, match="give the static feed"):
        resolve_inits("similar:auto", dm, ["C"])


@pytest.mark.real_data
def test_similar_auto_picks_each_new_lines_own_corridor_among_known_lines(
    shared_data: Path, tmp_path: Path
) -> None:
    static = shared_data / "austin-capmetro" / "gtfs_2017-01"
    dm = TransitDataModule(store=str(tmp_path), static=str(static))
    dm.vocab.add(["1", "3", "7", "10", "20", "300"])
    inits, found = resolve_inits("similar:auto", dm, ["801", "803"])
    # Every known line on the path, best first (route 1 shares N Lamar / S Congress with
    # 801, route 3 Burnet / S Lamar with 803); the other new line is never a candidate.
    assert inits == {"801": "similar:1,3,300,10,20,7", "803": "similar:3,1,10,20,7"}
    assert found["801"]["similar"][0] == "1" and 0.5 < found["801"]["overlap"] <= 1.0
    assert next(k for k, _ in found["803"]["ranked"]) == "3" and len(found["803"]["ranked"]) == 5
    dm.vocab.add(["803"])  # a line being added is never its own (or another new line's) model
    assert resolve_inits("similar:auto", dm, ["801", "803"])[0] == inits
