"""Vectorised projection of points onto metric polylines: the hot path of map matching.

Shapes come as CSR arrays; the per-segment kernel (projection, float32 screening,
simplification, the segment grid) is :mod:`transitnet.gtfs.segments`.

Why not ``shapely.line_locate_point``: its cost grows with the vertex count of the whole
line (about 62k points/s on Austin shapes, median 328 vertices), and it returns only the
globally nearest point, which is the wrong leg of a loop or out-and-back shape.

Instead (:class:`ShapeGeometry`), shapes are simplified (Douglas-Peucker, 1 m by default,
:func:`~transitnet.gtfs.segments.simplify_polylines`) and a grid
(:class:`~transitnet.gtfs.segments.SegmentGrid`) lists, per (shape, cell), the simplified
segments that come within ``radius_m`` of that cell.
:func:`find_candidates` looks each point's cell up once (a hash lookup), screens the point
against those few segments in float32 with flat numpy arrays (no Python loop over
points), keeps the *local minima* of the distance along the shape, and measures each
exactly (float64) on the original segments under it: one candidate per pass of the shape
near the point (one per leg of an out-and-back). Choosing among them needs the
trajectory's history: see :mod:`transitnet.gtfs.trajectory`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

# The segment kernel moved to :mod:`transitnet.gtfs.segments`; its public names are re-exported
# here (``X as X``) for existing imports.
from transitnet.gtfs.segments import SegmentArrays as SegmentArrays
from transitnet.gtfs.segments import SegmentGrid as SegmentGrid
from transitnet.gtfs.segments import argmin_per_group
from transitnet.gtfs.segments import build_segment_arrays as build_segment_arrays
from transitnet.gtfs.segments import build_segment_grid as build_segment_grid
from transitnet.gtfs.segments import project_to_segments as project_to_segments
from transitnet.gtfs.segments import screen_squared_offsets as screen_squared_offsets
from transitnet.gtfs.segments import simplify_polylines as simplify_polylines

logger = logging.getLogger(__name__)


#: Offsets equal within this (metres) are ties when finding local minima.
_TIE_M = 1e-6
#: Error margin of float32 screening, metres.
_SCREEN_M = 0.05
#: Flat (point, segment) pairs processed per chunk by :func:`project_whole_shapes`.
_CHUNK_PAIRS = 1 << 21


@dataclass(frozen=True)
class ShapeGeometry:
    """What the matcher searches: exact shapes, a simplified copy and a grid over it.

    Candidates are found on the simplified shapes (few segments per point) and measured
    on the exact ones: each simplified segment spans ``span_lo..span_hi`` exact segments.

    Attributes:
        fine: Segment arrays of the exact shapes.
        coarse: Segment arrays of the shapes simplified within ``tol_m`` (same origin).
        span_lo: (Vc,) first exact segment under each simplified segment.
        span_hi: (Vc,) last exact segment under each simplified segment.
        grid: Grid over the simplified segments (radius ``radius + tol_m``).
        radius_m: Candidates farther than this from a point are not kept.
        tol_m: Simplification tolerance.
    """

    fine: SegmentArrays
    coarse: SegmentArrays
    span_lo: np.ndarray
    span_hi: np.ndarray
    grid: SegmentGrid
    radius_m: float
    tol_m: float


def build_shape_geometry(
    offsets: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    cum_m: np.ndarray,
    *,
    radius_m: float = 200.0,
    tol_m: float = 1.0,
) -> ShapeGeometry:
    """Build the :class:`ShapeGeometry` of a CSR shape table (metres).

    Raises:
        ValueError: For inconsistent arrays or a non-positive radius / negative tolerance.
    """
    if tol_m < 0:
        raise ValueError("tol_m must not be negative")
    fine = build_segment_arrays(offsets, x, y, cum_m)
    kept = np.flatnonzero(simplify_polylines(fine.x0, fine.y0, fine.offsets, tol_m))
    shape_of = np.searchsorted(fine.offsets, kept, side="right") - 1
    c_offsets = np.searchsorted(kept, fine.offsets).astype(np.int64)
    coarse = build_segment_arrays(c_offsets, np.asarray(x)[kept], np.asarray(y)[kept],
                                  np.asarray(cum_m)[kept], origin=fine.origin)  # fmt: skip
    span_hi = np.append(kept[1:], 0) - 1
    last = c_offsets[shape_of + 1] - 1 == np.arange(len(kept))
    span_hi = np.where(last, kept, span_hi)
    grid = build_segment_grid(coarse, radius_m=radius_m + tol_m)
    return ShapeGeometry(fine, coarse, kept, np.minimum(span_hi, fine.last_seg[kept]), grid,
                         radius_m, tol_m)  # fmt: skip


@dataclass(frozen=True)
class Candidates:
    """Up to ``C`` candidate positions per point: one per pass of its shape nearby.

    Rows hold ``count`` candidates (in no particular order), then padding: ``inf``
    distances and offsets (so any score built from them is ``inf``) and NaN directions.

    Attributes:
        dist_m: (N, C) distance along the shape.
        offset_m: (N, C) distance from the point.
        ux: (N, C) unit direction x of the candidate's segment.
        uy: (N, C) unit direction y.
        count: (N,) candidates found within the radius (0: the point is off its shape).
    """

    dist_m: np.ndarray
    offset_m: np.ndarray
    ux: np.ndarray
    uy: np.ndarray
    count: np.ndarray


def find_candidates(
    geom: ShapeGeometry,
    px: np.ndarray,
    py: np.ndarray,
    shape_idx: np.ndarray,
    *,
    max_candidates: int = 8,
    merge_m: float = 50.0,
    prune_m: float = 100.0,
) -> Candidates:
    """Return each point's local-minimum projections onto its shape within the radius.

    Local minima of the distance to the simplified shape are found first (screened in
    float32, with ties loose enough to cover the simplification), then each is measured
    exactly on the segments of the exact shape under it. Minima closer than ``merge_m``
    along the shape (wiggles of a densely digitised shape, a tight turnaround) are one
    pass: the nearest stands for it.
    Passes more than ``prune_m`` farther than the nearest one are dropped: with the
    default scores they could only win if the nearest lay tens of kilometres outside its
    window.

    Args:
        geom: Shape geometry.
        px: (N,) metric x (absolute, same CRS as the shape table).
        py: (N,) metric y.
        shape_idx: (N,) int64 shape row of each point (must be valid).
        max_candidates: ``C``; points with more passes keep the closest ``C``.
        merge_m: Local minima closer than this along the shape count as one.
        prune_m: Candidates farther than the nearest one by more than this are dropped.
    """
    rx, ry = px - geom.fine.origin[0], py - geom.fine.origin[1]
    point, segment = _lookup_pairs(geom.grid, rx, ry, shape_idx)
    rough = screen_squared_offsets(
        geom.coarse, rx.astype(np.float32)[point], ry.astype(np.float32)[point], segment
    )
    slack = geom.tol_m + _SCREEN_M
    near = rough <= (geom.radius_m + slack) ** 2
    point, segment, rough = point[near], segment[near], np.sqrt(rough[near])
    maybe = _is_local_minimum(point, segment, rough, tie_m=-2.0 * slack)
    point, segment = point[maybe], segment[maybe]
    segment, dist, offset = _refine(geom, rx, ry, point, segment)
    keep = np.flatnonzero(offset <= geom.radius_m)
    keep = keep[_merge_close(point[keep], dist[keep], offset[keep], merge_m)]
    keep = keep[_within_of_nearest(point[keep], offset[keep], prune_m)]
    return _pack_candidates(geom.fine, len(px), point[keep], segment[keep], dist[keep],
                            offset[keep], max_candidates)  # fmt: skip


def _refine(
    geom: ShapeGeometry, rx: np.ndarray, ry: np.ndarray, point: np.ndarray, coarse: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest exact segment under each (point, simplified segment) pair.

    The exact shape stays within ``tol_m`` of the simplified one, so an exact minimum in
    the span of a neighbouring simplified segment makes that neighbour a (loose) local
    minimum too: it is refined in its own pair.

    Returns:
        ``(segment, dist_m, offset_m)`` on the exact shapes, one per pair.
    """
    lo, width = geom.span_lo[coarse], geom.span_hi[coarse] - geom.span_lo[coarse] + 1
    starts = np.cumsum(width) - width
    fine = np.repeat(lo - starts, width) + np.arange(int(width.sum()))
    pair = np.repeat(np.arange(len(point)), width)
    at = point[pair]
    d2 = screen_squared_offsets(
        geom.fine, rx.astype(np.float32)[at], ry.astype(np.float32)[at], fine
    )
    low = np.sqrt(np.minimum.reduceat(d2, starts))[pair] if len(starts) else d2
    close = np.flatnonzero(d2 <= (low + _SCREEN_M) ** 2)  # the nearest and its near-ties
    dist, offset = project_to_segments(geom.fine, rx[at[close]], ry[at[close]], fine[close])
    best = argmin_per_group(offset, np.flatnonzero(np.diff(pair[close], prepend=-1) != 0))
    return fine[close][best], dist[best], offset[best]


