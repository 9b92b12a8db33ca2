"""``transitnet timetable`` on real Auckland TripUpdates (the first hour of snapshots)."""

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from transitnet.cli import main
from transitnet.gtfs.artefacts import load_or_build_artefacts
from transitnet.gtfs.realtime_timetable import strip_suffix
from transitnet.gtfs.timetable import read_timetable
from transitnet.realtime.trip_updates import iter_snapshot_bodies, read_trip_updates


def _store_with_trip_shapes(day: Path, store: Path, tu: Path) -> pd.DataFrame:
    """A matched store whose fixes put each realtime trip on its route's June shape."""
    art = load_or_build_artefacts(str(day / "static_subset_2019-06"), store)
    ev = read_trip_updates(tu).events
    route_shape = art.trips.assign(route=strip_suffix(art.trips["route_id"]))
    route_shape = route_shape.drop_duplicates("route")[["route", "shape_id"]]
    trips = ev.drop_duplicates("trip_id").assign(route=lambda d: strip_suffix(d["route_id"]))
    pairs = trips.merge(route_shape, on="route")[["trip_id", "shape_id"]]
    folder = store / "matched" / "feed=akl" / "date=2019-08-13"
    folder.mkdir(parents=True)
    pairs.astype("string").to_parquet(folder / "part-0.parquet")
    return pairs


@pytest.mark.real_data
def test_timetable_cli_writes_a_timetable_on_the_matched_shapes(
    shared_data: Path, tmp_path: Path
) -> None:
    day = shared_data / "auckland-2019-08-13"
    tu = tmp_path / "tu"
    tu.mkdir()
    for name, body in itertools.islice(iter_snapshot_bodies(day / "trip_updates.tar.xz"), 120):
        (tu / name).write_bytes(body)
    store = tmp_path / "store"
    pairs = _store_with_trip_shapes(day, store, tu)
    out = tmp_path / "tt" / "timetable.parquet"
    args = ["timetable", "--trip-updates", str(tu), "--static", str(day / "static_subset_2019-06")]
    assert main([*args, "--store", str(store), "--out", str(out)]) == 0
    timetable = read_timetable(out)
    assert timetable is not None
    sizes = np.diff(timetable.index.offsets)
    assert (sizes >= 2).sum() >= 10
    expected = pairs.astype("string").set_index("trip_id")["shape_id"]
    got = timetable.trip_shapes.astype("string")
    assert (got == expected.reindex(got.index)).all()  # stop distances on the matched shape
    # bad input: one-line errors (exit 2), nothing written
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*args[:2], str(empty), *args[3:], "--store", str(store), "--out", "x"]) == 2
    no_store = ["--store", str(tmp_path / "nostore"), "--out", str(tmp_path / "y.parquet")]
    assert main([*args, *no_store]) == 2
    assert not (tmp_path / "y.parquet").exists()
