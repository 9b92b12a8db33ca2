"""ETA accuracy of forecasts against observed arrivals (e.g. Auckland TripUpdates).

For every test window, the stops downstream of the anchor on its shape
(:func:`transitnet.forecast_outputs.find_next_stops`; a realtime trip that is not in the
static feed takes the stop pattern most trips of its matched shape follow) are joined to
the observed arrivals of the window's trip
(:func:`transitnet.realtime.trip_updates.derive_observed_arrivals`) by trip id and stop
id, both with their feed-version suffix (``<id>-<feedversion>``) stripped: the realtime
feed and the static feed used for matching may be different versions (Auckland: the
day's ``v82.14`` against the June ``v80.31`` subset). Visits observed 0–15 min after the
anchor are scored: each forecaster's curve gives the predicted arrival offset
(:func:`~transitnet.forecast_outputs.compute_arrival_offsets`),
which is compared with the observed one (Transit-app bands and MAE in seconds).

Forecast curves end at the last horizon (15 min), yet a stop observed at 14 min may be
predicted at 16 min and still be inside its band (up to 270 s late). So, for ETAs only,
each curve is continued :data:`EXTEND_S` (300 s) past its last horizon at the speed of
its last segment (:func:`extend_curve`). A curve that still does not reach the stop
predicts an arrival more than 300 s after the last horizon, which is outside every band:
it counts as a miss, never as dropped, and is left out of the MAE (``unreached`` gives
the share).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from transitnet.datasets.windows import Windows
from transitnet.forecast_outputs import compute_arrival_offsets, find_next_stops
from transitnet.gtfs.artefacts import StaticArtefacts
from transitnet.metrics import compute_eta_band_accuracy

logger = logging.getLogger(__name__)

#: ``<id>-<feedversion>`` as Auckland Transport writes it (``-20190719095551_v82.14``).
_VERSION_SUFFIX = r"-\d{8,14}_v[\d.]+$"
#: Observed arrivals are scored up to this long after the anchor (Transit-app bands).
MAX_ETA_S = 900.0
#: Join figures that are counts (the others are shares).
JOIN_COUNTS: tuple[str, ...] = ("windows", "stops_ahead", "pairs_within_15_min")
#: Forecast curves are continued this long past their last horizon (see :func:`extend_curve`).
EXTEND_S = 300


def strip_version_suffix(ids: pd.Series) -> pd.Series:
    """Drop a ``-<feedversion>`` suffix (``1870-20190613111133_v80.31`` → ``1870``).

    Ids without such a suffix are returned unchanged; nulls stay null.
    """
    text = ids.astype("string")
    result: pd.Series = text.str.replace(_VERSION_SUFFIX, "", regex=True)
    return result


@dataclass
class EtaPairs:
    """(window, stop) pairs with an observed arrival 0–``MAX_ETA_S`` s after the anchor.

    Attributes:
        ahead_m: (N, S) distance from each window's anchor to its next S stops (NaN: none).
        window: (K,) window row of each pair.
        stop_rank: (K,) 0-based column of the stop in ``ahead_m``.
        observed_s: (K,) observed arrival, seconds after the anchor.
        source: (K,) ``"arrival"`` or ``"departure"`` (what the observation was).
        join: Join figures: shares of windows and stops that found an observation.
    """

    ahead_m: np.ndarray
    window: np.ndarray
    stop_rank: np.ndarray
    observed_s: np.ndarray
    source: np.ndarray
    join: dict[str, float]


def _observed_by_key(observed: pd.DataFrame) -> pd.DataFrame:
    """Observed visits keyed by stripped trip and stop ids: ``trip, stop, time, source``."""
    return pd.DataFrame(
        {
            "trip": strip_version_suffix(observed["trip_id"]).to_numpy(object),
            "stop": strip_version_suffix(observed["stop_id"]).to_numpy(object),
            "time": observed["observed_time"].to_numpy(),
            "source": observed["source"].astype(str).to_numpy(object),
        }
    )


def build_eta_pairs(
    windows: Windows, artefacts: StaticArtefacts, observed: pd.DataFrame, n_stops: int = 30
) -> EtaPairs:
    """Join each window's next stops to the observed arrivals of its trip.

    Args:
        windows: Test windows; ``meta`` needs ``trip_id, shape_id, dist_along_m,
            anchor_time`` (UTC).
        artefacts: Static artefacts of the matching feed (``trips``, ``stop_dist``).
        observed: Observed arrivals (``trip_id, stop_id, observed_time, source``).
        n_stops: Stops looked at downstream of each anchor.

    Returns:
        The pairs; a stop visited twice by a trip (a loop) keeps the visit nearest the anchor.
    """
    meta = windows.meta.reset_index(drop=True)
    # a realtime trip absent from the static feed takes the commonest pattern of its shape
    nxt = find_next_stops(meta, artefacts, n_stops)
    ahead = nxt["ahead_m"].to_numpy(np.float64).reshape(len(meta), n_stops)
    stops = pd.DataFrame(
        {
            "window": nxt["window"].to_numpy(),
            "stop_rank": nxt["stop_rank"].to_numpy() - 1,
            "trip": strip_version_suffix(meta["trip_id"]).to_numpy(object)[nxt["window"]],
            "stop": strip_version_suffix(nxt["stop_id"]).to_numpy(object),
        }
    ).dropna(subset=["stop", "trip"])
    obs = _observed_by_key(observed)
    pairs = stops.merge(obs, on=["trip", "stop"], how="inner")
    anchor = meta["anchor_time"].to_numpy()[pairs["window"].to_numpy()]
    pairs["observed_s"] = (pairs["time"].to_numpy() - anchor) / np.timedelta64(1, "s")
    pairs = pairs[(pairs["observed_s"] >= 0) & (pairs["observed_s"] < MAX_ETA_S)]
    pairs = pairs.sort_values("observed_s").drop_duplicates(["window", "stop_rank"])
    pairs = pairs.sort_values(["window", "stop_rank"])
    join = _join_figures(meta, stops, obs, len(pairs))
    via = nxt["pattern_via"].iloc[::n_stops]
    join["windows_pattern_via_shape"] = float((via == "shape").mean()) if len(via) else 0.0
    return EtaPairs(
        ahead,
        pairs["window"].to_numpy(np.int64),
        pairs["stop_rank"].to_numpy(np.int64),
        pairs["observed_s"].to_numpy(np.float64),
        pairs["source"].to_numpy(object),
        join,
    )


def _join_figures(
    meta: pd.DataFrame, stops: pd.DataFrame, obs: pd.DataFrame, n_pairs: int
) -> dict[str, float]:
    """Shares of windows with stops ahead, of trips and stops found among observations."""
    trips = strip_version_suffix(meta["trip_id"])
    obs_keys = set(zip(obs["trip"], obs["stop"], strict=True))
    stop_keys = list(zip(stops["trip"], stops["stop"], strict=True))
    found = np.fromiter((k in obs_keys for k in stop_keys), dtype=bool, count=len(stop_keys))
    join = {
        "windows": float(len(meta)),
        "windows_with_stops_ahead": float(stops["window"].nunique()) / max(len(meta), 1),
        "windows_trip_observed": float(trips.isin(set(obs["trip"])).mean()) if len(meta) else 0.0,
        "stops_ahead": float(len(stops)),
        "stops_ahead_observed": float(found.mean()) if len(found) else 0.0,
        "pairs_within_15_min": float(n_pairs),
    }
    logger.info(
        "ETA join: %.1f%% of windows have stops ahead, %.1f%% have their trip in the "
        "observations, %.1f%% of (window, stop) pairs found an observed visit; %d pairs "
        "within %d min",
        100 * join["windows_with_stops_ahead"],
        100 * join["windows_trip_observed"],
        100 * join["stops_ahead_observed"],
        n_pairs,
        MAX_ETA_S // 60,
    )
    return join


def extend_curve(
    horizons_s: tuple[int, ...], travelled_m: np.ndarray, extra_s: int = EXTEND_S
) -> tuple[tuple[int, ...], np.ndarray]:
    """Add a knot ``extra_s`` after the last horizon, at the last segment's speed.

    Args:
        horizons_s: (H,) increasing horizons, seconds.
        travelled_m: (N, H) metres travelled from the anchor at each horizon.
        extra_s: How far past the last horizon to continue, seconds.

    Returns:
        ``(H + 1,)`` horizons and ``(N, H + 1)`` distances; the speed of the last segment
        (from the previous knot, or from the anchor when H = 1) is clipped at 0; NaN stays NaN.
    """
    h = np.asarray(horizons_s, dtype=np.float64)
    d = np.asarray(travelled_m, dtype=np.float64)
    prev_h = h[-2] if len(h) > 1 else 0.0
    prev_d = d[:, -2] if len(h) > 1 else np.zeros(len(d))
    speed = np.clip((d[:, -1] - prev_d) / (h[-1] - prev_h), 0.0, None)
    extended = np.concatenate([d, (d[:, -1] + speed * extra_s)[:, None]], axis=1)
    return (*tuple(int(x) for x in horizons_s), int(horizons_s[-1]) + extra_s), extended


def format_join_figures(join: Mapping[str, float | None]) -> str:
    """One line of join figures: counts with thousands separators, shares in percent."""
    parts = []
    for key, value in join.items():
        label = key.replace("_", " ")
        if value is None or value != value:
            parts.append(f"{label} –")
        else:
            parts.append(f"{label} {value:,.0f}" if key in JOIN_COUNTS else f"{label} {value:.1%}")
    return ", ".join(parts)


def score_eta(
    pairs: EtaPairs, horizons_s: tuple[int, ...], travelled_m: np.ndarray
) -> dict[str, Any]:
    """Transit-app band accuracy and arrival-time errors of one forecaster.

    Args:
        pairs: From :func:`build_eta_pairs`.
        horizons_s: The forecast horizons.
        travelled_m: (N, H) the forecaster's metres travelled from each anchor.

    Returns:
        ``{"0-3", "3-6", "6-10", "10-15", "score", "n"`` (see
        :func:`~transitnet.metrics.compute_eta_band_accuracy`), ``"mae_s"``,
        ``"median_error_s"`` (predicted − observed; negative = early), ``"unreached"``
        (share whose curve, continued by :func:`extend_curve`, does not reach the stop:
        counted as misses), ``"available_share"`` (share of pairs whose window the forecaster
        applies to: rows of NaN, e.g. ``schedule_delay`` without a schedule, are left
        out) and ``"arrival_events"`` (score, mae_s, n on arrival observations only)}.
    """
    offsets = compute_arrival_offsets(*extend_curve(horizons_s, travelled_m), pairs.ahead_m)
    # a forecaster that does not apply to a window (NaN row) is scored where it applies
    finite = np.asarray(np.isfinite(np.asarray(travelled_m, dtype=np.float64)).all(axis=1))
    applies = finite[pairs.window]
    pred = offsets[pairs.window, pairs.stop_rank][applies]
    observed = pairs.observed_s[applies]
    reached = np.isfinite(pred)
    pred = np.where(reached, pred, np.inf)
    out: dict[str, Any] = _score(pred, observed)
    out["unreached"] = float(1 - reached.mean()) if len(pred) else float("nan")
    out["available_share"] = float(applies.mean()) if len(applies) else float("nan")
    arrivals = pairs.source[applies] == "arrival"
    sub = _score(pred[arrivals], observed[arrivals])
    out["arrival_events"] = {k: sub[k] for k in ("score", "mae_s", "n")}
    return out


def _score(pred: np.ndarray, observed: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = compute_eta_band_accuracy(pred, observed, observed)
    err = (pred - observed)[np.isfinite(pred)]
    out["mae_s"] = float(np.abs(err).mean()) if len(err) else float("nan")
    out["median_error_s"] = float(np.median(err)) if len(err) else float("nan")
    return out


def summarise_eta(
    windows: Windows,
    artefacts: StaticArtefacts,
    observed: pd.DataFrame,
    forecasts: Mapping[str, np.ndarray],
) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """ETA metrics of every forecaster on the same (window, stop) pairs.

    Args:
        windows: Test windows (see :func:`build_eta_pairs`).
        artefacts: Static artefacts of the matching feed.
        observed: Observed arrivals (``trip_id, stop_id, observed_time, source``).
        forecasts: Name → (N, H) metres travelled (the model's P50, each baseline).

    Returns:
        Name → :func:`score_eta` block, and the join figures.
    """
    pairs = build_eta_pairs(windows, artefacts, observed)
    scores = {name: score_eta(pairs, windows.horizons_s, pred) for name, pred in forecasts.items()}
    return scores, pairs.join
