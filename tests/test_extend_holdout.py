"""Few-trip extensions choose their steps on the new line's last trips (extend_holdout)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from tests.synthetic import train_base_checkpoint
from transitnet.datamodules.transit import TransitDataModule
from transitnet.evaluate import load_datamodule, predict_windows
from transitnet.extend import ExtensionConfig, train_extension
from transitnet.extend_holdout import (
    choose_steps,
    count_trips,
    split_last_trips,
    wants_early_stopping,
)
from transitnet.tasks import ForecastingTask


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], ForecastingTask]:
    ckpt, _ = train_base_checkpoint(tmp_path_factory.mktemp("holdout"))
    return torch.load(ckpt, weights_only=False), ForecastingTask.load_from_checkpoint(ckpt)


def _dm(ckpt: dict[str, Any], dates: list[str]) -> TransitDataModule:
    dm = load_datamodule(ckpt, train_dates=dates, val_dates=None, exclude_lines=None)
    dm.setup("fit")
    return dm


def test_the_last_trips_of_each_line_are_held_out_in_time_order(base) -> None:
    train = _dm(base[0], ["2024-05-06", "2024-05-07"]).windows["train"]
    fit, held = split_last_trips(train, share=0.25)
    assert len(fit) + len(held) == len(train)
    trips = count_trips(train)
    assert count_trips(held) == {k: max(1, round(0.25 * n)) for k, n in trips.items()}
    for line in trips:
        f = fit.meta[fit.meta["line_key"] == line]
        h = held.meta[held.meta["line_key"] == line]
        assert not set(f["trip_id"] + f["service_date"].astype(str)) & set(
            h["trip_id"] + h["service_date"].astype(str)
        )
        # Every held-out trip starts after every trip kept for training.
        assert (
            h.groupby("trip_id")["anchor_time"].min().min()
            > f.groupby("trip_id")["anchor_time"].min().max()
        )


def test_a_line_with_a_single_trip_cannot_be_held_out(base) -> None:
    train = _dm(base[0], ["2024-05-07"]).windows["train"]
    one = train.subset((train.meta["trip_id"] == train.meta["trip_id"].iloc[0]).to_numpy())
    with pytest.raises(ValueError, match="at least 2 trips"):
        split_last_trips(one)


def test_auto_turns_on_below_the_trip_threshold_only(base) -> None:
    train = _dm(base[0], ["2024-05-07"]).windows["train"]
    is_new = (train.meta["line_key"] == "C").to_numpy()
    trips = count_trips(train.subset(is_new))
    n = trips["C"]
    assert n >= 2
    assert wants_early_stopping("auto", n + 1, trips)
    assert not wants_early_stopping("auto", n, trips)
    assert not wants_early_stopping("off", 100, trips)
    assert wants_early_stopping("on", 0, trips)
    one = is_new & (train.meta["trip_id"] == train.meta["trip_id"][is_new].iloc[0]).to_numpy()
    single = count_trips(train.subset(one))
    assert not wants_early_stopping("auto", 100, single)  # one trip: nothing to hold out
    with pytest.raises(ValueError, match="holds out a trip"):
        wants_early_stopping("on", 100, single)
    with pytest.raises(ValueError, match="early_stopping must be one of"):
        wants_early_stopping("sometimes", 10, trips)


def test_choose_steps_takes_the_lowest_held_out_mae_earliest_on_ties() -> None:
    assert choose_steps([(0, 500.0), (5, 480.0), (10, 490.0)]) == 5
    assert choose_steps([(0, 400.0), (5, 480.0)]) == 0
    assert choose_steps([(0, 480.0), (5, 480.0)]) == 0
    with pytest.raises(ValueError, match="no held-out scores"):
        choose_steps([])


def _new_line_forecasts(
    task: ForecastingTask, grown: TransitDataModule, ckpt: dict[str, Any]
) -> np.ndarray:
    """``task``'s forecasts for line C's windows of 2024-05-08 (``grown``: its vocabulary)."""
    later = load_datamodule(ckpt, train_dates=None, val_dates=None, test_dates=["2024-05-08"])
    later.setup("test")
    test = later.windows["test"]
    dm = grown.with_windows({"test": test.subset((test.meta["line_key"] == "C").to_numpy())})
    return predict_windows(task, dm, "test")


@pytest.mark.parametrize("tier", ["row-only", "fork"])
def test_early_stopping_keeps_the_initialisation_when_training_only_hurts(base, tier) -> None:
    ckpt, task = base
    hurt = ExtensionConfig(
        tier=tier, max_steps=8, new_row_lr=1e3, layer_lr=10.0, early_stopping="on"
    )
    dm = _dm(ckpt, ["2024-05-07"])
    grown, report = train_extension(ckpt, task, dm, ["C"], hurt, progress_bar=False)
    choice = report.step_choice
    assert next(s for s, _ in choice["curve"]) == 0 and choice["curve"][-1][0] == 8
    assert choice["first_run_steps"] == 8 and choice["held_trips"] == {"C": 1}
    assert choice["chosen_steps"] == 0 == report.steps
    dm0 = _dm(ckpt, ["2024-05-07"])
    zero, _ = train_extension(ckpt, task, dm0, ["C"], ExtensionConfig(tier="zero-shot"))
    np.testing.assert_array_equal(
        _new_line_forecasts(grown, dm, ckpt), _new_line_forecasts(zero, dm0, ckpt)
    )


def test_early_stopping_trains_every_trip_for_the_chosen_steps(base) -> None:
    ckpt, task = base
    cfg = ExtensionConfig(tier="row-only", max_steps=6, new_row_lr=1e-2, early_stopping="on")
    dm = _dm(ckpt, ["2024-05-07"])
    n_new = int((dm.windows["train"].meta["line_key"] == "C").sum())
    _, report = train_extension(ckpt, task, dm, ["C"], cfg, progress_bar=False)
    choice = report.step_choice
    curve = dict(choice["curve"])
    assert choice["chosen_steps"] == min(curve, key=lambda s: (curve[s], s)) == report.steps
    # The final run trains on every trip of the new line, the held-out one included.
    assert report.train_windows == n_new and choice["held_windows"] < n_new
    assert report.wall_seconds >= choice["first_run_wall_seconds"]
    off, _ = train_extension(ckpt, task, _dm(ckpt, ["2024-05-07"]), ["C"],
                             ExtensionConfig(tier="row-only", max_steps=6, early_stopping="off"),
                             progress_bar=False)  # fmt: skip
    assert off.trainer.global_step == 6
