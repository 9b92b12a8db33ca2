"""Which known lines run where a new line runs, the same way: ``similar:auto``'s choice.

A new line's embedding row can start from the mean row of the lines it shares its path
with (``similar:<key,…>``). :func:`rank_similar_lines` finds them from the static feed alone,
so it works before the new line has a single recorded fix: it samples the new line's shapes
(each used by at least 10 % of its trips) every ``step_m`` metres and scores each known line
by the share of those points that lie within ``radius_m`` of one of its own such shapes
**and** travel the same way (the shapes' bearings there within ``max_angle_deg``). The same
road driven in the opposite direction (a route's other direction) does not count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import shapely

from transitnet.gtfs.artefacts import StaticArtefacts
from transitnet.gtfs.shapes import ShapeTable, interpolate_xy


def compute_line_shapes(trips: pd.DataFrame, min_share: float = 0.1) -> pd.DataFrame:
    """The shapes each line uses for at least ``min_share`` of its trips (both directions).

    Args:
        trips: ``line_key, shape_id`` per trip (null shapes are ignored).
        min_share: Rarer shapes (short turns, depot runs) are left out.

    Returns:
        Columns ``line_key, shape_id, share``, one row per kept (line, shape).
    """
    usable = trips.dropna(subset=["line_key", "shape_id"])
    counts = usable.groupby(["line_key", "shape_id"]).size().rename("n").reset_index()
    counts["share"] = counts["n"] / counts.groupby("line_key")["n"].transform("sum")
    kept = counts[counts["share"] >= min_share]
    return kept[["line_key", "shape_id", "share"]].reset_index(drop=True)


def _samples(shapes: ShapeTable, row: int, step_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Points every ``step_m`` along shape ``row`` and the unit direction of travel there."""
    length = float(shapes.length_m()[row])
    dist = np.arange(0.0, length + 1e-9, step_m) if length > 0 else np.zeros(1)
    return _points(shapes, row, dist), _bearings(shapes, row, dist)


def _points(shapes: ShapeTable, row: int, dist: np.ndarray) -> np.ndarray:
    x, y = interpolate_xy(shapes, np.full(len(dist), row), dist)
    return np.column_stack([x, y])


def _bearings(shapes: ShapeTable, row: int, dist: np.ndarray, half_m: float = 10.0) -> np.ndarray:
    ahead = _points(shapes, row, dist + half_m) - _points(shapes, row, dist - half_m)
    norm = np.linalg.norm(ahead, axis=1, keepdims=True)
    out: np.ndarray = ahead / np.where(norm > 0, norm, 1.0)
    return out


def _line(shapes: ShapeTable, row: int) -> shapely.LineString:
    lo, hi = shapes.offsets[row], shapes.offsets[row + 1]
    return shapely.LineString(np.column_stack([shapes.x[lo:hi], shapes.y[lo:hi]]))


def compute_covered(
    shapes: ShapeTable,
    points: np.ndarray,
    heading: np.ndarray,
    known_rows: Sequence[int],
    *,
    radius_m: float = 50.0,
    max_angle_deg: float = 45.0,
) -> np.ndarray:
    """Which ``(P, 2)`` points (travelling ``heading``) some shape of ``known_rows`` drives.

    A point is covered when a shape passes within ``radius_m`` and runs within
    ``max_angle_deg`` of the point's heading there.
    """
    geoms = shapely.points(points)
    tree = shapely.STRtree(geoms)
    covered = np.zeros(len(points), dtype=bool)
    cos_max = np.cos(np.radians(max_angle_deg))
    for row in known_rows:
        line = _line(shapes, row)
        near = tree.query(line, predicate="dwithin", distance=radius_m)
        if len(near) == 0:
            continue
        their = _bearings(shapes, row, shapely.line_locate_point(line, geoms[near]))
        covered[near[(heading[near] * their).sum(axis=1) >= cos_max]] = True
    return covered


def rank_similar_lines(
    art: StaticArtefacts,
    new_key: str,
    candidates: Sequence[str],
    *,
    step_m: float = 50.0,
    radius_m: float = 50.0,
    max_angle_deg: float = 45.0,
) -> pd.DataFrame:
    """Known lines by how much of the new line's path they drive, the same way.

    The new line's path is every shape it uses for at least 10 % of its trips, sampled
    every ``step_m``; a known line covers a sample when one of its own such shapes
    passes within ``radius_m`` in the same direction (bearings within ``max_angle_deg``).

    Args:
        art: Static artefacts whose ``trips`` carry the same ``line_key`` mode as the
            model's vocabulary.
        new_key: The new line's key.
        candidates: Known line keys to score (those without a shape are left out).
        step_m: Spacing of the sample points along the new line's shapes.
        radius_m: A sample counts when a candidate's shape passes within this ...
        max_angle_deg: ... running within this angle of the new line's direction there.

    Returns:
        Columns ``line_key, overlap`` (share of the new line's samples covered, 0..1),
        best first (ties by key).

    Raises:
        ValueError: The new line has no shape in the static feed.
    """
    lines = compute_line_shapes(art.trips)
    lines["row"] = art.shapes.index_of(lines["shape_id"].to_numpy())
    lines = lines[lines["row"] >= 0]
    rows = lines.groupby("line_key")["row"].agg(list).to_dict()
    if new_key not in rows:
        raise ValueError(f"line {new_key!r} has no shape in static feed {art.version}")
    samples = [_samples(art.shapes, int(r), step_m) for r in rows[new_key]]
    points = np.concatenate([p for p, _ in samples])
    heading = np.concatenate([h for _, h in samples])
    scored = [
        (key, float(np.mean(compute_covered(art.shapes, points, heading, rows[key],
                                            radius_m=radius_m, max_angle_deg=max_angle_deg))))
        for key in candidates
        if key != new_key and key in rows
    ]  # fmt: skip
    out = pd.DataFrame(scored, columns=["line_key", "overlap"])
    return out.sort_values(["overlap", "line_key"], ascending=[False, True], ignore_index=True)


def choose_similar_lines(ranked: pd.DataFrame, new_key: str) -> list[str]:
    """``similar:auto``'s choice: every known line that drives part of the new line's path.

    Their rows are averaged: one line's row carries that line's own habits (a local
    route on a rapid line's corridor stops more often), and the mean over every line on
    the path was the rule that beat random rows on all four validation splits of
    ``benchmarks/exp_similar_init.py`` (the single best-overlapping line did not).

    Args:
        ranked: :func:`rank_similar_lines`' output.
        new_key: The new line (for the error message).

    Raises:
        ValueError: No known line drives any of the new line's path the same way.
    """
    shared = ranked[ranked["overlap"] > 0.0]
    if shared.empty:
        raise ValueError(
            f"no known line drives any of line {new_key!r}'s path the same way: "
            "similar:auto has nothing to copy; use another init (unknown, mean)"
        )
    return [str(k) for k in shared["line_key"]]
