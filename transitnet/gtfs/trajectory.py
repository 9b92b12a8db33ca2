"""Per-trajectory logic of map matching: choosing each fix's leg, speeds and dwells.

A *trajectory* is one vehicle on one trip on one service day: its fixes, in time order.
:func:`transitnet.gtfs.project.find_candidates` gives every fix one candidate position per
pass of its shape nearby; :func:`select_candidates` picks one per fix, walking all
trajectories' k-th fixes together (a loop over k, never over points):

- the first fix (or any fix while none has been accepted) prefers the shape start and,
  between legs, the one the vehicle is heading along;
- later fixes prefer candidates inside the window ``[anchor − back_m, anchor +
  speed_cap_mps·Δt + slack_m]`` around the last accepted distance ``anchor``, which only
  moves forward, so a vehicle on the inbound leg of an out-and-back or loop stays there,
  and among candidates inside the window the one nearest the anchor;
- a candidate outside the window wins only when it is clearly closer to the fix (by
  ``outside_penalty_m`` plus a cost per metre outside): a jump after a data gap or a
  restart of the shape. Such fixes are flagged ``reacquired``.

Arrays here are aligned with trajectory-ordered rows (see :class:`TrajectoryPoints`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transitnet.gtfs.project import Candidates

# The schedule and service-day helpers moved to :mod:`transitnet.gtfs.service_days`; they are
# re-exported here (``X as X``) for existing imports.
from transitnet.gtfs.service_days import ScheduleIndex as ScheduleIndex
from transitnet.gtfs.service_days import build_schedule_index as build_schedule_index
from transitnet.gtfs.service_days import choose_service_dates as choose_service_dates
from transitnet.gtfs.service_days import compute_day_origins as compute_day_origins
from transitnet.gtfs.service_days import compute_local_dates as compute_local_dates
from transitnet.gtfs.service_days import compute_scheduled_s as compute_scheduled_s


@dataclass(frozen=True)
class WindowConfig:
    """How far a vehicle may have moved, and how candidates are scored.

    Scores are in metres: a candidate's offset from the fix plus the penalties below;
    the lowest score wins.

    Attributes:
        back_m: Backward jitter allowed behind the last accepted distance (GPS noise,
            layovers): progress is monotone within this tolerance.
        speed_cap_mps: Fastest plausible along-route speed; the window ends
            ``speed_cap_mps · Δt + slack_m`` past the last accepted distance.
        slack_m: Extra window ahead (GPS noise, clock jitter).
        progress_weight: Penalty per metre between a candidate inside the window and the
            last accepted distance: between two legs about as close to the fix, take the
            nearer one (a wrong guess behind the vehicle is corrected by the next fix).
        first_progress_weight: Penalty per metre along the shape for a trajectory's
            first fix: a loop's shared terminal is its start, not its end.
        outside_penalty_m: Penalty for a candidate outside the window (instead of the
            progress penalty): it must be this much closer to the fix to win.
        outside_back_weight: Extra penalty per metre behind the window.
        outside_ahead_weight: Extra penalty per metre beyond the window.
        heading_penalty_m: Penalty for a first-fix candidate whose segment points more
            than 120° away from the vehicle's heading (bearing, or its next move).
    """

    back_m: float = 30.0
    speed_cap_mps: float = 40.0
    slack_m: float = 150.0
    progress_weight: float = 0.01
    first_progress_weight: float = 0.002
    outside_penalty_m: float = 30.0
    outside_back_weight: float = 0.002
    outside_ahead_weight: float = 0.002
    heading_penalty_m: float = 50.0


@dataclass(frozen=True)
class TrajectoryPoints:
    """Fixes grouped into trajectories: each trajectory's rows are contiguous, in time order.

    Attributes:
        t_s: (N,) float64 seconds (any epoch); NaN when unknown.
        hx: (N,) unit heading x in the metric plane (NaN when unknown).
        hy: (N,) unit heading y.
        starts: (T,) int64 first row of each trajectory, ascending.
        lengths: (T,) int64 rows of each trajectory.
    """

    t_s: np.ndarray
    hx: np.ndarray
    hy: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray


@dataclass(frozen=True)
class Selection:
    """The chosen candidate of every fix (NaN where it had none).

    Attributes:
        dist_m: (N,) distance along the shape.
        offset_m: (N,) distance from the shape.
        reacquired: (N,) bool, chosen outside its window.
    """

    dist_m: np.ndarray
    offset_m: np.ndarray
    reacquired: np.ndarray


def select_candidates(
    cands: Candidates, pts: TrajectoryPoints, cfg: WindowConfig = WindowConfig()
) -> Selection:
    """Choose one candidate per fix, trajectory by trajectory (see the module docstring).

    The loop runs over k (the k-th fix of every trajectory at once), never over points.
    Fixes with one candidate (most) only update the window; the others are scored.
    """
    dist, offset = cands.dist_m[:, 0].copy(), cands.offset_m[:, 0].copy()
    reacquired = np.zeros(len(dist), dtype=bool)
    order = np.argsort(-pts.lengths, kind="stable")
    starts, lengths = pts.starts[order], pts.lengths[order]
    max_len = int(lengths[0]) if len(lengths) else 0
    n_active = np.searchsorted(-lengths, -np.arange(max_len), side="left")
    anchor, anchor_t = np.full(len(starts), np.nan), np.full(len(starts), np.nan)
    multi = cands.count > 1
    for k in range(max_len):
        n = int(n_active[k])
        rows = starts[:n] + k
        a, at = anchor[:n], anchor_t[:n]
        pick = np.flatnonzero(multi[rows])
        if len(pick):
            step = _Step(rows[pick], a[pick], at[pick], lengths[:n][pick] > k + 1)
            best = np.argmin(_score(cands, pts, step, cfg), axis=1)
            dist[step.rows] = cands.dist_m[step.rows, best]
            offset[step.rows] = cands.offset_m[step.rows, best]
        d = dist[rows]
        jump = _outside(d, a, pts.t_s[rows] - at, cfg)
        reacquired[rows] = jump
        moved = np.where(np.isnan(a) | jump, d, np.fmax(a, d))
        ok = np.isfinite(d)
        anchor[:n] = np.where(ok, moved, a)
        anchor_t[:n] = np.where(ok, pts.t_s[rows], at)
    none = ~np.isfinite(offset)
    dist[none], offset[none] = np.nan, np.nan
    return Selection(dist, offset, reacquired)


def _outside(d: np.ndarray, a: np.ndarray, dt: np.ndarray, cfg: WindowConfig) -> np.ndarray:
    """True where a found distance lies outside the window of a set anchor."""
    reach = cfg.speed_cap_mps * np.maximum(dt, 0.0) + cfg.slack_m
    with np.errstate(invalid="ignore"):  # unknown times: NaN reach, never beyond
        return np.asarray((d < a - cfg.back_m) | ((d > a + reach) & np.isfinite(d)))


@dataclass(frozen=True)
class _Step:
    """One fix per active trajectory: row, anchor (distance, time), and has a next fix."""

    rows: np.ndarray
    anchor: np.ndarray
    anchor_t: np.ndarray
    has_next: np.ndarray


def _window_score(
    d: np.ndarray, off: np.ndarray, a: np.ndarray, dt: np.ndarray, cfg: WindowConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Score candidates ``d`` (offsets ``off``) against anchors ``a`` set ``dt`` seconds ago.

    Returns:
        ``(score, outside)``; NaN scores (padding) become ``inf``.
    """
    reach = np.where(np.isnan(dt), np.inf, cfg.speed_cap_mps * np.maximum(dt, 0.0) + cfg.slack_m)
    with np.errstate(invalid="ignore"):  # inf - inf on padding: NaN, made inf below
        behind = np.maximum(a - cfg.back_m - d, 0.0)
        beyond = np.maximum(d - a - reach, 0.0)
        outside = (behind > 0) | (beyond > 0)
        inside = np.abs(d - a) * cfg.progress_weight
        away = cfg.outside_back_weight * behind + cfg.outside_ahead_weight * beyond
        score = off + np.where(outside, cfg.outside_penalty_m + away, inside)
    score[np.isnan(score)] = np.inf
    return score, outside


