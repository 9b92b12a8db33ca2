"""Reference-validator rules that need the static GTFS feed, for VehiclePositions rows.

:class:`StaticRuleChecker` implements :class:`transitnet.realtime.validate.StaticChecker`.
It indexes a ``gtfs_kit.Feed`` once and then flags decoded VehiclePosition rows with
MobilityData's gtfs-realtime-validator decisions (``TripDescriptorValidator``,
``StopValidator``, ``FrequencyTypeZeroValidator``, ``FrequencyTypeOneValidator``,
``VehicleValidator``):

- ``E003`` trip_id not in trips.txt (unless ADDED); ``E016`` ADDED but in trips.txt;
- ``E004`` route_id not in routes.txt; ``E035`` trip_id belongs to another route;
- ``E023`` start_time differs from the trip's first arrival_time (not for frequency trips);
- ``E024`` direction_id differs from trips.txt (or trips.txt has none);
- ``E011`` stop_id not in stops.txt; ``E015`` that stop's location_type is not 0;
- ``E006``/``E013``/``W005`` for exact_times = 0 trips: start_date or start_time
  missing / schedule_relationship neither UNSCHEDULED nor empty / vehicle.id missing;
- ``E019`` exact_times = 1 trip whose start_time is not on the headway grid;
- ``E028`` position outside the coverage box (see :mod:`transitnet.gtfs.static_rules_geometry`);
- ``E029`` position off its trip's shape (only inside the coverage box).

With ``java_compatible=True`` (default) two quirks of the reference are kept so flags
match it exactly: E029's 200 m is 0.0018 degrees in unprojected lon/lat, and E019 writes
the minutes of a grid time as ``seconds % 360`` for VehiclePositions (so only on-the-hour
and some other times match). ``False`` measures E029 in metres (UTM) and formats E019
grid times correctly.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from transitnet.gtfs.static_rules_geometry import CoverageBox, TripShapes, format_java_clock

logger = logging.getLogger(__name__)

#: ``TripDescriptor.ScheduleRelationship`` values used by the rules.
ADDED = 1
UNSCHEDULED = 2
#: Rules evaluated whenever a static feed is given (E028/E029 also need geometry).
BASE_RULES: frozenset[str] = frozenset(
    {"E003", "E004", "E006", "E011", "E013", "E015", "E016", "E019", "E023", "E024", "E035",
     "W005"}
)  # fmt: skip
_SEP = "\x1f"
_INPUT_COLUMNS = ("trip_id", "route_id", "direction_id", "start_time", "start_date",
                  "schedule_relationship", "stop_id", "vehicle_id", "latitude",
                  "longitude")  # fmt: skip
_REQUIRED: dict[str, tuple[str, ...]] = {
    "trips": ("trip_id", "route_id"),
    "routes": ("route_id",),
    "stops": ("stop_id",),
}


class StaticRuleChecker:
    """Flags VehiclePosition rows against one static GTFS feed.

    Args:
        feed: A gtfs-kit Feed; ``trips``, ``routes`` and ``stops`` are required,
            ``stop_times``, ``frequencies`` and ``shapes`` are optional (None when absent).
        ignore_shapes: Ignore shapes.txt, like the reference's ``-ignoreShapes``: E028 uses
            the stops' box and E029 is not evaluated (its column stays null).
        java_compatible: Keep the reference's quirks (see the module docstring).

    Attributes:
        rules: The rule ids :meth:`check` evaluates.

    Raises:
        ValueError: when a required table or column is missing.
    """

    def __init__(
        self, feed: Any, *, ignore_shapes: bool = False, java_compatible: bool = True
    ) -> None:
        trips, routes, stops = (_require(feed, name) for name in ("trips", "routes", "stops"))
        trips = trips.drop_duplicates("trip_id", keep="last")
        stops = stops.drop_duplicates("stop_id", keep="last")
        self._index_ids(trips, routes, stops)
        frequency_trips = self._index_frequencies(feed, java_compatible)
        self._first_arrival = _first_arrivals(
            getattr(feed, "stop_times", None), trips["trip_id"], frequency_trips
        )
        shapes = None if ignore_shapes else getattr(feed, "shapes", None)
        self._box = CoverageBox.from_feed(shapes, stops)
        self._shapes = TripShapes.from_feed(shapes, trips, metric=not java_compatible)
        self.rules = (
            BASE_RULES
            | ({"E028"} if self._box is not None else set())
            | ({"E029"} if self._shapes is not None else set())
        )

    def _index_ids(self, trips: pd.DataFrame, routes: pd.DataFrame, stops: pd.DataFrame) -> None:
        """Index trips (route, direction), routes and stops (is location_type 0)."""
        self._trip_ids = _strings(trips["trip_id"])
        self._trip_route = _strings(trips["route_id"])
        self._trip_direction = _java_strings(trips.get("direction_id"), len(trips))
        self._route_ids = _strings(routes["route_id"].drop_duplicates())
        self._stop_ids = _strings(stops["stop_id"])
        location = _numbers(stops.get("location_type"), len(stops)).fillna(0)
        self._stop_is_platform = pa.array(location.to_numpy() == 0)

    def _index_frequencies(self, feed: Any, java_compatible: bool) -> set[str]:
        """Index exact_times = 0 and = 1 trips; return every frequency-based trip_id."""
        freq = _read_frequencies(getattr(feed, "frequencies", None))
        zero = freq.loc[freq["exact_times"] == 0, "trip_id"]
        exact_one = freq[freq["exact_times"] == 1]
        self._exact_zero = _strings(zero.drop_duplicates())
        self._exact_one = _strings(exact_one["trip_id"].drop_duplicates())
        self._grid_keys = _build_grid_keys(exact_one, vehicle_quirk=java_compatible)
        return set(zero) | set(exact_one["trip_id"])

    def check(self, positions: pa.Table) -> dict[str, np.ndarray]:
        """Flag each row for every rule in :attr:`rules`.

        Args:
            positions: Decoded rows; reads ``trip_id``, ``route_id``, ``direction_id``,
                ``start_time``, ``start_date``, ``schedule_relationship``, ``stop_id``,
                ``vehicle_id``, ``latitude``, ``longitude``.

        Returns:
            Rule id -> boolean array aligned with the rows (True = raised).
        """
        cols = {name: _column(positions, name) for name in _INPUT_COLUMNS}
        flags = self._check_trips(cols)
        flags.update(self._check_frequencies(cols))
        flags.update(self._check_stops(cols))
        flags.update(self._check_geometry(cols))
        return {rule: flags[rule] for rule in self.rules}

    def _check_trips(self, cols: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        trip_id, route_id = cols["trip_id"], cols["route_id"]
        trip = pc.index_in(trip_id, value_set=self._trip_ids)
        known, named = _valid(trip), _true(pc.not_equal(trip_id, ""))
        added = _true(pc.equal(cols["schedule_relationship"], ADDED))
        first = pc.take(self._first_arrival, trip)
        gtfs_route = pc.take(self._trip_route, trip)
        route_known = _true(pc.is_in(route_id, value_set=self._route_ids))
        direction = pc.cast(cols["direction_id"], pa.string())
        gtfs_direction = pc.take(self._trip_direction, trip)
        return {
            "E003": named & ~known & ~added,
            "E016": named & known & added,
            "E023": named
            & _valid(cols["start_time"])
            & _true(pc.not_equal(first, cols["start_time"])),
            "E024": known & _valid(direction) & ~_true(pc.equal(gtfs_direction, direction)),
            "E004": _true(pc.not_equal(route_id, "")) & ~route_known,
            "E035": known & route_known & _true(pc.not_equal(gtfs_route, route_id)),
        }

    def _check_frequencies(self, cols: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        trip_id = cols["trip_id"]
        zero = _true(pc.is_in(trip_id, value_set=self._exact_zero))
        relation = cols["schedule_relationship"]
        keys = pc.binary_join_element_wise(trip_id, cols["start_time"], _SEP)
        on_grid = _true(pc.is_in(keys, value_set=self._grid_keys))
        return {
            "E006": zero & ~(_valid(cols["start_date"]) & _valid(cols["start_time"])),
            "E013": zero & _true(pc.not_equal(relation, UNSCHEDULED)),
            "W005": zero & ~_valid(cols["vehicle_id"]),
            "E019": _true(pc.is_in(trip_id, value_set=self._exact_one)) & ~on_grid,
        }

    def _check_stops(self, cols: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        stop = pc.index_in(cols["stop_id"], value_set=self._stop_ids)
        platform = pc.take(self._stop_is_platform, stop)
        return {
            "E011": _valid(cols["stop_id"]) & ~_valid(stop),
            "E015": _valid(stop) & ~_true(platform),
        }

    def _check_geometry(self, cols: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        lat = _floats(cols["latitude"])
        lon = _floats(cols["longitude"])
        with np.errstate(invalid="ignore"):
            valid = (lat >= -90) & (lat <= 90) & (lon >= -180) & (lon <= 180)
        inside = self._box.contains(lon, lat) if self._box is not None else np.ones_like(valid)
        flags = {"E028": valid & ~inside}
        if self._shapes is not None:
            trip = pc.index_in(cols["trip_id"], value_set=self._trip_ids)
            rows = np.flatnonzero(valid & inside & _valid(trip))
            trip_rows = np.asarray(trip.to_numpy(zero_copy_only=False))[rows].astype(np.int64)
            flags["E029"] = np.zeros(len(lat), dtype=bool)
            flags["E029"][rows] = self._shapes.is_off_shape(trip_rows, lon[rows], lat[rows])
        return flags


def _require(feed: Any, table: str) -> pd.DataFrame:
    df = getattr(feed, table, None)
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"static feed has no {table}.txt; it is required for validation")
    missing = [c for c in _REQUIRED[table] if c not in df.columns]
    if missing:
        raise ValueError(f"static feed {table}.txt lacks column(s) {missing}")
    return df[df[_REQUIRED[table][0]].notna()]


def _strings(values: pd.Series) -> pa.Array:
    array = pa.array(values.astype("string"))
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array.cast(pa.string())


def _java_strings(values: pd.Series | None, n: int) -> pa.Array:
    """The column as the reference's GTFS reader keeps it: text, integers without '.0'."""
    if values is None:
        return pa.nulls(n, pa.string())
    if pd.api.types.is_numeric_dtype(values):
        values = values.astype("Int64")
    return _strings(values.astype("string").str.strip())


