"""The segment kernel of map matching: per-segment arrays, projection, simplification, grid.

Shapes come as CSR arrays (the layout of :class:`transitnet.gtfs.shapes.ShapeTable`): the
vertices of shape ``i`` are ``[offsets[i], offsets[i+1])`` of ``x``, ``y`` and ``cum_m``. A
*segment* is named by the global index of its first vertex.

:class:`SegmentArrays` holds what projecting onto segments needs, once per shape table;
:func:`project_to_segments` (float64) and :func:`screen_squared_offsets` (float32) project
points onto given segments pairwise; :func:`simplify_polylines` is Douglas-Peucker over all
shapes at once; :class:`SegmentGrid` lists the segments near each (shape, grid cell). The
candidate search built on them is :mod:`transitnet.gtfs.project`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class SegmentArrays:
    """Per-segment arrays derived once from a CSR shape table (metres).

    Attributes:
        offsets: (S+1,) int64 vertex offsets per shape.
        x0: (V,) segment start x, relative to ``origin``.
        y0: (V,) segment start y, relative to ``origin``.
        dx: (V,) segment vector x (0 for the last vertex of a shape).
        dy: (V,) segment vector y.
        inv_len2: (V,) 1/length² (0 for zero-length segments).
        seg_len: (V,) segment length.
        cum0: (V,) distance along the shape at the segment start.
        first_seg: (V,) first segment of the same shape.
        last_seg: (V,) last real segment of the same shape.
        origin: (x, y) metric origin subtracted from every coordinate.
        f32: float32 copies of ``x0, y0, dx, dy, inv_len2`` for screening pairs.
    """

    offsets: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    inv_len2: np.ndarray
    seg_len: np.ndarray
    cum0: np.ndarray
    first_seg: np.ndarray
    last_seg: np.ndarray
    origin: tuple[float, float]
    f32: tuple[np.ndarray, ...]

    @property
    def n_shapes(self) -> int:
        """Number of shapes."""
        return len(self.offsets) - 1


def build_segment_arrays(
    offsets: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    cum_m: np.ndarray,
    *,
    origin: tuple[float, float] | None = None,
) -> SegmentArrays:
    """Build :class:`SegmentArrays` from CSR vertex arrays (metres).

    Args:
        offsets: (S+1,) vertex offsets; shape ``i`` owns ``[offsets[i], offsets[i+1])``.
        x: (V,) metric x of every vertex.
        y: (V,) metric y of every vertex.
        cum_m: (V,) distance along the shape at every vertex (0 at each shape start).
        origin: Metric origin to subtract (default: the mean vertex).

    Raises:
        ValueError: When the arrays disagree in length, a shape has no vertex, or a
            coordinate is not finite.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    x, y, cum = (np.asarray(a, dtype=np.float64) for a in (x, y, cum_m))
    n_vertices = int(offsets[-1]) if len(offsets) else 0
    if len(offsets) == 0 or not (len(x) == len(y) == len(cum) == n_vertices):
        raise ValueError("shape table arrays are inconsistent")
    if np.any(np.diff(offsets) < 1) or not np.isfinite(np.concatenate([x, y, cum])).all():
        raise ValueError("every shape needs at least one vertex with finite coordinates")
    if origin is None:
        origin = (float(np.mean(x)), float(np.mean(y))) if n_vertices else (0.0, 0.0)
    counts = np.diff(offsets)
    is_last = np.zeros(n_vertices, dtype=bool)
    is_last[offsets[1:] - 1] = True
    dx = np.where(is_last, 0.0, np.roll(x, -1) - x)
    dy = np.where(is_last, 0.0, np.roll(y, -1) - y)
    len2 = dx * dx + dy * dy
    inv_len2 = np.divide(1.0, len2, out=np.zeros_like(len2), where=len2 > 0)
    x0, y0 = x - origin[0], y - origin[1]
    return SegmentArrays(
        offsets=offsets,
        x0=x0,
        y0=y0,
        dx=dx,
        dy=dy,
        inv_len2=inv_len2,
        seg_len=np.sqrt(len2),
        cum0=cum,
        first_seg=np.repeat(offsets[:-1], counts),
        last_seg=np.repeat(np.maximum(offsets[:-1], offsets[1:] - 2), counts),
        origin=origin,
        f32=tuple(a.astype(np.float32) for a in (x0, y0, dx, dy, inv_len2)),
    )