def _score(cands: Candidates, pts: TrajectoryPoints, step: _Step, cfg: WindowConfig) -> np.ndarray:
    """(n, C) scores of the candidates of one fix per trajectory (lowest wins)."""
    rows = step.rows
    dt = (pts.t_s[rows] - step.anchor_t)[:, None]
    score, _ = _window_score(
        cands.dist_m[rows], cands.offset_m[rows], step.anchor[:, None], dt, cfg
    )
    fresh = np.flatnonzero(np.isnan(step.anchor))
    if len(fresh):
        score[fresh] = _first_fix_score(cands, pts, rows[fresh], step.has_next[fresh], cfg)
    return score


def _first_fix_score(
    cands: Candidates, pts: TrajectoryPoints, rows: np.ndarray, has_next: np.ndarray,
    cfg: WindowConfig,
) -> np.ndarray:  # fmt: skip
    """Score a first fix's candidates (no anchor yet).

    Preferred: near the shape start, along the reported bearing, and consistent with the
    trajectory's next fix (its best candidate scored as if this one were the anchor),
    which tells the legs of a loop or out-and-back apart.
    """
    d, off = cands.dist_m[rows], cands.offset_m[rows]
    score = off + cfg.first_progress_weight * d + _heading_penalty(cands, pts, rows, cfg)
    nxt = np.where(has_next, rows + 1, rows)
    dt = (pts.t_s[nxt] - pts.t_s[rows])[:, None, None]
    pair, _ = _window_score(
        cands.dist_m[nxt][:, None, :], cands.offset_m[nxt][:, None, :], d[:, :, None], dt, cfg
    )
    ahead = pair.min(axis=2)
    score += np.where(has_next[:, None] & np.isfinite(ahead), ahead, 0.0)
    score[np.isnan(score)] = np.inf
    return np.asarray(score)