def _numbers(values: pd.Series | None, n: int) -> pd.Series:
    if values is None:
        return pd.Series(np.full(n, np.nan))
    return pd.to_numeric(values, errors="coerce").astype("float64")


def _read_frequencies(freq: pd.DataFrame | None) -> pd.DataFrame:
    """Return ``trip_id``, ``exact_times`` (missing = 0), ``start_s``, ``end_s``, ``headway_s``."""
    if not isinstance(freq, pd.DataFrame) or "trip_id" not in freq.columns:
        freq = pd.DataFrame({"trip_id": pd.Series([], dtype="string")})
    out = pd.DataFrame({"trip_id": freq["trip_id"].astype("string")})
    out["exact_times"] = _numbers(freq.get("exact_times"), len(freq)).fillna(0).to_numpy()
    out["start_s"] = parse_gtfs_seconds(freq.get("start_time"), len(freq))
    out["end_s"] = parse_gtfs_seconds(freq.get("end_time"), len(freq))
    out["headway_s"] = _numbers(freq.get("headway_secs"), len(freq)).to_numpy()
    return out[out["trip_id"].notna()]


def parse_gtfs_seconds(times: pd.Series | None, n: int) -> np.ndarray:
    """Parse GTFS ``H:MM:SS`` times to seconds after midnight; NaN when empty or malformed."""
    if times is None:
        return np.full(n, np.nan)
    parts = times.astype("string").str.extract(r"^\s*(-?\d+):(\d{2}):(\d{2})\s*$")
    h, m, s = (pd.to_numeric(parts[i]).astype("float64").to_numpy() for i in range(3))
    return np.asarray(h * 3600 + m * 60 + s, dtype=np.float64)


