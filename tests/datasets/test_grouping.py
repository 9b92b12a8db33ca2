import numpy as np
import pandas as pd
import pytest

from transitnet.datasets.grouping import compute_group_codes, sort_by_group_and_time


def test_group_codes_order_keys_as_the_string_groupby_did() -> None:
    df = pd.DataFrame(
        {
            "feed": pd.Series(["f", "f", "g", None, "f", "f"], dtype="str"),
            "vehicle": pd.Series([10, 9, "?", "a", None, 10], dtype=object),  # mixed types
            "trip": pd.Series(["é", "e", "z", "a", "?", "é"], dtype="string"),
        }
    )
    code = compute_group_codes(df, ("feed", "vehicle", "trip"))
    text = df.astype("string").fillna("?")
    ngroup = text.groupby(list(text.columns), sort=True).ngroup().to_numpy()
    np.testing.assert_array_equal(np.unique(code, return_inverse=True)[1].ravel(), ngroup)
    assert code[0] == code[5] and len(set(code.tolist())) == 5  # "?" and missing read alike
    assert compute_group_codes(df.iloc[:0], ("feed",)).shape == (0,)


@pytest.mark.parametrize(
    ("step", "code_scale", "t_range"),
    [(1.0, 1_000_003, 400), (1.0, 2**40 + 7, 200_000), (0.25, 1, 400), (2.0**53, 1, 4)],
)
def test_sort_by_group_and_time_is_a_stable_lexsort(
    step: float, code_scale: int, t_range: int
) -> None:
    rng = np.random.default_rng(0)
    code = rng.integers(0, 30, 2000) * code_scale  # sparse codes, as mixed-radix ones are
    t = 1.49e9 + rng.integers(0, t_range, 2000) * step  # many ties
    t[:500] = t[0]
    np.testing.assert_array_equal(sort_by_group_and_time(code, t), np.lexsort((t, code)))
    assert len(sort_by_group_and_time(code[:0], t[:0])) == 0
