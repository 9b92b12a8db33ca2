"""Helpers for the static GTFS tests: zip surgery on copies and tiny in-code feeds."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import gtfs_kit as gk
import pandas as pd

from transitnet.realtime.decode import decode_vehicle_positions

#: Auckland route_short_names whose variants are in static_subset_2019-06.
AUCKLAND_ROUTES = ("70", "75", "25B", "25L", "27H", "27W")


def rewrite_zip(
    src: Path, dest: Path, *, drop: tuple[str, ...] = (), replace: dict[str, bytes] | None = None
) -> Path:
    """Copy a GTFS zip to ``dest`` without the ``drop`` members and with ``replace`` bodies."""
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            zout.writestr(info.filename, replace.get(info.filename, zin.read(info.filename)))
        for name, body in replace.items():
            if name not in zin.namelist():
                zout.writestr(name, body)
    return dest


def read_member(src: Path, name: str) -> str:
    """Return one member of a zip as text."""
    with zipfile.ZipFile(src) as zf:
        return zf.read(name).decode("utf-8")


def read_auckland_positions(shared_data: Path, every: int = 100, count: int = 8) -> pd.DataFrame:
    """Decode ``count`` Auckland snapshots, one every ``every`` files, from the tar.xz."""
    frames = []
    path = shared_data / "auckland-2019-08-13" / "vehicle_positions.tar.xz"
    with tarfile.open(path) as tar:
        for i, member in enumerate(tar):
            if not member.isfile() or (i + 1) % every:
                continue
            body = tar.extractfile(member).read()  # type: ignore[union-attr]
            decoded = decode_vehicle_positions(body, feed_id="akl", source_file=member.name)
            frames.append(decoded.positions.to_pandas())
            if len(frames) == count:
                break
    return pd.concat(frames, ignore_index=True)


def read_austin_day(shared_data: Path, day: str) -> pd.DataFrame:
    """Read one Austin CapMetro day of decoded positions (ids as strings)."""
    path = shared_data / "austin-capmetro" / "vehicle_positions" / f"{day}.csv"
    ids = {"vehicle_id": str, "route_id": str, "trip_id": str}
    return pd.read_csv(path, dtype=ids)  # type: ignore[arg-type]


def tiny_feed(*, with_shapes: bool = True, with_direction: bool = True) -> gk.Feed:
    """A two-route feed built in code (Austin coordinates, metres apart).

    Route ``R1-20190101000000_v1.0`` runs east (shape ``E``) and west (shape ``W``) along the
    same street; route ``R2`` has one shape ``N`` going north. Trip ids carry a version
    suffix on R1.
    """
    lon0, lat0 = -97.74, 30.27
    east = [(lon0 + 0.001 * i, lat0) for i in range(5)]
    north = [(lon0, lat0 + 0.001 * i) for i in range(5)]
    shapes = pd.DataFrame(
        [("E", lat, lon, i + 1) for i, (lon, lat) in enumerate(east)]
        + [("W", lat, lon, i + 1) for i, (lon, lat) in enumerate(reversed(east))]
        + [("N", lat, lon, i + 1) for i, (lon, lat) in enumerate(north)],
        columns=["shape_id", "shape_pt_lat", "shape_pt_lon", "shape_pt_sequence"],
    )
    r1 = "R1-20190101000000_v1.0"
    trips = pd.DataFrame(
        {
            "route_id": [r1, r1, r1, "R2"],
            "service_id": ["S"] * 4,
            "trip_id": ["t1-20190101000000_v1.0", "t2-20190101000000_v1.0", "t3", "t4"],
            "trip_headsign": ["East", "East", "West", "North"],
            "direction_id": [0, 0, 1, 0],
            "shape_id": ["E", "E", "W", "N"],
        }
    )
    if not with_direction:
        trips = trips.drop(columns="direction_id")
    stops = pd.DataFrame(
        {
            "stop_id": ["a", "b", "c"],
            "stop_name": ["A", "B", "C"],
            "stop_lat": [lat0, lat0, lat0 + 0.004],
            "stop_lon": [lon0, lon0 + 0.004, lon0],
        }
    )
    stop_times = pd.DataFrame(
        {
            "trip_id": ["t1-20190101000000_v1.0"] * 2 + ["t2-20190101000000_v1.0"] * 2
            + ["t3"] * 2 + ["t4"] * 2,
            "stop_sequence": [1, 2] * 4,
            "stop_id": ["a", "b", "a", "b", "b", "a", "a", "c"],
            "arrival_time": ["07:00:00", "07:05:00", "08:00:00", "08:05:00",
                             "09:00:00", "09:05:00", "23:58:00", "24:03:30"],
        }
    )  # fmt: skip
    stop_times["departure_time"] = stop_times["arrival_time"]
    routes = pd.DataFrame(
        {"route_id": [r1, "R2"], "route_short_name": ["1", "2"], "route_type": [3, 3]}
    )
    return gk.Feed(
        dist_units="m",
        agency=pd.DataFrame(
            {"agency_name": ["A"], "agency_url": ["u"], "agency_timezone": ["UTC"]}
        ),
        routes=routes,
        trips=trips if with_shapes else trips.drop(columns="shape_id"),
        stops=stops,
        stop_times=stop_times,
        shapes=shapes if with_shapes else None,
    )
