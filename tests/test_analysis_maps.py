from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyproj import Transformer

from transitnet import analysis_maps as am
from transitnet.gtfs.artefacts import StaticArtefacts
from transitnet.gtfs.shapes import make_shape_table

CRS = "EPSG:32632"
X0, Y0 = 420_000.0, 5_090_000.0


def _positions() -> pd.DataFrame:
    times = pd.Series(
        pd.to_datetime(
            [
                "2024-05-07T06:00",
                "2024-05-07T06:01",
                "2024-05-07T06:02",
                "2024-05-07T06:00",
                "2024-05-07T06:01",
            ],
            utc=True,
        )
    )
    return pd.DataFrame(
        {
            "trip_id": ["t1", "t1", "t1", "t2", "t2"],
            "latitude": [45.95, 45.951, 0.0, 45.96, np.nan],
            "longitude": [7.98, 7.981, 0.0, 7.99, 8.0],
            "vehicle_timestamp": times.astype("datetime64[us, UTC]"),
            "vehicle_id": ["v1", "v1", "v1", "v2", "v2"],
            "shape_id": ["S", "S", "S", "missing", "missing"],
            "dist_along_m": [0.0, 120.5, np.nan, 3.0, np.nan],
        }
    )


def _artefacts() -> StaticArtefacts:
    lon, lat = [7.98, 7.99], [45.95, 45.951]
    x, y = Transformer.from_crs("EPSG:4326", CRS, always_xy=True).transform(lon, lat)
    shapes = make_shape_table(["S"], [np.asarray(x)], [np.asarray(y)], CRS)
    empty = pd.DataFrame()
    return StaticArtefacts("v1", shapes, empty, empty, None, empty, empty)


def test_pick_trips_counts_valid_fixes_only() -> None:
    assert am.pick_trips(_positions(), 5) == ["t1", "t2"]  # t1: 2 valid, t2: 1 valid
    assert am.pick_trips(_positions(), 1) == ["t1"]


def test_trip_map_draws_valid_fixes_and_shapes_offline(tmp_path: Path) -> None:
    fmap = am.build_trip_map(_positions(), ["t1", "t2"], art=_artefacts(), timezone="Europe/Zurich")
    html = fmap.get_root().render()
    assert html.count("L.circleMarker(") == 3  # (0, 0) and the missing latitude are left out
    assert "shape S" in html and "shape missing" not in html  # unknown shape: not drawn
    assert "08:01:00 · v1 · 120 m" in html  # tooltips in local time
    path = am.save_map(fmap, tmp_path / "maps" / "trips.html")
    assert path.read_text().startswith("<!DOCTYPE html>")
    bare = am.build_trip_map(_positions(), ["t2"], tiles=None).get_root().render()
    assert "tile.openstreetmap.org" not in bare and bare.count("L.circleMarker(") == 1


def test_trip_map_without_any_valid_fix_is_an_error() -> None:
    with pytest.raises(ValueError, match="no valid fix"):
        am.build_trip_map(_positions(), ["nope"])


def test_shape_lonlat_round_trips() -> None:
    lon, lat = am.shape_lonlat(_artefacts(), 0)
    assert lon == pytest.approx([7.98, 7.99]) and lat == pytest.approx([45.95, 45.951])