def _heading_penalty(
    cands: Candidates, pts: TrajectoryPoints, rows: np.ndarray, cfg: WindowConfig
) -> np.ndarray:
    """Penalty for candidates pointing more than 120° away from a known heading."""
    cos = cands.ux[rows] * pts.hx[rows, None] + cands.uy[rows] * pts.hy[rows, None]
    return np.where(cos < -0.5, cfg.heading_penalty_m, 0.0)


def compute_headings(bearing_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the unit heading of each fix in the metric plane from its reported bearing.

    Bearings are degrees clockwise from north; UTM grid convergence (a few degrees) is far
    below the 120° test the heading feeds. Missing or out-of-range bearings give NaN (a
    vehicle's own moves are used through the next-fix consistency instead: a heading
    drawn between fixes minutes apart misleads on curves and at loop terminals).
    """
    bearing = np.asarray(bearing_deg, dtype=np.float64)
    rad = np.deg2rad(np.where((bearing >= 0) & (bearing <= 360), bearing, np.nan))
    return np.sin(rad), np.cos(rad)


def compute_along_speed(
    dist: np.ndarray,
    t_s: np.ndarray,
    base: np.ndarray,
    restart: np.ndarray,
    traj: np.ndarray,
    *,
    min_dt_s: float = 15.0,
) -> np.ndarray:
    """Return the along-route speed (m/s) over at least ``min_dt_s`` seconds.

    Each usable fix is compared with the latest usable fix of its trajectory at least
    ``min_dt_s`` earlier (short gaps turn GPS jitter into absurd speeds). No speed is
    measured across a restart: a re-acquired fix starts afresh.

    Args:
        dist: (N,) distance along the shape, trajectory-ordered.
        t_s: (N,) seconds.
        base: (N,) bool, usable fixes (matched, not stale).
        restart: (N,) bool, re-acquired fixes (a jump after a gap or a restart).
        traj: (N,) trajectory number of each row.
        min_dt_s: Shortest time between the two fixes.

    Returns:
        (N,) float64; NaN without an earlier usable fix far enough back.
    """
    speed = np.full(len(dist), np.nan)
    idx = np.flatnonzero(base & np.isfinite(dist) & np.isfinite(t_s))
    if not len(idx):
        return speed
    t = t_s[idx] - t_s[idx].min()
    run = np.cumsum(np.r_[True, traj[idx][1:] != traj[idx][:-1]] | restart[idx])
    key = run * (t.max() + 2.0 * min_dt_s + 1.0) + t
    prev = np.searchsorted(key, key - min_dt_s, side="right") - 1
    ok = (prev >= 0) & (run[np.maximum(prev, 0)] == run)
    cur, before = idx[ok], idx[prev[ok]]
    speed[cur] = (dist[cur] - dist[before]) / (t_s[cur] - t_s[before])
    return speed


@dataclass(frozen=True)
class StopIndex:
    """Stop distances along each shape (CSR by shape row), for dwell detection.

    Attributes:
        offsets: (S+1,) int64; stops of shape ``i`` are ``[offsets[i], offsets[i+1])``.
        dist_m: (K,) sorted stop distances within each shape.
        key: (K,) ``dist_m`` shifted per shape so it increases over the whole index.
        base: (S,) the shift of each shape.
    """

    offsets: np.ndarray
    dist_m: np.ndarray
    key: np.ndarray
    base: np.ndarray

    def has_stops(self, shape_idx: np.ndarray) -> np.ndarray:
        """Return True where the shape has at least one stop."""
        return np.asarray(self.offsets[shape_idx + 1] > self.offsets[shape_idx])

    def distance_to_stop(self, shape_idx: np.ndarray, dist: np.ndarray) -> np.ndarray:
        """Return the along-shape distance to the nearest stop (inf without stops)."""
        lo, hi = self.offsets[shape_idx], self.offsets[shape_idx + 1]
        pos = np.searchsorted(self.key, self.base[shape_idx] + dist)
        gap = np.full(len(dist), np.inf)
        for cand in (pos - 1, pos):
            ok = (cand >= lo) & (cand < hi)
            at = np.clip(cand, 0, max(len(self.dist_m) - 1, 0))
            near = np.abs(self.dist_m[at] - dist) if len(self.dist_m) else gap
            gap = np.where(ok, np.minimum(gap, near), gap)
        return gap


def build_stop_index(shape_idx: np.ndarray, dist_m: np.ndarray, n_shapes: int) -> StopIndex:
    """Build a :class:`StopIndex` from stop rows (shape row, distance); -1/NaN rows ignored."""
    ok = (shape_idx >= 0) & np.isfinite(dist_m)
    shape_idx, dist_m = shape_idx[ok], dist_m[ok]
    order = np.lexsort((dist_m, shape_idx))
    shape_idx, dist_m = shape_idx[order], dist_m[order]
    counts = np.bincount(shape_idx, minlength=n_shapes)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    top = np.zeros(n_shapes)
    np.maximum.at(top, shape_idx, dist_m)
    base = np.concatenate([[0.0], np.cumsum(top + 1.0)[:-1]]) if n_shapes else top
    return StopIndex(offsets, dist_m, dist_m + base[shape_idx], base)


@dataclass(frozen=True)
class DwellConfig:
    """When a vehicle counts as dwelling at a stop.

    Attributes:
        radius_m: Largest along-shape distance from a stop.
        still_m: Largest along-shape move between consecutive fixes of a dwell.
        min_s: Shortest dwell (first to last fix of the still run).
    """

    radius_m: float = 30.0
    still_m: float = 15.0
    min_s: float = 20.0


def detect_dwells(
    dist: np.ndarray,
    t_s: np.ndarray,
    usable: np.ndarray,
    traj: np.ndarray,
    shape_idx: np.ndarray,
    stops: StopIndex,
    cfg: DwellConfig = DwellConfig(),
) -> tuple[np.ndarray, np.ndarray]:
    """Flag fixes in runs that stay still near a stop for at least ``cfg.min_s``.

    A run is a maximal sequence of usable fixes of one trajectory, each within
    ``still_m`` along the shape of the previous one.

    Args:
        dist: (N,) distance along the shape, trajectory-ordered.
        t_s: (N,) seconds.
        usable: (N,) bool, matched fixes (stale repeats included: they extend a run).
        traj: (N,) trajectory number.
        shape_idx: (N,) shape row (valid where usable).
        stops: Stop distances per shape.
        cfg: Thresholds.

    Returns:
        ``(is_dwell, known)``: bool arrays; ``known`` is False where the fix is unusable
        or its shape has no stop positions (dwell cannot be evaluated).
    """
    idx = np.flatnonzero(usable & np.isfinite(dist))
    is_dwell = np.zeros(len(dist), dtype=bool)
    known = np.zeros(len(dist), dtype=bool)
    if not len(idx):
        return is_dwell, known
    d, t, tr, s = dist[idx], t_s[idx], traj[idx], shape_idx[idx]
    still = np.zeros(len(idx), dtype=bool)
    still[1:] = (tr[1:] == tr[:-1]) & (np.abs(d[1:] - d[:-1]) <= cfg.still_m)
    run_start = np.flatnonzero(~still)
    run = np.cumsum(~still) - 1
    run_end = np.append(run_start[1:], len(idx)) - 1
    duration = t[run_end] - t[run_start]
    near = stops.distance_to_stop(s, d) <= cfg.radius_m
    is_dwell[idx] = (duration[run] >= cfg.min_s) & near
    known[idx] = stops.has_stops(s)
    return is_dwell & known, known
