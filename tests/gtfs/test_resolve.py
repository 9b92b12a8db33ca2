from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely

from tests.gtfs.static_helpers import (
    AUCKLAND_ROUTES,
    read_auckland_positions,
    read_austin_day,
    tiny_feed,
)
from transitnet.gtfs.artefacts import StaticArtefacts, assign_line_keys, build_artefacts
from transitnet.gtfs.feeds import read_static_feed
from transitnet.gtfs.resolve import RESOLVE_COLUMNS, RESOLVE_STATUSES, resolve_trip_shapes
from transitnet.gtfs.shapes import project_lonlat
from transitnet.realtime.decode import decode_vehicle_positions


def distance_to_shape(rows: pd.DataFrame, art: StaticArtefacts) -> np.ndarray:
    """Metres from each position to its resolved shape (NaN when unresolved)."""
    table = art.shapes
    x, y = project_lonlat(table.crs, rows["longitude"].to_numpy(), rows["latitude"].to_numpy())
    idx = table.index_of(rows["shape_id"].to_numpy(dtype=object))
    lines = np.array(
        [
            shapely.LineString(np.c_[table.x[a:b], table.y[a:b]])
            for a, b in zip(table.offsets[:-1], table.offsets[1:], strict=True)
        ],
        dtype=object,
    )
    good = (idx >= 0) & np.isfinite(x)
    out = np.full(len(rows), np.nan)
    out[good] = shapely.distance(lines[idx[good]], shapely.points(x[good], y[good]))
    return out


@pytest.fixture(scope="module")
def austin(shared_data: Path) -> StaticArtefacts:
    return build_artefacts(read_static_feed(shared_data / "austin-capmetro" / "gtfs_2017-01"))


@pytest.fixture(scope="module")
def tiny() -> StaticArtefacts:
    return build_artefacts(tiny_feed())


def _positions(**columns: list[object]) -> pd.DataFrame:
    return pd.DataFrame(columns)


def test_each_step_is_recorded(tiny: StaticArtefacts) -> None:
    rows = _positions(
        trip_id=["t3", "t1-20250101000000_v9.9", "old", "old", None, None, "x", "t4"],
        route_id=["R1-20190101000000_v1.0", "R1-x", "R1-20190101000000_v1.0",
                  "R1-20250101000000_v9.9", "R2", "R1-20190101000000_v1.0", "R9", None],
        trip_headsign=["West", None, "West", None, None, None, None, None],
    )  # fmt: skip
    out = resolve_trip_shapes(rows, tiny)
    assert out["resolve_status"].tolist() == [
        "ok", "fallback_suffix", "fallback_headsign", "fallback_variant", "fallback_route",
        "fallback_route", "trip_not_in_static", "ok",
    ]  # fmt: skip
    assert out["shape_id"].tolist()[:6] == ["W", "E", "W", "E", "N", "E"]
    assert out["resolve_via"].tolist()[:5] == ["trip_id", "suffix", "headsign", "variant", "route"]
    assert out["static_trip_id"].tolist()[:2] == ["t3", "t1-20190101000000_v1.0"]
    assert out["static_trip_id"].isna().tolist()[2:5] == [True, True, True]
    # route R1 without headsign or direction is ambiguous (E 2 trips, W 1 trip → 67 %)
    # and is guessed only because 0.67 >= min_modal_share; a stricter share refuses it
    strict = resolve_trip_shapes(rows, tiny, min_modal_share=0.7)
    assert strict["resolve_status"].iloc[[3, 5]].tolist() == ["trip_not_in_static"] * 2
    assert strict["shape_id"].iloc[[3, 5]].isna().all()
    assert out["line_key"].tolist()[:7] == ["R1", "R1", "R1", "R1", "R2", "R1", "R9"]
    assert set(out["resolve_status"]) <= set(RESOLVE_STATUSES)
    assert (out["static_version"] == tiny.version).all()


def test_direction_is_kept_or_filled(tiny: StaticArtefacts) -> None:
    rows = _positions(
        trip_id=["t3", None, None], route_id=["R1-20190101000000_v1.0"] * 3,
        direction_id=[0, 1, None],
    )  # fmt: skip
    out = resolve_trip_shapes(rows, tiny)
    assert out["direction_id"].tolist() == [0, 1, 0]  # the feed's own value wins
    assert out["shape_id"].tolist() == ["W", "W", "E"]  # direction 1 → the W shape
    assert out["resolve_status"].tolist() == ["ok", "fallback_route", "fallback_route"]
    by_direction = resolve_trip_shapes(rows, assign_line_keys(tiny, "route_direction"))
    assert by_direction["line_key"].tolist() == ["R1:0", "R1:1", "R1:0"]


def test_options_and_bad_input(tiny: StaticArtefacts) -> None:
    rows = _positions(trip_id=["t1-20250101000000_v9.9"], route_id=["R1-x"], shape_id=["stale"])
    out = resolve_trip_shapes(rows, tiny, fallbacks=())
    assert out["resolve_status"].tolist() == ["trip_not_in_static"]
    assert out["shape_id"].isna().all()  # the stale input column is replaced
    assert list(out.columns) == ["trip_id", "route_id", *RESOLVE_COLUMNS]
    with pytest.raises(ValueError, match="lack column"):
        resolve_trip_shapes(pd.DataFrame({"trip_id": ["t3"]}), tiny)
    with pytest.raises(ValueError, match="unknown fallback"):
        resolve_trip_shapes(rows, tiny, fallbacks=("telepathy",))
    empty = resolve_trip_shapes(rows.iloc[:0], tiny)
    assert empty.empty and set(RESOLVE_COLUMNS) <= set(empty.columns)


