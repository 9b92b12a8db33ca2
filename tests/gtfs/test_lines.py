from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.gtfs.static_helpers import AUCKLAND_ROUTES
from transitnet.gtfs.feeds import read_static_feed
from transitnet.gtfs.lines import (
    compute_line_key,
    compute_line_keys,
    normalise_ids,
    strip_version_suffix,
)


def test_strip_version_suffix() -> None:
    ids = pd.Series(
        ["07005-20190719095551_v82.14", " 07005-20190613111133_v80.31 ", "1723919", "A-B", None]
    )
    out = strip_version_suffix(ids)
    assert out.iloc[:4].tolist() == ["07005", "07005", "1723919", "A-B"]
    assert pd.isna(out.iloc[4])


def test_normalise_ids_keeps_index_nulls_and_blanks() -> None:
    ids = pd.Series(
        ["x-20190101000000_v1.2", "", None, "x-20190101000000_v1.2"], index=[5, 6, 7, 8]
    )
    out = normalise_ids(ids)
    assert out.index.tolist() == [5, 6, 7, 8]
    assert out[5] == "x" and out[8] == "x"
    assert out.isna().tolist() == [False, True, True, False]
    assert normalise_ids(ids, normalisers=()).iloc[0] == "x-20190101000000_v1.2"
    assert normalise_ids(pd.Series([], dtype="string")).empty


def test_line_key_modes() -> None:
    rid = "07005-20190719095551_v82.14"
    assert compute_line_key(rid) == "07005"
    assert compute_line_key(rid, 1, mode="route_direction") == "07005:1"
    assert compute_line_key(rid, mode="route_direction") == "07005:na"
    assert compute_line_key(rid, mode="short_name", short_name="70") == "70"
    assert compute_line_key(rid, mode="short_name") == "07005"
    with pytest.raises(ValueError, match="unknown line key mode"):
        compute_line_key(rid, mode="colour")
    with pytest.raises(ValueError, match="route_id is empty"):
        compute_line_key("  ")
    with pytest.raises(ValueError, match="direction_id must be"):
        compute_line_key(rid, 2, mode="route_direction")


def test_vectorised_keys_match_scalar_and_keep_nulls() -> None:
    routes = pd.Series(["1", "07005-20190719095551_v82.14", None, "F"])
    directions = pd.Series([0, pd.NA, 1, 7], dtype="Int64")
    keys = compute_line_keys(routes, directions, mode="route_direction")
    assert keys.iloc[0] == compute_line_key("1", 0, mode="route_direction")
    assert keys.iloc[1] == "07005:na" and keys.iloc[3] == "F:na"
    assert pd.isna(keys.iloc[2])
    names = pd.Series(["One", "", "x", None])
    short = compute_line_keys(routes, mode="short_name", short_names=names)
    assert short.iloc[0] == "One" and short.iloc[1] == "07005" and short.iloc[3] == "F"
    assert pd.isna(short.iloc[2])


@pytest.mark.real_data
def test_auckland_keys_survive_a_static_update(shared_data: Path) -> None:
    june = read_static_feed(shared_data / "auckland-2019-08-13" / "static_subset_2019-06").routes
    august = pd.read_csv(
        shared_data / "auckland-2019-08-13" / "routes_v82" / "routes.txt", dtype=str
    )
    for table in (june, august):
        table["key"] = compute_line_keys(table["route_id"])
        table["line"] = compute_line_keys(
            table["route_id"], mode="short_name", short_names=table["route_short_name"]
        )
    joined = august.merge(june, on="key", suffixes=("_aug", "_jun"))
    wanted = joined[joined["route_short_name_aug"].isin(AUCKLAND_ROUTES)]
    assert set(wanted["route_short_name_aug"]) == set(AUCKLAND_ROUTES)
    # the route_ids differ between versions, the keys and the short-name lines do not
    assert (wanted["route_id_aug"] != wanted["route_id_jun"]).all()
    assert (wanted["line_aug"] == wanted["line_jun"]).all()
    assert not august["key"].str.contains("_v").any()
