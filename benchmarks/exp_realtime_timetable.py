"""Check the timetable recovered from Auckland's TripUpdates against a published one.

:mod:`transitnet.gtfs.realtime_timetable` recovers the day's (2019-08-13, feed v82.14)
scheduled stop times as event time minus delay. The static subset (June, v80.31) holds
one published trip per route; where a realtime trip runs the same route at the same
start time, its recovered scheduled arrivals are compared with the published ones at
the same stops (ids without version suffix). Differences come from recovery errors or
from timetable changes between the June and August versions.

    .venv/bin/python benchmarks/exp_realtime_timetable.py --out runs/exp_realtime_timetable

Writes ``OUT/realtime_timetable.json`` (figures, drop counts, machine facts).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from exp_common import DATA, machine_facts

from transitnet.gtfs.artefacts import StaticArtefacts, load_or_build_artefacts
from transitnet.gtfs.realtime_timetable import build_stop_times_from_trip_updates, strip_suffix
from transitnet.realtime.trip_updates import read_trip_updates
from transitnet.store.atomic import write_text_atomic

DAY = DATA / "auckland-2019-08-13"
logger = logging.getLogger("exp_realtime_timetable")


def place_trips_by_route(events: pd.DataFrame, art: StaticArtefacts) -> pd.DataFrame:
    """``trip_id, shape_id, route, start_s`` of the realtime trips whose route is in ``art``.

    The subset has one shape per route, so a trip takes its route's shape.
    """
    routes = art.trips.assign(route=strip_suffix(art.trips["route_id"]))
    routes = routes.drop_duplicates("route")[["route", "shape_id"]]
    trips = events.drop_duplicates("trip_id").assign(route=strip_suffix(events["route_id"]))
    trips["start_s"] = pd.to_timedelta(trips["start_time"], errors="coerce").dt.total_seconds()
    return trips.merge(routes, on="route")[["trip_id", "shape_id", "route", "start_s"]]


def compare_with_published(
    recovered: pd.DataFrame, trips: pd.DataFrame, art: StaticArtefacts
) -> dict[str, Any]:
    """Recovered vs published scheduled arrivals (same route, start time and stop).

    Args:
        recovered: ``trip_id, stop_id, arrival_s`` (recovered stop times).
        trips: ``trip_id, route, start_s`` of the realtime trips.
        art: The static subset (``stop_times``, ``trips`` with ``route_id``).

    Returns:
        Counts and the distribution of recovered minus published arrival (s).
    """
    if art.stop_times is None:
        raise ValueError("the static subset has no stop_times")
    pub = art.stop_times.merge(art.trips[["trip_id", "route_id"]], on="trip_id")
    start = pub.sort_values("stop_index").groupby("trip_id")["departure_s"].first()
    pub = pub.join(start.rename("start_s"), on="trip_id")
    pub = pub.assign(route=strip_suffix(pub["route_id"]), stop=strip_suffix(pub["stop_id"]))
    rec = recovered.merge(trips[["trip_id", "route", "start_s"]], on="trip_id")
    rec = rec.assign(stop=strip_suffix(rec["stop_id"]))
    keys = ["route", "start_s", "stop"]
    both = rec.merge(pub[[*keys, "arrival_s"]], on=keys, suffixes=("", "_published"))
    diff = (both["arrival_s"] - both["arrival_s_published"]).abs()
    return {
        "trips_compared": int(both["trip_id"].nunique()),
        "visits_compared": len(both),
        "abs_diff_s": diff.describe(percentiles=[0.5, 0.9]).round(1).to_dict(),
        "share_equal": float((diff == 0).mean()) if len(diff) else float("nan"),
        "share_within_60_s": float((diff <= 60).mean()) if len(diff) else float("nan"),
    }


def main() -> int:
    """Recover the day's timetable and compare it with the published June trips."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--out", type=Path, default=Path("runs/exp_realtime_timetable"), help="Report folder."
    )
    p.add_argument(
        "--work",
        type=Path,
        default=Path("runs/exp_work/realtime_timetable"),
        help="Import cache (TripUpdates extract).",
    )
    p.add_argument("--quick", action="store_true", help="First 600 snapshots (50 min) only.")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    art = load_or_build_artefacts(str(DAY / "static_subset_2019-06"), args.work)
    started = time.perf_counter()
    read = read_trip_updates(DAY / "trip_updates.tar.xz", limit=600 if args.quick else None)
    trips = place_trips_by_route(read.events, art)
    recovered = build_stop_times_from_trip_updates(
        read.events, art, trips[["trip_id", "shape_id"]], "Pacific/Auckland"
    )
    result = {
        "snapshots": read.n_snapshots,
        "trips_recovered": int(recovered["trip_id"].nunique()),
        "visits_recovered": len(recovered),
        "dropped": recovered.attrs["dropped"],
        "comparison": compare_with_published(recovered, trips, art),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine_facts(),
    }
    text = json.dumps(result, indent=2, default=str)
    write_text_atomic(args.out / "realtime_timetable.json", text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