def test_index_and_row_order_are_kept(tiny: StaticArtefacts) -> None:
    rows = _positions(trip_id=["t4", "t3", "nope"], route_id=["R2", "R1", "R2"])
    rows.index = pd.Index([30, 10, 20])
    out = resolve_trip_shapes(rows, tiny)
    assert out.index.tolist() == [30, 10, 20]
    assert out["shape_id"].tolist() == ["N", "W", "N"]


def test_static_trip_without_geometry_is_no_shape() -> None:
    feed = tiny_feed()
    feed.trips.loc[feed.trips["trip_id"] == "t4", "shape_id"] = "missing"
    feed.stop_times = feed.stop_times[feed.stop_times["trip_id"] != "t4"]
    out = resolve_trip_shapes(_positions(trip_id=["t4"], route_id=["R2"]), build_artefacts(feed))
    assert out["resolve_status"].tolist() == ["no_shape"]
    assert out["resolve_via"].tolist() == ["trip_id"]


@pytest.mark.real_data
@pytest.mark.parametrize("day", ["2016-11-24", "2016-11-25"])
def test_austin_2016_through_the_headsign_fallback(
    shared_data: Path, austin: StaticArtefacts, day: str
) -> None:
    rows = read_austin_day(shared_data, day)
    out = resolve_trip_shapes(rows, austin)
    assert len(out) == len(rows)
    assert out["shape_id"].notna().mean() >= 0.99
    assert set(out["resolve_status"]) == {"fallback_headsign", "trip_not_in_static"}
    # nothing is guessed for the rows the fallback cannot place: they lack a headsign
    unresolved = out[out["resolve_status"] == "trip_not_in_static"]
    assert unresolved["trip_headsign"].isna().all()
    offset = distance_to_shape(out, austin)
    assert np.nanmedian(offset) < 10


@pytest.mark.real_data
def test_austin_2017_trips_resolve_exactly(shared_data: Path, austin: StaticArtefacts) -> None:
    rows = read_austin_day(shared_data, "2017-03-21")
    out = resolve_trip_shapes(rows, austin)
    assert (out["resolve_status"] == "ok").mean() > 0.995
    assert out.loc[out["resolve_status"] == "ok", "line_key"].eq(out["route_id"]).all()
    offset = distance_to_shape(out, austin)
    assert np.nanmedian(offset) < 10 and np.nanpercentile(offset, 95) < 30
    # the headsign fallback alone picks the true shape for most rows
    masked = resolve_trip_shapes(rows.assign(trip_id=rows["trip_id"] + "-old"), austin)
    ok = out["resolve_status"] == "ok"
    assert (masked.loc[ok, "shape_id"] == out.loc[ok, "shape_id"]).mean() > 0.8


@pytest.mark.real_data
def test_auckland_variants_resolve_across_versions(shared_data: Path) -> None:
    folder = shared_data / "auckland-2019-08-13"
    art = build_artefacts(read_static_feed(folder / "static_subset_2019-06"))
    routes = pd.read_csv(folder / "routes_v82" / "routes.txt", dtype=str)
    rows = read_auckland_positions(shared_data)
    rows = rows.merge(routes[["route_id", "route_short_name"]], on="route_id", how="left")
    out = resolve_trip_shapes(rows, art)
    wanted = out[out["route_short_name"].isin(AUCKLAND_ROUTES)]
    assert set(wanted["route_short_name"]) == set(AUCKLAND_ROUTES)
    assert set(wanted["resolve_status"]) <= {"fallback_variant", "fallback_suffix"}
    assert (wanted["resolve_status"] == "fallback_variant").mean() > 0.9
    others = out[~out["route_short_name"].isin(AUCKLAND_ROUTES)]
    assert set(others["resolve_status"]) == {"trip_not_in_static"}  # not in the subset
    offset = distance_to_shape(wanted, art)
    assert np.nanmedian(offset) < 5
    assert np.mean(offset < 50) > 0.8


@pytest.mark.real_data
@pytest.mark.parametrize(
    ("zip_name", "status"),
    [
        ("bullrunner-gtfs.zip", "fallback_route"),
        ("bullrunner-gtfs-no-shapes.zip", "fallback_stops"),
    ],
)
def test_bullrunner_positions_with_and_without_shapes(
    shared_data: Path, zip_name: str, status: str
) -> None:
    folder = shared_data / "feeds" / "bullrunner"
    art = build_artefacts(read_static_feed(folder / zip_name))
    body = (folder / "vehicle_positions.pb").read_bytes()
    rows = decode_vehicle_positions(body, feed_id="bullrunner").positions.to_pandas()
    assert rows["trip_id"].isna().all()  # this feed names routes only
    out = resolve_trip_shapes(rows, art)
    assert out["resolve_status"].eq(status).all()
    assert out["resolve_via"].eq("route").all()
    assert out["line_key"].tolist() == rows["route_id"].tolist()
    assert np.nanmedian(distance_to_shape(out, art)) < 100