def _build_grid_keys(exact_one: pd.DataFrame, *, vehicle_quirk: bool) -> pa.Array:
    """``trip_id<SEP>clock`` for every start_time on an exact_times = 1 trip's headway grid."""
    keys: list[str] = []
    usable = exact_one.dropna(subset=["start_s", "end_s", "headway_s"])
    for trip_id, start, end, headway in usable[
        ["trip_id", "start_s", "end_s", "headway_s"]
    ].itertuples(index=False):
        if headway <= 0:
            logger.warning("frequencies.txt: trip %s has headway_secs %s", trip_id, headway)
            grid = np.arange(int(start), int(end))[:1]
        else:
            grid = np.arange(int(start), int(end), int(headway))
        keys.extend(f"{trip_id}{_SEP}{format_java_clock(int(t), vehicle_quirk)}" for t in grid)
    return pa.array(sorted(set(keys)), pa.string())


def _first_arrivals(
    stop_times: pd.DataFrame | None, trip_ids: pd.Series, skip: set[str]
) -> pa.Array:
    """Per trip (aligned with ``trip_ids``): first arrival by stop_sequence, printed as Java does.

    Frequency-based trips (``skip``) and trips without stop_times get null (E023 not evaluated).
    """
    if not isinstance(stop_times, pd.DataFrame) or stop_times.empty:
        return pa.nulls(len(trip_ids), pa.string())
    st = pd.DataFrame(
        {
            "trip_id": stop_times["trip_id"].astype("string"),
            "seq": _numbers(stop_times.get("stop_sequence"), len(stop_times)).to_numpy(),
            "arrival": parse_gtfs_seconds(stop_times.get("arrival_time"), len(stop_times)),
        }
    )
    first = st.sort_values(["trip_id", "seq"], kind="stable").drop_duplicates("trip_id")
    clock = [format_java_clock(-999 if np.isnan(a) else int(a), False) for a in first["arrival"]]
    by_trip = pd.Series(clock, index=first["trip_id"].to_numpy(), dtype="string")
    aligned = by_trip.reindex(trip_ids.astype("string").to_numpy())
    return _strings(aligned.mask(aligned.index.isin(list(skip))))


def _column(table: pa.Table, name: str) -> pa.Array:
    chunked = table.column(name)
    return chunked.chunk(0) if chunked.num_chunks == 1 else chunked.combine_chunks()


def _valid(array: pa.Array) -> np.ndarray:
    return np.asarray(pc.is_valid(array).to_numpy(zero_copy_only=False), dtype=bool)


def _true(array: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)


def _floats(array: pa.Array) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.float64)
