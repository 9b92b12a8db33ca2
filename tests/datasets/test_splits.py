import numpy as np
import pandas as pd
import pytest

from tests.datasets.test_windows import _matched
from transitnet.datasets.splits import expand_dates, select_dates, select_time_range
from transitnet.datasets.windows import WindowConfig, build_windows


def test_expand_dates_ranges_and_errors() -> None:
    assert expand_dates(["2017-03-16", "2016-11-24..2016-11-26"]) == [
        "2017-03-16",
        "2016-11-24",
        "2016-11-25",
        "2016-11-26",
    ]
    assert expand_dates(None) == []
    with pytest.raises(ValueError, match="ends before"):
        expand_dates("2017-03-21..2017-03-16")
    with pytest.raises(ValueError, match="expected a date"):
        expand_dates("16/03/2017")


def test_time_split_masks_targets_past_the_boundary() -> None:
    w = build_windows(_matched(20), WindowConfig(past_fixes=2, horizons_s=(60, 300)))
    end = pd.Timestamp("2024-05-06 08:05:00", tz="UTC")
    train = select_time_range(w, None, end)
    assert (train.meta["anchor_time"] < end).all()
    anchor = train.meta["anchor_time"]
    reaches = (anchor + pd.Timedelta(seconds=300)) >= end
    assert not train.target_mask[reaches.to_numpy(), 1].any()
    test = select_time_range(w, end, None)
    assert len(train) + len(test) == len(w)


def test_select_dates() -> None:
    w = build_windows(_matched(4), WindowConfig(horizons_s=(60,)))
    assert len(select_dates(w, ["2024-05-06"])) == 4
    assert len(select_dates(w, ["2024-05-07"])) == 0
    assert np.all(select_dates(w, ["2024-05-06"]).lengths == w.lengths)
