import numpy as np
import pandas as pd

from transitnet.datasets.features import compute_group_median


def test_group_median_is_pandas_transform_median() -> None:
    rng = np.random.default_rng(0)
    group = rng.integers(0, 40, 3000)
    values = np.round(rng.normal(1000.0, 50.0, 3000), 1)  # repeated values, like shape lengths
    values[rng.random(3000) < 0.2] = np.nan
    values[group == 7] = np.nan  # a group with nothing finite gives NaN
    expected = pd.Series(values).groupby(group).transform("median").to_numpy()
    got = compute_group_median(group, values)
    np.testing.assert_array_equal(got, expected)  # bit-identical, NaN where pandas gives NaN
    assert np.isnan(got[group == 7]).all()


def test_group_median_of_even_and_odd_groups_and_no_values() -> None:
    group = np.array([0, 0, 1, 1, 1, 2])
    values = np.array([1.0, 4.0, 9.0, 2.0, 5.0, np.nan])
    np.testing.assert_array_equal(
        compute_group_median(group, values), [2.5, 2.5, 5.0, 5.0, 5.0, np.nan]
    )
    assert compute_group_median(np.zeros(0, dtype=np.int64), np.zeros(0)).shape == (0,)


def test_group_median_leaves_rows_without_a_group_nan() -> None:
    got = compute_group_median(np.array([-1, 0, 0, -1]), np.array([50.0, 1.0, 3.0, 7.0]))
    np.testing.assert_array_equal(got, [np.nan, 2.0, 2.0, np.nan])