def _lookup_pairs(
    grid: SegmentGrid, rx: np.ndarray, ry: np.ndarray, shape_idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return flat (point, segment) pairs listed under each point's cell."""
    cx = np.floor((rx - grid.corner[0]) / grid.cell_m)
    cy = np.floor((ry - grid.corner[1]) / grid.cell_m)
    inside = (cx >= 0) & (cx < grid.n_x) & (cy >= 0) & (cy < grid.n_y)
    cx, cy = np.where(inside, cx, 0).astype(np.int64), np.where(inside, cy, 0).astype(np.int64)
    key = (shape_idx * grid.n_x + cx) * grid.n_y + cy
    cell = grid.cells.get_indexer(pd.Index(key))
    found = inside & (cell >= 0)
    lo = np.where(found, grid.starts[cell], 0)
    counts = np.where(found, grid.counts[cell], 0)
    point = np.repeat(np.arange(len(rx)), counts)
    first = np.cumsum(counts) - counts
    entry = np.repeat(lo - first, counts) + np.arange(len(point))
    return point, grid.segments[entry]


def _is_local_minimum(
    point: np.ndarray, segment: np.ndarray, offset: np.ndarray, *, tie_m: float = _TIE_M
) -> np.ndarray:
    """True where a pair is nearer than the previous segment and no farther than the next.

    Pairs come grouped by point and sorted by segment. A neighbouring segment missing
    from the list is farther than the radius from the point (the grid lists every
    segment within it, and screening drops only farther ones), so it never beats a pair
    within the radius. A tie at a shared vertex goes to the earlier segment, so each
    pass of the shape counts once. A negative ``tie_m`` keeps near-ties on both sides (a
    superset, for screening rounded offsets).
    """
    same_prev = np.zeros(len(point), dtype=bool)
    same_prev[1:] = (point[1:] == point[:-1]) & (segment[1:] == segment[:-1] + 1)
    before = np.ones(len(point), dtype=bool)
    before[1:] = offset[1:] < offset[:-1] - tie_m
    after = np.ones(len(point), dtype=bool)
    after[:-1] = offset[:-1] <= offset[1:] + abs(tie_m)
    same_next = np.zeros(len(point), dtype=bool)
    same_next[:-1] = same_prev[1:]
    return np.asarray((~same_prev | before) & (~same_next | after))


def _merge_close(
    point: np.ndarray, dist: np.ndarray, offset: np.ndarray, merge_m: float
) -> np.ndarray:
    """Indices keeping the nearest of each run of candidates within ``merge_m`` along.

    Candidates come grouped by point, in order along the shape.
    """
    new = np.ones(len(point), dtype=bool)
    new[1:] = (point[1:] != point[:-1]) | (np.diff(dist) > merge_m)
    starts = np.flatnonzero(new)
    if len(starts) == len(point):
        return np.arange(len(point))
    return argmin_per_group(offset, starts)


def _within_of_nearest(point: np.ndarray, offset: np.ndarray, prune_m: float) -> np.ndarray:
    """Indices of candidates within ``prune_m`` of their point's nearest (grouped by point)."""
    starts = np.flatnonzero(np.r_[True, point[1:] != point[:-1]]) if len(point) else point
    if len(starts) == len(point):
        return np.arange(len(point))
    nearest = np.minimum.reduceat(offset, starts)
    size = np.diff(np.append(starts, len(point)))
    return np.flatnonzero(offset <= np.repeat(nearest, size) + prune_m)


def _pack_candidates(
    seg: SegmentArrays,
    n_points: int,
    point: np.ndarray,
    segment: np.ndarray,
    dist: np.ndarray,
    offset: np.ndarray,
    max_candidates: int,
) -> Candidates:
    """Scatter flat candidates (grouped by point) into padded (N, C) arrays."""
    count = np.bincount(point, minlength=n_points)
    crowded = count[point] > max_candidates
    if crowded.any():  # rare: keep the closest candidates of these points
        logger.debug("%d points have more than %d candidate legs; the closest are kept",
                     int((count > max_candidates).sum()), max_candidates)  # fmt: skip
        order = np.arange(len(point))
        sub = np.flatnonzero(crowded)
        order[sub] = sub[np.lexsort((offset[sub], point[sub]))]
        point, segment, dist, offset = point[order], segment[order], dist[order], offset[order]
    rank = np.arange(len(point)) - np.repeat(np.cumsum(count) - count, count)
    kept = rank < max_candidates
    shape = (n_points, max_candidates)
    out = [np.full(shape, fill) for fill in (np.inf, np.inf, np.nan, np.nan)]
    length = np.where(seg.seg_len[segment] > 0, seg.seg_len[segment], 1.0)
    values = (dist, offset, seg.dx[segment] / length, seg.dy[segment] / length)
    for array, value in zip(out, values, strict=True):
        array[point[kept], rank[kept]] = value[kept]
    return Candidates(
        dist_m=out[0],
        offset_m=out[1],
        ux=out[2],
        uy=out[3],
        count=np.minimum(count, max_candidates),
    )


def project_whole_shapes(
    geom: ShapeGeometry, px: np.ndarray, py: np.ndarray, shape_idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return the globally nearest projection of each point onto its whole shape.

    Cost grows with shape size: use it only for the few points :func:`find_candidates`
    finds nothing for (fixes off their shape), to report how far off they are. Repeated
    points (a parked vehicle) are projected once; the simplified shape is screened in
    float32 and its near-nearest segments are measured exactly.

    Returns:
        ``(dist_m, offset_m)`` per point.
    """
    key = np.stack([px, py, shape_idx.astype(np.float64)], axis=1)
    uniq, inverse = np.unique(key, axis=0, return_inverse=True)
    ux, uy = uniq[:, 0] - geom.fine.origin[0], uniq[:, 1] - geom.fine.origin[1]
    first = geom.coarse.offsets[uniq[:, 2].astype(np.int64)]
    width = geom.coarse.last_seg[first] - first + 1
    points, segments = [], []
    bounds = np.searchsorted(np.cumsum(width), np.arange(0, width.sum(), _CHUNK_PAIRS))
    for lo, hi in zip(bounds, [*bounds[1:], len(uniq)], strict=True):
        rows = np.arange(lo, hi)
        starts = np.cumsum(width[rows]) - width[rows]
        point = np.repeat(rows, width[rows])
        segment = first[point] + np.arange(len(point)) - np.repeat(starts, width[rows])
        d2 = screen_squared_offsets(geom.coarse, ux.astype(np.float32)[point],
                                    uy.astype(np.float32)[point], segment)  # fmt: skip
        low = np.sqrt(np.minimum.reduceat(d2, starts))[point - lo]
        close = d2 <= (low + 2.0 * (geom.tol_m + _SCREEN_M)) ** 2  # near-ties: measure all
        points.append(point[close])
        segments.append(segment[close])
    point, segment = (
        np.concatenate([[], *points]).astype(np.int64),
        np.concatenate([[], *segments]).astype(np.int64),
    )
    segment, dist, offset = _refine(geom, ux, uy, point, segment)
    best = argmin_per_group(offset, np.flatnonzero(np.diff(point, prepend=-1) != 0))
    inverse = inverse.reshape(-1)
    return dist[best][inverse], offset[best][inverse]
