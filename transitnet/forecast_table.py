"""The prediction table: quantile forecasts → distances, positions and stop ETAs per row.

:func:`build_forecast_table` is what ``transitnet predict`` writes (through
:class:`transitnet.tasks.prediction_writer.ForecastParquetWriter`); it is plain
numpy/pandas, so notebooks and evaluation can build the same table from any forecasts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from transitnet.forecast_outputs import (
    check_horizons,
    compute_arrival_offsets,
    compute_forecast_lonlat,
    find_next_stops,
)
from transitnet.gtfs.artefacts import StaticArtefacts

#: Window columns copied into the prediction table when ``meta`` has them.
META_COLUMNS: tuple[str, ...] = (
    "feed_id",
    "vehicle_id",
    "trip_id",
    "line_key",
    "shape_id",
    "service_date",
)
#: Columns ``meta`` must have.
REQUIRED_COLUMNS: tuple[str, ...] = ("anchor_time", "dist_along_m", "shape_id", "trip_id")


def quantile_label(q: float) -> str:
    """Column label of a quantile level: ``0.1 → "p10"``, ``0.025 → "p2_5"``."""
    return "p" + f"{round(q * 100, 3):g}".replace(".", "_")


def _utc(values: Any) -> pd.Series:
    times: pd.Series = pd.to_datetime(values, utc=True).astype("datetime64[us, UTC]")
    return times.reset_index(drop=True)


def _next_stops_or_nulls(
    meta: pd.DataFrame, artefacts: StaticArtefacts | None, n_stops: int
) -> pd.DataFrame:
    """:func:`find_next_stops`, or all-null rows of the same layout without artefacts."""
    if artefacts is not None:
        return find_next_stops(meta, artefacts, n_stops)
    rows = range(len(meta) * n_stops)
    return pd.DataFrame(
        {
            "stop_id": pd.Series(index=rows, dtype="string"),
            "stop_sequence": pd.Series(index=rows, dtype="Int32"),
            "ahead_m": np.full(len(rows), np.nan),
            "pattern_via": pd.Series(index=rows, dtype="string"),
        }
    )


def _arrival_offsets(
    pred: np.ndarray, horizons_s: Sequence[int], quantiles: Sequence[float], ahead: np.ndarray
) -> dict[str, np.ndarray]:
    """Arrival-time quantile label → ``(N, S)`` seconds, in increasing level.

    Distance quantile ``q`` gives arrival-time quantile ``1 - q`` (farther means earlier).
    """
    order = sorted(range(len(quantiles)), key=lambda j: -quantiles[j])
    return {
        quantile_label(1.0 - quantiles[j]): compute_arrival_offsets(
            horizons_s, pred[:, :, j], ahead
        )
        for j in order
    }


def _stop_frame(
    meta: pd.DataFrame,
    artefacts: StaticArtefacts | None,
    pred: np.ndarray,
    horizons_s: Sequence[int],
    quantiles: Sequence[float],
    n_stops: int,
) -> pd.DataFrame:
    """One row per window: ``stops_via`` and ``stop{k}_id, _sequence, _ahead_m, _eta_pX``."""
    stops = _next_stops_or_nulls(meta, artefacts, n_stops)
    ahead = stops["ahead_m"].to_numpy(np.float64).reshape(len(meta), n_stops)
    anchor = _utc(meta["anchor_time"])
    offsets = _arrival_offsets(pred, horizons_s, quantiles, ahead)
    out: dict[str, Any] = {
        "stops_via": stops["pattern_via"].iloc[::n_stops].reset_index(drop=True).astype("string")
    }
    for k in range(n_stops):
        rows = stops.iloc[k::n_stops].reset_index(drop=True)
        out[f"stop{k + 1}_id"] = rows["stop_id"].astype("string")
        out[f"stop{k + 1}_sequence"] = rows["stop_sequence"].astype("Int32")
        out[f"stop{k + 1}_ahead_m"] = ahead[:, k]
        for label, seconds in offsets.items():
            eta = (anchor + pd.to_timedelta(seconds[:, k], unit="s")).dt.round("s")
            out[f"stop{k + 1}_eta_{label}"] = eta.astype("datetime64[us, UTC]")
    return pd.DataFrame(out, index=range(len(meta)))


def _window_frame(meta: pd.DataFrame) -> pd.DataFrame:
    """One row per window: ``window``, :data:`META_COLUMNS`, ``anchor_time, anchor_dist_m``."""
    frame = pd.DataFrame({"window": np.arange(len(meta), dtype=np.int64)})
    for name in META_COLUMNS:
        if name in meta.columns:
            frame[name] = meta[name].astype("string").to_numpy()
    frame["anchor_time"] = _utc(meta["anchor_time"])
    frame["anchor_dist_m"] = meta["dist_along_m"].to_numpy(np.float64, na_value=np.nan)
    return frame


def _horizon_frame(
    windows: pd.DataFrame,
    pred: np.ndarray,
    horizons_s: np.ndarray,
    quantiles: Sequence[float],
    artefacts: StaticArtefacts | None,
) -> pd.DataFrame:
    """One row per (window, horizon): time, distances and positions of every quantile."""
    n = len(windows)
    anchor_m = windows["anchor_dist_m"].to_numpy(np.float64)
    seconds = np.tile(horizons_s, n)
    anchor_time = windows["anchor_time"].iloc[np.repeat(np.arange(n), len(horizons_s))]
    rows: dict[str, Any] = {"horizon_s": seconds.astype(np.int32)}
    rows["target_time"] = anchor_time.reset_index(drop=True) + pd.to_timedelta(seconds, unit="s")
    lon = lat = np.full(pred.shape, np.nan)
    if artefacts is not None:
        lon, lat = compute_forecast_lonlat(artefacts.shapes, windows["shape_id"], anchor_m, pred)
    for j, q in enumerate(quantiles):
        label = quantile_label(q)
        rows[f"travelled_{label}_m"] = pred[:, :, j].ravel()
        rows[f"dist_along_{label}_m"] = (anchor_m[:, None] + pred[:, :, j]).ravel()
        rows[f"lat_{label}"] = lat[:, :, j].ravel()
        rows[f"lon_{label}"] = lon[:, :, j].ravel()
    return pd.DataFrame(rows)


def _check_inputs(
    meta: pd.DataFrame, pred: Any, horizons_s: Sequence[int], quantiles: Sequence[float]
) -> np.ndarray:
    """Return ``pred`` as float64 after checking columns and shapes."""
    missing = sorted(set(REQUIRED_COLUMNS) - set(meta.columns))
    if missing:
        raise ValueError(f"build_forecast_table: meta lacks columns {missing}")
    check_horizons(horizons_s)
    p = np.asarray(pred, dtype=np.float64)
    if p.shape != (len(meta), len(horizons_s), len(quantiles)):
        raise ValueError(
            f"pred is {p.shape}; expected (windows, horizons, quantiles) = "
            f"({len(meta)}, {len(horizons_s)}, {len(quantiles)})"
        )
    return p


def build_forecast_table(
    meta: pd.DataFrame,
    pred: Any,
    horizons_s: Sequence[int],
    quantiles: Sequence[float],
    artefacts: StaticArtefacts | None = None,
    n_stops: int = 3,
) -> pd.DataFrame:
    """Build the prediction table: one row per (window, horizon).

    Args:
        meta: One row per window (``Windows.meta``): :data:`REQUIRED_COLUMNS`
            (``anchor_time`` UTC) and optionally :data:`META_COLUMNS`.
        pred: ``(N, H, Q)`` metres travelled from the anchor (quantile forecasts).
        horizons_s: ``(H,)`` positive, increasing horizons in seconds.
        quantiles: ``(Q,)`` quantile levels of ``pred``'s last axis.
        artefacts: Static artefacts for positions and stops; None leaves the ``lat_*``,
            ``lon_*`` and ``stop*`` columns null.
        n_stops: Next stops per window.

    Returns:
        ``N * H`` rows ordered by window then horizon: ``window`` (row of ``meta``), the
        :data:`META_COLUMNS` present (string), ``anchor_time`` (UTC), ``anchor_dist_m``,
        ``horizon_s`` (int32), ``target_time`` (UTC); per quantile label ``pX``
        (:func:`quantile_label`): ``travelled_pX_m``, ``dist_along_pX_m`` (anchor
        distance plus travelled, not clamped), ``lat_pX``, ``lon_pX`` (on the shape,
        clamped to its ends; null without a known shape); and, the same on every horizon
        row of a window, ``stops_via`` (``trip``, or ``shape`` when the trip is not in
        the static feed; see :func:`~transitnet.forecast_outputs.find_next_stops`) and
        per next stop ``k = 1..n_stops``: ``stop{k}_id``, ``stop{k}_sequence``,
        ``stop{k}_ahead_m`` and ``stop{k}_eta_pX`` (UTC, to the second; arrival-time
        quantile ``pX``, from distance quantile ``1 - X``, so ``p10`` is the early
        bound; null when the stop is not reached by the last horizon).

    Raises:
        ValueError: For missing columns, mismatched shapes or bad horizons.
    """
    p = _check_inputs(meta, pred, horizons_s, quantiles)
    meta = meta.reset_index(drop=True)
    h = np.asarray(horizons_s, dtype=np.int64)
    windows = _window_frame(meta)
    per_row = _horizon_frame(windows, p, h, quantiles, artefacts)
    stops = _stop_frame(meta, artefacts, p, horizons_s, quantiles, n_stops)
    repeat = np.repeat(np.arange(len(meta)), len(h))
    return pd.concat(
        [
            windows.iloc[repeat].reset_index(drop=True),
            per_row,
            stops.iloc[repeat].reset_index(drop=True),
        ],
        axis=1,
    )
