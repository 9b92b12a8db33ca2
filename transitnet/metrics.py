"""Forecast metrics on aligned (N, H) arrays, with masks for unobserved targets.

All distances are metres along the route; horizons are in seconds. Every function
ignores masked entries and reports the count it used, so a figure is never an average
over nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from transitnet.gtfs.shapes import ShapeTable, interpolate_xy

#: Transit app ETA bands: (upper horizon s, early tolerance s, late tolerance s).
TRANSIT_APP_BANDS: tuple[tuple[float, float, float], ...] = (
    (180.0, 30.0, 90.0),
    (360.0, 60.0, 150.0),
    (600.0, 60.0, 210.0),
    (900.0, 90.0, 270.0),
)


def compute_mae(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H,) mean absolute error per horizon over observed targets (NaN where none)."""
    err = np.where(mask, np.abs(pred - target), 0.0)
    count = mask.sum(axis=0)
    result: np.ndarray = np.where(count > 0, err.sum(axis=0) / np.maximum(count, 1), np.nan)
    return result


def compute_rmse(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H,) root mean squared error per horizon over observed targets (NaN where none)."""
    sq = np.where(mask, (pred - target) ** 2, 0.0)
    count = mask.sum(axis=0)
    result: np.ndarray = np.sqrt(np.where(count > 0, sq.sum(axis=0) / np.maximum(count, 1), np.nan))
    return result


def compute_coverage(
    lower: np.ndarray, upper: np.ndarray, target: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """(H,) share of observed targets inside ``[lower, upper]`` per horizon."""
    inside = (target >= lower) & (target <= upper) & mask
    count = mask.sum(axis=0)
    result: np.ndarray = np.where(count > 0, inside.sum(axis=0) / np.maximum(count, 1), np.nan)
    return result


def summarise_by_horizon(values: np.ndarray, horizons_s: Sequence[int]) -> dict[str, float]:
    """Map per-horizon values to ``{"<seconds>": value}`` (JSON keys are strings)."""
    return {str(int(h)): _json_float(v) for h, v in zip(horizons_s, values, strict=True)}


def _json_float(value: Any) -> float:
    v = float(value)
    return v if np.isfinite(v) else float("nan")


def compute_per_line_mae(
    pred: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray,
    line_keys: np.ndarray,
    horizons_s: Sequence[int],
) -> dict[str, dict[str, Any]]:
    """Per line: ``{"mae_m": {"<h>": …}, "n": windows}``."""
    out: dict[str, dict[str, Any]] = {}
    keys = pd.Series(line_keys).astype(str)
    for key, idx in keys.groupby(keys).groups.items():
        rows = np.asarray(idx)
        mae = compute_mae(pred[rows], target[rows], mask[rows])
        out[str(key)] = {"mae_m": summarise_by_horizon(mae, horizons_s), "n": len(rows)}
    return out


def compute_masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H,) mean of ``(N, H)`` values over the masked-in entries per horizon (NaN where none)."""
    total = np.where(mask, values, 0.0).sum(axis=0)
    count = mask.sum(axis=0)
    result: np.ndarray = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return result


def compute_position_error(
    shapes: ShapeTable,
    shape_ids: Any,
    anchor_m: np.ndarray,
    pred: np.ndarray,
    target: np.ndarray,
) -> np.ndarray:
    """(N, H) straight-line distance (m) between predicted and observed positions on the shape.

    Both positions are placed on the window's shape (in its metric CRS) at the anchor's
    distance along it plus the predicted or the observed distance travelled, clamped to
    the shape's ends. On a straight shape this equals the along-route error; on a curved
    one it is smaller (what a rider sees on a map).

    Args:
        shapes: The metric shapes.
        shape_ids: (N,) shape id of each window (null or unknown ids give NaN).
        anchor_m: (N,) distance along the shape at the anchor fix, metres.
        pred: (N, H) predicted metres travelled from the anchor.
        target: (N, H) observed metres travelled from the anchor.

    Returns:
        (N, H) float64 distances in metres; NaN where the shape is unknown or a value is NaN.
    """
    idx = np.broadcast_to(shapes.index_of(shape_ids)[:, None], pred.shape).ravel()
    anchor = np.asarray(anchor_m, dtype=np.float64)[:, None]
    xp, yp = interpolate_xy(shapes, idx, (anchor + pred).ravel())
    xt, yt = interpolate_xy(shapes, idx, (anchor + target).ravel())
    result: np.ndarray = np.hypot(xp - xt, yp - yt).reshape(pred.shape)
    return result


def compute_per_line_mean(
    values: np.ndarray,
    mask: np.ndarray,
    line_keys: np.ndarray,
    horizons_s: Sequence[int],
) -> dict[str, dict[str, float]]:
    """Per line: ``{"<line key>": {"<h>": mean of the masked-in values}}``."""
    out: dict[str, dict[str, float]] = {}
    keys = pd.Series(line_keys).astype(str)
    for key, idx in keys.groupby(keys).groups.items():
        rows = np.asarray(idx)
        out[str(key)] = summarise_by_horizon(
            compute_masked_mean(values[rows], mask[rows]), horizons_s
        )
    return out


def compute_eta_band_accuracy(
    predicted_s: np.ndarray, actual_s: np.ndarray, horizon_s: np.ndarray
) -> dict[str, float]:
    """Transit-app ETA accuracy: share of predictions inside the band of their horizon.

    Args:
        predicted_s: Predicted arrival times (any common origin), seconds.
        actual_s: Observed arrival times, same origin.
        horizon_s: Time from the prediction to the observed arrival, seconds.

    Returns:
        ``{"0-3", "3-6", "6-10", "10-15": share, "score": mean of the four, "n": count}``;
        a bucket with no predictions is NaN and left out of the score.
    """
    err = predicted_s - actual_s  # negative: predicted early
    labels = ("0-3", "3-6", "6-10", "10-15")
    out: dict[str, float] = {}
    lower = 0.0
    for label, (upper, early, late) in zip(labels, TRANSIT_APP_BANDS, strict=True):
        sel = (horizon_s >= lower) & (horizon_s < upper)
        ok = (err[sel] >= -early) & (err[sel] <= late)
        out[label] = float(ok.mean()) if sel.any() else float("nan")
        lower = upper
    scores = [out[k] for k in labels if np.isfinite(out[k])]
    out["score"] = float(np.mean(scores)) if scores else float("nan")
    out["n"] = float(((horizon_s >= 0) & (horizon_s < TRANSIT_APP_BANDS[-1][0])).sum())
    return out
