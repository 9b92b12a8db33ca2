r"""``ForecastParquetWriter``: forecasts of a ``predict`` run as one Parquet file.

Use it from the command line with the shipped config (see ``transitnet/configs/predict.yaml``)::

    transitnet predict --config transitnet/configs/predict.yaml --ckpt_path CKPT \\
        --data.store DIR --data.static GTFS --data.predict_dates '[2017-03-21]' \\
        --trainer.callbacks.init_args.output_dir OUT

or add it to any forecasting config::

    transitnet predict --config transitnet/configs/forecast.yaml --ckpt_path CKPT ... \\
        --trainer.callbacks+=transitnet.tasks.prediction_writer.ForecastParquetWriter \\
        --trainer.callbacks.output_dir OUT

The file ``OUT/predictions.parquet`` (zstd, written atomically) has one row per (window,
horizon); see :func:`transitnet.forecast_table.build_forecast_table` for its columns.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter

from transitnet.datasets.windows import Windows
from transitnet.forecast_table import build_forecast_table
from transitnet.gtfs.artefacts import (
    META_FILE,
    StaticArtefacts,
    load_or_build_artefacts,
    read_artefacts,
)
from transitnet.online_calibration import (
    OnlineCalibrationConfig,
    apply_scales,
    compute_anchor_seconds,
    compute_online_scales,
)
from transitnet.store.parquet import write_parquet_atomic

logger = logging.getLogger(__name__)

#: Parquet schema metadata key describing the run (horizons, quantiles, static version).
PREDICTIONS_KEY = b"transitnet.predictions"


class ForecastParquetWriter(BasePredictionWriter):
    """Write a ``predict`` run's forecasts to ``output_dir/filename`` (one Parquet file).

    Rows are one per (window, horizon), ordered by window then horizon, with the window's
    identity and anchor (``window``, ``feed_id``, ``vehicle_id``, ``trip_id``,
    ``line_key``, ``shape_id``, ``service_date``, ``anchor_time`` UTC,
    ``anchor_dist_m``), ``horizon_s``, ``target_time`` (UTC), per quantile ``pX``
    (``p10``, ``p50``, ``p90``) ``travelled_pX_m``, ``dist_along_pX_m``, ``lat_pX``,
    ``lon_pX`` (on the shape), and the next ``n_stops`` stops downstream (the same on
    each horizon row of a window): ``stops_via`` (``trip``, or ``shape`` for a trip
    absent from the static feed), ``stop{k}_id``, ``stop{k}_sequence``,
    ``stop{k}_ahead_m`` and arrival times ``stop{k}_eta_p10/_p50/_p90`` (UTC; p10 is
    the early bound; null when not reached by the last horizon). ``window`` is the row
    of the DataModule's predict windows, so ``df[df.horizon_s == 300]`` gives one row
    per window. Positions and stops are null where the static feed or the shape is
    unknown, stops also where the shape has no stop pattern. The schema metadata key
    :data:`PREDICTIONS_KEY` holds the horizons, quantiles, static version and how the
    band was calibrated (``band``; JSON).

    Args:
        output_dir: Folder of the Parquet file (created if needed).
        static: Static GTFS (zip, folder, URL) or a cached artefacts folder (holding
            ``artefacts.json``) for positions and stops. Default: the DataModule's
            ``static``, else the only (or newest) ``<store>/static/*/`` cache; without
            any, positions and stops are left null (with a warning).
        n_stops: Next stops per window.
        write_interval: ``epoch`` (Lightning keeps the batch outputs) or ``batch`` (this
            callback keeps them); either way one file is written at the end of the run.
        filename: Name of the Parquet file.
        band: ``online`` (default): the P10/P90 band of each forecast is recalibrated
            from the outcomes of earlier forecasts of the same run resolved before its
            anchor time (trailing hour, :mod:`transitnet.online_calibration`;
            on live data with no outcomes yet, or in the first hour, the checkpoint's
            validation-fitted band is used); ``validation``: always the checkpoint's band.
            The median is the same either way.
    """

    def __init__(
        self,
        output_dir: str,
        static: str | None = None,
        n_stops: int = 3,
        write_interval: str = "epoch",
        filename: str = "predictions.parquet",
        band: str = "online",
    ) -> None:
        if band not in ("online", "validation"):
            raise ValueError(f"band must be 'online' or 'validation', got {band!r}")
        if write_interval not in ("epoch", "batch"):
            raise ValueError(f"write_interval must be 'epoch' or 'batch', got {write_interval!r}")
        if n_stops < 1:
            raise ValueError(f"n_stops must be >= 1, got {n_stops}")
        super().__init__(write_interval)  # type: ignore[arg-type]
        self.output_dir = Path(output_dir)
        self.static = static
        self.n_stops = n_stops
        self.filename = filename
        self.band = band
        self._outputs: list[dict[str, Any]] = []
        self.path: Path | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Refuse a run with nothing to predict before any work is done."""
        super().setup(trainer, pl_module, stage)
        if stage == "predict":
            windows = predict_windows(trainer)
            if len(windows) == 0:
                raise ValueError(
                    "the predict period holds no windows (no matched fixes with enough "
                    "history there): check --data.predict_dates and the store"
                )

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Keep one batch's outputs (``write_interval="batch"``)."""
        self._outputs.append(prediction)

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write the file from the outputs kept by Lightning or by this callback."""
        if self.interval.on_epoch:
            super().on_predict_epoch_end(trainer, pl_module)
        else:
            self._write(trainer, pl_module, self._outputs)
            self._outputs = []

    def write_on_epoch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        """Write every batch's outputs (``write_interval="epoch"``)."""
        self._write(trainer, pl_module, predictions)

    def _write(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Sequence[Any]
    ) -> None:
        windows = predict_windows(trainer)
        index, pred = collect_outputs(outputs)
        horizons = tuple(int(h) for h in getattr(pl_module, "horizons_s", ()))
        quantiles = tuple(float(q) for q in getattr(pl_module, "quantiles", ()))
        check_alignment(windows, index, pred, horizons, quantiles)
        pred, band = self._serve_band(pl_module, windows, index, pred, collect_raw(outputs))
        artefacts = find_artefacts(self.static, getattr(trainer, "datamodule", None))
        meta = windows.meta.iloc[index].reset_index(drop=True)
        table = build_forecast_table(meta, pred, horizons, quantiles, artefacts, self.n_stops)
        table["window"] = index[table["window"].to_numpy()]
        info = {
            "horizons_s": list(horizons),
            "quantiles": list(quantiles),
            "static_version": artefacts.version if artefacts is not None else None,
            "n_windows": len(index),
            "n_stops": self.n_stops,
            "band": band,
        }
        self.path = self.output_dir / self.filename
        arrow = pa.Table.from_pandas(table, preserve_index=False)
        write_parquet_atomic(self.path, arrow, {PREDICTIONS_KEY: json.dumps(info).encode()})
        logger.info("predictions: %d rows (%d windows) written to %s", len(table), len(index),
                    self.path)  # fmt: skip

    def _serve_band(
        self,
        pl_module: pl.LightningModule,
        windows: Windows,
        index: np.ndarray,
        pred: np.ndarray,
        raw: np.ndarray | None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """The forecasts with the band to serve, and how it was calibrated (metadata)."""
        net = getattr(pl_module, "net", None)
        if self.band == "validation" or raw is None or net is None:
            return pred, {"calibration": "validation"}
        cfg = OnlineCalibrationConfig()
        scales = compute_online_scales(
            compute_anchor_seconds(windows.meta["anchor_time"].iloc[index]),
            windows.horizons_s, raw, windows.targets[index], windows.target_mask[index],
            getattr(pl_module, "quantiles", ()), net.calibration.scales.cpu().numpy(), cfg,
        )  # fmt: skip
        online = apply_scales(raw, scales).astype(np.float64)
        return online, {"calibration": "online", **asdict(cfg)}


def predict_windows(trainer: pl.Trainer) -> Windows:
    """The attached DataModule's predict windows.

    Raises:
        ValueError: Without a DataModule holding ``windows["predict"]``.
    """
    dm = getattr(trainer, "datamodule", None)
    windows = getattr(dm, "windows", {}).get("predict") if dm is not None else None
    if not isinstance(windows, Windows):
        raise ValueError(
            "ForecastParquetWriter needs a TransitDataModule with predict windows: give "
            "--data.predict_dates (or --data.test_dates)"
        )
    return windows


def collect_outputs(outputs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``predict_step`` outputs into window positions ``(N,)`` and ``(N, H, Q)``.

    The result is sorted by window position.

    Accepts a flat list of ``{"index", "pred"}`` dicts or a list of such lists (one per
    dataloader).

    Raises:
        ValueError: When there is no output or an output lacks ``index``/``pred``.
    """
    flat = [o for part in outputs for o in (part if isinstance(part, list) else [part])]
    if not flat or not all(isinstance(o, dict) and {"index", "pred"} <= set(o) for o in flat):
        raise ValueError(
            "no forecasts to write: predict_step must return {'index', 'pred'} per batch "
            "(is the model a ForecastingTask?)"
        )
    index = np.concatenate([np.asarray(o["index"].cpu(), dtype=np.int64) for o in flat])
    pred = np.concatenate([np.asarray(o["pred"].float().cpu(), dtype=np.float64) for o in flat])
    order = np.argsort(index, kind="stable")
    return index[order], pred[order]


def collect_raw(outputs: Sequence[Any]) -> np.ndarray | None:
    """Uncalibrated ``raw`` forecasts ``(N, H, Q)`` by window position, if every output has them."""
    flat = [o for part in outputs for o in (part if isinstance(part, list) else [part])]
    if not flat or not all(isinstance(o, dict) and "raw" in o for o in flat):
        return None
    index = np.concatenate([np.asarray(o["index"].cpu(), dtype=np.int64) for o in flat])
    raw = np.concatenate([np.asarray(o["raw"].float().cpu(), dtype=np.float32) for o in flat])
    return raw[np.argsort(index, kind="stable")]


def check_alignment(
    windows: Windows,
    index: np.ndarray,
    pred: np.ndarray,
    horizons: tuple[int, ...],
    quantiles: tuple[float, ...],
) -> None:
    """Refuse forecasts that do not belong to these windows.

    Raises:
        ValueError: On a horizon mismatch between model and windows, repeated or
            out-of-range window positions, or forecasts of the wrong shape.
    """
    if horizons != tuple(int(h) for h in windows.horizons_s):
        raise ValueError(
            f"the checkpoint forecasts horizons {list(horizons)} s but the DataModule's "
            f"windows have {list(windows.horizons_s)}: pass --data.horizons_s {list(horizons)}"
        )
    if pred.shape != (len(index), len(horizons), len(quantiles)):
        raise ValueError(f"forecasts are {pred.shape}, expected ({len(index)}, "
                         f"{len(horizons)}, {len(quantiles)})")  # fmt: skip
    inside = bool(len(index) == 0 or (index.min() >= 0 and index.max() < len(windows)))
    if len(np.unique(index)) != len(index) or not inside:
        raise ValueError("forecast window positions are repeated or outside the predict windows")


def find_artefacts(static: str | None, datamodule: Any) -> StaticArtefacts | None:
    """Static artefacts for positions and stops (see :class:`ForecastParquetWriter`)."""
    store = Path(getattr(datamodule, "store", "."))
    source = static or getattr(datamodule, "static", None)
    if source:
        folder = Path(str(source))
        if folder.is_dir() and (folder / META_FILE).is_file():
            return read_artefacts(folder)
        return load_or_build_artefacts(source, store)
    cached = sorted(store.glob(f"static/*/{META_FILE}"), key=lambda p: p.stat().st_mtime)
    if not cached:
        logger.warning("no static feed given and none cached in %s/static: lat/lon and "
                       "stop ETAs are left null (give --data.static)", store)  # fmt: skip
        return None
    if len(cached) > 1:
        logger.warning("%d cached static versions in %s/static; using the newest, %s",
                       len(cached), store, cached[-1].parent.name)  # fmt: skip
    return read_artefacts(cached[-1].parent)
