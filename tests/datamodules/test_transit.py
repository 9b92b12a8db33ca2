"""TransitDataModule with a timetable file: schedule features, hparams, old checkpoints."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from tests.synthetic import fit_checkpoint, make_matched, write_matched_store
from transitnet.datamodules import TransitDataModule
from transitnet.datasets.schedule import SCHEDULE_FEATURES
from transitnet.datasets.windows import CONTEXT_FEATURES
from transitnet.evaluate import load_datamodule
from transitnet.gtfs.timetable import write_timetable
from transitnet.tasks import ForecastingTask
from transitnet.tasks.forecasting import CKPT_KEY

DAYS = ("2024-05-06", "2024-05-07", "2024-05-08")


def _timetable_file(tmp_path: Path) -> Path:
    """Trips t0 (line A, shape sA) and t1 (line B, sB) at 5 m/s from their start (UTC)."""
    rows = []
    for v, shape in ((0, "sA"), (1, "sB")):
        start = 7 * 3600.0 + 17 * 60.0 * v
        for i, d in enumerate(np.arange(0.0, 12001.0, 1000.0)):
            rows.append((f"t{v}", i + 1, i, f"st{i}", start + d / 5.0, start + d / 5.0, d, shape))
    columns = ["trip_id", "stop_sequence", "stop_index", "stop_id", "arrival_s", "departure_s"]
    frame = pd.DataFrame(rows, columns=[*columns, "dist_m", "shape_id"])
    return write_timetable(frame, tmp_path / "timetable.parquet")


def _dm(tmp_path: Path, **kw: object) -> TransitDataModule:
    matched = pd.concat([make_matched(day=d, seed=i) for i, d in enumerate(DAYS)])
    store = write_matched_store(tmp_path / "store", matched)
    return TransitDataModule(
        str(store),
        train_dates=[DAYS[0]],
        val_dates=[DAYS[1]],
        test_dates=[DAYS[2]],
        horizons_s=[60, 120],
        past_fixes=4,
        batch_size=64,
        **kw,  # type: ignore[arg-type]
    )


def _flag(windows) -> np.ndarray:  # type: ignore[no-untyped-def]
    return windows.context[:, CONTEXT_FEATURES.index("has_schedule")]


def test_timetable_file_feeds_the_schedule_features(tmp_path: Path) -> None:
    dm = _dm(tmp_path, timetable=str(_timetable_file(tmp_path)))
    dm.setup("fit")
    for split in ("train", "val"):
        w = dm.windows[split]
        trips = w.meta["trip_id"].to_numpy()
        flag = _flag(w)
        assert (flag[np.isin(trips, ["t0", "t1"])] == 1).all()
        assert (flag[~np.isin(trips, ["t0", "t1"])] == 0).all()
        ahead = w.context[:, CONTEXT_FEATURES.index("sched_ahead_60s_m")]
        assert ahead[flag == 1].max() == pytest.approx(300.0, abs=0.1)  # 5 m/s for 60 s
        assert (ahead[flag == 0] == 0).all()
    assert dm.hparams["timetable"].endswith("timetable.parquet")


def test_without_a_timetable_or_static_every_window_has_flag_0(tmp_path: Path) -> None:
    dm = _dm(tmp_path)
    dm.setup("fit")
    assert (_flag(dm.windows["train"]) == 0).all()


def test_a_missing_timetable_file_is_a_clear_error(tmp_path: Path) -> None:
    dm = _dm(tmp_path, timetable=str(tmp_path / "nope.parquet"))
    with pytest.raises(FileNotFoundError, match=r"nope\.parquet does not exist"):
        dm.setup("fit")


def _fit(tmp_path: Path, dm: TransitDataModule) -> Path:
    pl.seed_everything(0)
    return fit_checkpoint(ForecastingTask(hidden_dim=8, line_dim=4), dm, tmp_path)


def test_checkpoint_rebuilds_the_timetable_for_evaluation(tmp_path: Path) -> None:
    path = _timetable_file(tmp_path)
    ckpt = _fit(tmp_path, _dm(tmp_path, timetable=str(path)))
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert saved["datamodule_hyper_parameters"]["timetable"] == str(path)
    dm = load_datamodule(saved)
    dm.setup("test")
    trips = dm.windows["test"].meta["trip_id"].to_numpy()
    assert (_flag(dm.windows["test"])[np.isin(trips, ["t0", "t1"])] == 1).all()


def test_a_checkpoint_with_fewer_context_features_fails_clearly(tmp_path: Path) -> None:
    ckpt = _fit(tmp_path, _dm(tmp_path))
    old = torch.load(ckpt, map_location="cpu", weights_only=False)
    n_old = len(CONTEXT_FEATURES) - len(SCHEDULE_FEATURES)  # as before the schedule features
    old[CKPT_KEY]["n_context"] = n_old
    scale = old["TransitDataModule"]["context_scale"]
    old["TransitDataModule"]["context_scale"] = [a[:n_old] for a in scale]
    torch.save(old, tmp_path / "old.ckpt")
    with pytest.raises(ValueError, match=rf"takes {n_old} context features.*retrain"):
        ForecastingTask.load_from_checkpoint(tmp_path / "old.ckpt", map_location="cpu")
    with pytest.raises(ValueError, match=rf"scaled {n_old} context features.*retrain"):
        load_datamodule(old)
