import json

import numpy as np
import pandas as pd
import pytest
import torch

from transitnet.datasets.vocab import UNKNOWN_KEY, LineVocabulary, build_row_map

AUSTIN = "austin-capmetro/vehicle_positions"


def test_rows_are_appended_in_order_and_never_move():
    vocab = LineVocabulary(["b", "a"])
    assert vocab.keys == (UNKNOWN_KEY, "b", "a")
    assert vocab.add(["c", "a", "c", "d"]) == [3, 2, 3, 4]
    assert vocab.keys == (UNKNOWN_KEY, "b", "a", "c", "d")
    assert len(vocab) == 5 and vocab.line_keys == ("b", "a", "c", "d")
    assert "a" in vocab and UNKNOWN_KEY not in vocab and 3 not in vocab
    assert vocab.row("d") == 4
    with pytest.raises(KeyError, match="zzz"):
        vocab.row("zzz")


def test_encode_sends_unseen_null_and_empty_keys_to_row_zero():
    vocab = LineVocabulary(["a", "b"])
    got = vocab.encode(["b", "unseen", None, "", "a", np.nan])
    assert got.dtype == np.int64 and got.tolist() == [2, 0, 0, 0, 1, 0]
    series = pd.Series(["a", None, "b"], dtype="str")
    assert vocab.encode(series).tolist() == [1, 0, 2]
    assert vocab.encode(np.array(["b", "a"])).tolist() == [2, 1]
    tensor = vocab.encode_tensor(["a", "x"])
    assert tensor.dtype == torch.long and tensor.tolist() == [1, 0]
    assert vocab.encode([]).shape == (0,)


def test_non_string_keys_raise_instead_of_silently_going_unknown():
    vocab = LineVocabulary(["801"])
    with pytest.raises(TypeError, match="dtype=str"):
        vocab.encode(pd.Series([801, 1]))
    with pytest.raises(TypeError, match="single string"):
        vocab.encode("801")
    with pytest.raises(TypeError, match="must be str"):
        vocab.add([801])
    with pytest.raises(TypeError, match="iterable"):
        vocab.add("801")
    for bad in ("", UNKNOWN_KEY):
        with pytest.raises(ValueError, match="cannot be a line key"):
            vocab.add([bad])
    assert vocab.keys == (UNKNOWN_KEY, "801")  # nothing half-added


def test_state_dict_is_json_and_round_trips():
    vocab = LineVocabulary(["x", "y", "z"])
    state = json.loads(json.dumps(vocab.state_dict()))
    back = LineVocabulary.from_state_dict(state)
    assert back.keys == vocab.keys
    assert back.encode(["z", "q"]).tolist() == [3, 0]


@pytest.mark.parametrize(
    "state",
    [
        {"version": 99, "unknown_key": UNKNOWN_KEY, "line_keys": []},
        {"version": 1, "unknown_key": "?", "line_keys": []},
        {"version": 1, "unknown_key": UNKNOWN_KEY, "line_keys": ["a", "a"]},
        {"version": 1, "unknown_key": UNKNOWN_KEY, "line_keys": "ab"},
        {"version": 1, "unknown_key": UNKNOWN_KEY},
        ["not", "a", "mapping"],
    ],
)
def test_malformed_state_is_refused_and_leaves_the_vocabulary_intact(state):
    vocab = LineVocabulary(["a"])
    with pytest.raises((ValueError, TypeError)):
        vocab.load_state_dict(state)
    assert vocab.keys == (UNKNOWN_KEY, "a")


def test_remap_and_row_map_refuse_truncation_and_reordering():
    old = LineVocabulary(["a", "b"])
    new = LineVocabulary(["a", "b", "c"])
    assert new.remap_from(old).tolist() == [0, 1, 2, -1]
    with pytest.raises(ValueError, match="truncate"):
        old.remap_from(new)
    assert old.remap_from(new, allow_drop=True).tolist() == [0, 1, 2]
    shuffled = LineVocabulary(["b", "a"])
    with pytest.raises(ValueError, match="re-order"):
        shuffled.remap_from(old)
    assert shuffled.remap_from(old, allow_reorder=True).tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match="duplicates"):
        build_row_map(["a", "a"], ["a"])


@pytest.mark.real_data
def test_real_austin_lines_grow_between_service_periods(shared_data):
    """Capital Metro ran 21 routes in March 2017 that it did not run on 2016-11-24."""
    read = {"dtype": {"route_id": str}, "usecols": ["route_id"]}
    before = pd.read_csv(shared_data / AUSTIN / "2016-11-24.csv", **read)["route_id"]
    after = pd.read_csv(shared_data / AUSTIN / "2017-03-16.csv", **read)["route_id"]
    vocab = LineVocabulary(before.dropna().drop_duplicates())
    old_keys = vocab.keys

    rows = vocab.encode(after)
    unseen = ~after.isin(set(vocab.line_keys))
    assert unseen.sum() > 0 and (rows[unseen.to_numpy()] == 0).all()
    assert (rows[~unseen.to_numpy()] > 0).all()

    new_lines = vocab.missing(after)
    assert new_lines == list(after[unseen].dropna().drop_duplicates())
    assert len(new_lines) == len(set(after.dropna()) - set(before.dropna())) == 21
    added = vocab.add(new_lines)
    assert added == list(range(len(old_keys), len(old_keys) + 21))
    assert vocab.keys[: len(old_keys)] == old_keys
    assert (vocab.encode(after) > 0).sum() == after.notna().sum()

    old = LineVocabulary.from_state_dict(
        json.loads(
            json.dumps({"version": 1, "unknown_key": UNKNOWN_KEY, "line_keys": list(old_keys[1:])})
        )
    )
    row_map = vocab.remap_from(old)
    assert row_map[: len(old_keys)].tolist() == list(range(len(old_keys)))
    assert (row_map[len(old_keys) :] == -1).all()

    with pytest.raises(TypeError, match="dtype=str"):
        vocab.encode(pd.read_csv(shared_data / AUSTIN / "2017-03-16.csv")["route_id"])
