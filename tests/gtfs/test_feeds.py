from __future__ import annotations

import re
import shutil
from pathlib import Path

import gtfs_kit as gk
import pytest

from tests.faultserver import FaultServer, Reply
from tests.gtfs.static_helpers import read_member, rewrite_zip
from transitnet.gtfs.feeds import (
    StaticFeedError,
    check_static_feed,
    clean_static_feed,
    compute_content_hash,
    compute_feed_version,
    read_static_feed,
)

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def bullrunner(shared_data: Path) -> Path:
    return shared_data / "feeds" / "bullrunner"


def test_reads_austin_folder_with_version(shared_data: Path) -> None:
    folder = shared_data / "austin-capmetro" / "gtfs_2017-01"
    feed = read_static_feed(folder)
    assert len(feed.trips) == 15901
    assert feed.shapes["shape_id"].nunique() == 310
    assert feed.stop_times is None
    assert compute_feed_version(folder) == "Jan_20170306123854"
    assert compute_feed_version(feed) == "Jan_20170306123854"


def test_r_written_index_columns_are_dropped(shared_data: Path) -> None:
    folder = shared_data / "auckland-2019-08-13" / "static_subset_2019-06"
    raw = gk.read_feed(folder)
    assert "Unnamed: 0" in raw.trips.columns  # the pitfall is real
    feed = read_static_feed(folder)
    for table in ("trips", "shapes", "stops", "stop_times", "calendar", "calendar_dates"):
        columns = getattr(feed, table).columns
        assert not [c for c in columns if str(c).startswith("Unnamed")], table
    assert list(feed.trips.columns)[:3] == ["block_id", "route_id", "direction_id"]
    assert len(feed.trips) == 15
    # feed_info.txt holds only a header: the version is a content hash
    assert compute_feed_version(folder).startswith("sha256-")


def test_folder_holding_a_zip_reads_the_zip(bullrunner: Path, tmp_path: Path) -> None:
    folder = tmp_path / "gtfs"
    folder.mkdir()
    shutil.copy(bullrunner / "bullrunner-gtfs.zip", folder)
    assert gk.read_feed(folder).trips is None  # gtfs-kit silently reads nothing
    feed = read_static_feed(folder)
    assert len(feed.trips) == 15
    assert compute_feed_version(folder) == compute_feed_version(folder / "bullrunner-gtfs.zip")


def test_folder_with_several_zips_names_them(bullrunner: Path) -> None:
    with pytest.raises(StaticFeedError, match=r"several zips \(badgtfs.zip, bullrunner-gtfs"):
        read_static_feed(bullrunner)


def test_badgtfs_gives_a_clear_error(bullrunner: Path) -> None:
    with pytest.raises(StaticFeedError) as info:
        read_static_feed(bullrunner / "badgtfs.zip")
    message = str(info.value)
    assert "no GTFS tables found" in message
    assert "bad_agency.txt" in message and "routes.txt, trips.txt, stops.txt" in message


def test_missing_path_and_non_zip_file(tmp_path: Path) -> None:
    with pytest.raises(StaticFeedError, match="does not exist"):
        read_static_feed(tmp_path / "nope.zip")
    text = tmp_path / "feed.zip"
    text.write_text("not a zip")
    with pytest.raises(StaticFeedError, match="neither a folder nor a zip"):
        read_static_feed(text)


def test_no_geometry_at_all_is_named(bullrunner: Path, tmp_path: Path) -> None:
    src = bullrunner / "bullrunner-gtfs-no-shapes.zip"
    bad = rewrite_zip(src, tmp_path / "x.zip", drop=("stop_times.txt",))
    with pytest.raises(
        StaticFeedError,
        match=re.escape(
            "trips.txt has no shape_id and shapes.txt is absent, and stop_times.txt is absent"
        ),
    ):
        read_static_feed(bad)


def test_shape_ids_without_shapes_txt(bullrunner: Path, tmp_path: Path) -> None:
    src = bullrunner / "bullrunner-gtfs.zip"
    bad = rewrite_zip(src, tmp_path / "x.zip", drop=("shapes.txt", "stop_times.txt"))
    with pytest.raises(
        StaticFeedError, match=re.escape("trips.txt references shapes but shapes.txt is absent")
    ):
        read_static_feed(bad)
    # with stop_times the feed is usable: stop polylines replace the missing shapes
    ok = rewrite_zip(src, tmp_path / "ok.zip", drop=("shapes.txt",))
    assert len(read_static_feed(ok).trips) == 15


