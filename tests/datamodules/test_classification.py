import numpy as np
import pandas as pd
import pytest

from tests.class_fixtures import ORIGIN, make_positions, make_store, write_store
from transitnet.datamodules.classification import RouteClassDataModule, load_class_datamodule
from transitnet.datasets.class_windows import CLASS_FEATURES


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("cls"))


def _dm(store, **kw):
    args = {
        "train_dates": ["2024-05-06"],
        "val_dates": ["2024-05-07"],
        "test_dates": ["2024-05-08"],
        "min_windows_per_class": 5,
        "batch_size": 16,
        **kw,
    }
    return RouteClassDataModule(str(store), **args)


def test_setup_fits_classes_origin_and_scale_on_training_only(store):
    dm = _dm(store, exclude_classes=["E"])
    dm.setup("fit")
    assert dm.classes == ["A", "B", "C", "D"]
    assert dm.origin == pytest.approx(ORIGIN, abs=0.03)  # the median fix, ~1-2 km away
    assert dm.scale is not None and dm.scale[0].shape == (len(CLASS_FEATURES),)
    val = dm.windows["val"]
    assert "E" in set(val.meta["line_key"])  # held-out lines stay visible in the windows
    ds = dm.dataset("val")
    assert len(ds) == int((val.meta["line_key"] != "E").sum())
    assert ds.labels.min() >= 0 and ds.labels.max() == 3
    batch = next(iter(dm.train_dataloader()))
    assert batch.features.shape[1:] == (16, len(CLASS_FEATURES)) and len(batch) == 16
    assert "test" not in dm.windows
    dm.setup("test")
    assert set(dm.windows["test"].meta["service_date"]) == {"2024-05-08"}


def test_class_choices(store):
    dm = _dm(store, classes=["D", "B"])
    dm.setup("fit")
    assert dm.classes == ["D", "B"]
    dm = _dm(store, max_classes=2)
    dm.setup("fit")
    assert len(dm.classes) == 2
    with pytest.raises(ValueError, match="no training windows"):
        _dm(store, classes=["A", "Z"]).setup("fit")
    with pytest.raises(ValueError, match="enough training windows"):
        _dm(store, min_windows_per_class=10**6).setup("fit")


def test_state_round_trip_and_growth(store):
    dm = _dm(store)
    dm.setup("fit")
    ckpt = {
        "RouteClassDataModule": dm.state_dict(),
        "datamodule_hyper_parameters": dict(dm.hparams),
    }
    again = load_class_datamodule(ckpt, train_dates=None, val_dates=None)
    assert again.classes == dm.classes and again.origin == dm.origin
    np.testing.assert_allclose(again.scale[1], dm.scale[1])
    again.setup("test")  # needs no training data: origin, scale and classes come from the state
    assert len(again.dataset("test")) > 0
    again.add_classes(["F"])
    assert again.classes[-1] == "F" and again.encode(["F", "A", "zz", None]).tolist() == [
        5,
        0,
        -1,
        -1,
    ]
    with pytest.raises(ValueError, match="duplicates"):
        again.add_classes(["A"])
    bad = {**ckpt["RouteClassDataModule"], "features": ["x_km"]}
    with pytest.raises(ValueError, match="features"):
        load_class_datamodule({**ckpt, "RouteClassDataModule": bad})
    with pytest.raises(ValueError, match="no RouteClassDataModule state"):
        load_class_datamodule({})


def test_time_ranges_unlabelled_vehicles_and_predict(tmp_path):
    day = make_positions(day="2024-05-06")
    ghost = make_positions(lines=("A",), day="2024-05-06", trips_per_line=1, seed=5)
    ghost = ghost.assign(vehicle_id="ghost", trip_id=None, route_id=None)
    ghost["vehicle_timestamp"] += pd.Timedelta(hours=2)  # in the validation/predict period
    store = write_store(tmp_path / "s", pd.concat([day, ghost], ignore_index=True))
    dm = RouteClassDataModule(
        str(store),
        train_dates=["2024-05-06T00:00..2024-05-06T08:00"],
        val_dates=["2024-05-06T08:00..2024-05-06T12:00"],
        predict_dates=["2024-05-06T08:00..2024-05-06T12:00"],
        min_windows_per_class=3,
    )
    dm.setup("fit")
    dm.setup("predict")
    train, val = dm.windows["train"].meta, dm.windows["val"].meta
    assert train["anchor_time"].max() < val["start_time"].min()  # no shared fix
    pred = dm.dataset("predict")
    n_ghost = int(dm.windows["predict"].meta["line_key"].isna().sum())
    assert n_ghost > 0 and int((pred.labels == -1).sum()) >= n_ghost  # unassigned kept
    assert len(dm.dataset("val")) == len(val) - int(val["line_key"].isna().sum())


def test_bad_periods_and_empty_store(store, tmp_path):
    with pytest.raises(ValueError, match="after"):
        _dm(store, val_dates=["2024-05-06"]).setup("fit")
    with pytest.raises(ValueError, match="no positions"):
        _dm(tmp_path / "empty").setup("fit")
    with pytest.raises(ValueError, match="origin is fitted on the training period"):
        _dm(store, train_dates=None).setup("validate")
    dm = _dm(store)
    with pytest.raises(RuntimeError, match="no 'test' windows"):
        dm.dataset("test")


def test_constant_training_feature_is_centred_not_blown_up(tmp_path):
    parked = make_positions(day="2024-05-06")
    first = parked.groupby("trip_id")[["latitude", "longitude"]].transform("first")
    parked[["latitude", "longitude"]] = first  # every bus stands still on training day
    store = write_store(tmp_path / "s", pd.concat([parked, make_positions(day="2024-05-07")]))
    dm = _dm(store, test_dates=None)
    dm.setup("fit")
    std = dm.scale[1]
    for name in ("dx_m", "dy_m", "speed_mps", "heading_sin", "has_heading"):
        assert std[CLASS_FEATURES.index(name)] == 1.0  # centred only
    moving = dm.dataset("val").features
    assert float(moving.abs().max()) < 1e3  # not divided by a ~0 std