def project_to_segments(
    seg: SegmentArrays, px: np.ndarray, py: np.ndarray, segment: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Project points (relative to ``seg.origin``) onto given segments, pairwise.

    Returns:
        ``(dist_m, offset_m)``: distance along the shape of the nearest point of the
        segment, and the distance from the point to it.
    """
    ex = px - seg.x0[segment]
    ey = py - seg.y0[segment]
    dx, dy = seg.dx[segment], seg.dy[segment]
    t = (ex * dx + ey * dy) * seg.inv_len2[segment]
    np.clip(t, 0.0, 1.0, out=t)
    ex -= t * dx
    ey -= t * dy
    return seg.cum0[segment] + t * seg.seg_len[segment], np.sqrt(ex * ex + ey * ey)


def screen_squared_offsets(
    seg: SegmentArrays, rx: np.ndarray, ry: np.ndarray, segment: np.ndarray
) -> np.ndarray:
    """Squared offsets of points (float32, relative to ``seg.origin``) from segments.

    Computed in float32, accurate to about a centimetre: enough to screen pairs; the
    pairs kept are measured again in float64 with :func:`project_to_segments`.
    """
    x0, y0, dx, dy, inv_len2 = (a[segment] for a in seg.f32)
    ex, ey = rx - x0, ry - y0
    t = (ex * dx + ey * dy) * inv_len2
    np.clip(t, 0.0, 1.0, out=t)
    ex -= t * dx
    ey -= t * dy
    ex *= ex
    ey *= ey
    ex += ey
    return np.asarray(ex)


@dataclass(frozen=True)
class SegmentGrid:
    """Segments listed per (shape, grid cell) they pass within ``radius_m`` of.

    Attributes:
        radius_m: Every segment within this distance of a point in a cell is listed.
        cell_m: Cell size, metres.
        corner: (x, y) of the grid's lower-left corner, relative to the segments' origin.
        n_x: Cells along x.
        n_y: Cells along y.
        cells: Hash index of the occupied ``(shape · n_x + cx) · n_y + cy`` keys.
        starts: (K,) first entry of each occupied key.
        counts: (K,) entries of each occupied key.
        segments: (E,) int64 segment of each entry (ascending within a key).
    """

    radius_m: float
    cell_m: float
    corner: tuple[float, float]
    n_x: int
    n_y: int
    cells: pd.Index
    starts: np.ndarray
    counts: np.ndarray
    segments: np.ndarray


def build_segment_grid(
    seg: SegmentArrays, *, radius_m: float = 200.0, cell_m: float | None = None
) -> SegmentGrid:
    """Index every segment under each grid cell its ``radius_m`` buffer touches.

    Args:
        seg: The segment arrays.
        radius_m: Search radius: candidates farther than this are never needed.
        cell_m: Cell size (default ``1.5 · radius_m``; smaller cells mean fewer pairs to
            test per point but more grid entries).

    Raises:
        ValueError: When ``radius_m`` or ``cell_m`` is not positive.
    """
    cell = float(cell_m if cell_m is not None else 1.5 * radius_m)
    if radius_m <= 0 or cell <= 0:
        raise ValueError("radius_m and cell_m must be positive")
    real = np.flatnonzero(np.arange(len(seg.x0)) <= seg.last_seg)
    x1, y1 = seg.x0[real] + seg.dx[real], seg.y0[real] + seg.dy[real]
    corner = (float(seg.x0.min()) - radius_m, float(seg.y0.min()) - radius_m)
    n_x = int((seg.x0.max() + radius_m - corner[0]) // cell) + 1
    n_y = int((seg.y0.max() + radius_m - corner[1]) // cell) + 1
    cx0 = ((np.minimum(seg.x0[real], x1) - radius_m - corner[0]) // cell).astype(np.int64)
    cx1 = ((np.maximum(seg.x0[real], x1) + radius_m - corner[0]) // cell).astype(np.int64)
    cy0 = ((np.minimum(seg.y0[real], y1) - radius_m - corner[1]) // cell).astype(np.int64)
    cy1 = ((np.maximum(seg.y0[real], y1) + radius_m - corner[1]) // cell).astype(np.int64)
    wx, wy = cx1 - cx0 + 1, cy1 - cy0 + 1
    rep = np.repeat(np.arange(len(real)), wx * wy)
    local = np.arange(len(rep)) - np.repeat(np.cumsum(wx * wy) - wx * wy, wx * wy)
    cx, cy = cx0[rep] + local // wy[rep], cy0[rep] + local % wy[rep]
    segments = real[rep]
    shape = np.searchsorted(seg.offsets, segments, side="right") - 1
    keys = (shape * n_x + cx) * n_y + cy
    order = np.lexsort((segments, keys))
    cells, starts, counts = np.unique(keys[order], return_index=True, return_counts=True)
    return SegmentGrid(radius_m, cell, corner, n_x, n_y, pd.Index(cells), starts.astype(np.int64),
                       counts.astype(np.int64), segments[order])  # fmt: skip


def simplify_polylines(
    x: np.ndarray, y: np.ndarray, offsets: np.ndarray, tol_m: float
) -> np.ndarray:
    """Douglas-Peucker on every shape at once: True for the vertices to keep.

    Every dropped vertex lies within ``tol_m`` of the kept chord that replaces it. The
    recursion runs over depth (all open ranges of all shapes split together), not over
    vertices or shapes.
    """
    keep = np.zeros(len(x), dtype=bool)
    keep[offsets[:-1]] = keep[offsets[1:] - 1] = True
    lo, hi = offsets[:-1].astype(np.int64), (offsets[1:] - 1).astype(np.int64)
    while True:
        lo, hi = lo[hi - lo > 1], hi[hi - lo > 1]
        if not len(lo):
            return keep
        width = hi - lo - 1
        starts = np.cumsum(width) - width
        a, b = np.repeat(lo, width), np.repeat(hi, width)
        inner = a + 1 + np.arange(len(a)) - np.repeat(starts, width)
        dx, dy = x[b] - x[a], y[b] - y[a]
        len2 = dx * dx + dy * dy
        num = (x[inner] - x[a]) * dx + (y[inner] - y[a]) * dy
        t = np.clip(np.divide(num, len2, out=np.zeros_like(num), where=len2 > 0), 0.0, 1.0)
        dev = np.hypot(x[inner] - x[a] - t * dx, y[inner] - y[a] - t * dy)
        worst = argmin_per_group(-dev, starts)
        split = dev[worst] > tol_m
        mid = inner[worst[split]]
        keep[mid] = True
        lo, hi = np.concatenate([lo[split], mid]), np.concatenate([mid, hi[split]])


def argmin_per_group(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Index of the (first) smallest value of each contiguous, non-empty group."""
    if not len(starts):
        return np.asarray(starts, dtype=np.int64)
    group = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(values))))
    is_min = np.flatnonzero(values == np.minimum.reduceat(values, starts)[group])
    first = np.ones(len(is_min), dtype=bool)
    first[1:] = group[is_min][1:] != group[is_min][:-1]
    return np.asarray(is_min[first])