def test_missing_tables_and_columns_are_all_listed(bullrunner: Path, tmp_path: Path) -> None:
    src = bullrunner / "bullrunner-gtfs.zip"
    stops = read_member(src, "stops.txt").replace("stop_lat", "latitude", 1)
    bad = rewrite_zip(
        src, tmp_path / "x.zip", drop=("routes.txt",), replace={"stops.txt": stops.encode()}
    )
    with pytest.raises(StaticFeedError) as info:
        read_static_feed(bad)
    assert "routes.txt is missing or empty" in str(info.value)
    assert "stops.txt lacks column(s) stop_lat" in str(info.value)


def test_unparseable_values_give_static_feed_error(bullrunner: Path, tmp_path: Path) -> None:
    src = bullrunner / "bullrunner-gtfs.zip"
    lines = read_member(src, "stops.txt").splitlines()
    header = lines[0].split(",")
    row = lines[1].split(",")
    row[header.index("stop_lat")] = "north"
    body = "\n".join([lines[0], ",".join(row), *lines[2:]]).encode()
    bad = rewrite_zip(src, tmp_path / "x.zip", replace={"stops.txt": body})
    with pytest.raises(StaticFeedError, match="could not read static feed"):
        read_static_feed(bad)


def test_clean_works_on_single_agency_feeds(bullrunner: Path, shared_data: Path) -> None:
    raw = gk.read_feed(bullrunner / "bullrunner-gtfs.zip")
    with pytest.raises(KeyError, match="agency_id"):
        gk.clean(raw)  # the gtfs-kit pitfall
    feed = read_static_feed(bullrunner / "bullrunner-gtfs.zip")
    assert feed.agency["agency_id"].tolist() == ["USF Bull Runner"]
    assert set(feed.routes["agency_id"]) == {"USF Bull Runner"}
    cleaned = clean_static_feed(raw)
    assert len(cleaned.trips) == 15
    austin = clean_static_feed(read_static_feed(shared_data / "austin-capmetro" / "gtfs_2017-01"))
    assert len(austin.trips) == 15901  # drop_zombies would have dropped every trip


def test_check_static_feed_accepts_real_feeds(shared_data: Path) -> None:
    feed = read_static_feed(shared_data / "feeds" / "caltrain" / "ct.zip")
    check_static_feed(feed, label="caltrain")
    assert compute_feed_version(feed) == "20230922"


def test_content_hash_ignores_packaging_but_not_content(bullrunner: Path, tmp_path: Path) -> None:
    src = bullrunner / "bullrunner-gtfs.zip"
    folder = tmp_path / "unzipped"
    shutil.unpack_archive(src, folder)
    assert compute_content_hash(folder) == compute_content_hash(src)
    assert compute_feed_version(folder) == compute_feed_version(src)
    stops = read_member(src, "stops.txt").replace("Library", "Libraries")
    changed = rewrite_zip(src, tmp_path / "c.zip", replace={"stops.txt": stops.encode()})
    assert compute_content_hash(changed) != compute_content_hash(src)
    feed = read_static_feed(src)
    assert compute_feed_version(feed).startswith("sha256-")
    assert compute_feed_version(feed) == compute_feed_version(read_static_feed(folder))


def test_reads_from_url_and_reports_http_errors(bullrunner: Path) -> None:
    body = (bullrunner / "bullrunner-gtfs.zip").read_bytes()
    with FaultServer() as server:
        server.route("/gtfs.zip", Reply(200, body=body))
        server.route("/missing.zip", Reply(404, body=b"nope"))
        server.route("/page", Reply(200, body=b"<html>login</html>"))
        feed = read_static_feed(server.url("/gtfs.zip"))
        version = compute_feed_version(server.url("/gtfs.zip"))
        with pytest.raises(StaticFeedError, match="404"):
            read_static_feed(server.url("/missing.zip"))
        with pytest.raises(StaticFeedError, match="neither a folder nor a zip"):
            read_static_feed(server.url("/page"))
    assert len(feed.trips) == 15
    assert version == compute_feed_version(bullrunner / "bullrunner-gtfs.zip")
