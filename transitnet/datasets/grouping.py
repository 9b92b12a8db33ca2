"""Grouping and ordering rows by text keys and time, with integer sorts.

Used on every feed poll (serving) and on every training day: a multi-column string
``groupby`` and a float ``lexsort`` cost more than the rest of the feature pipeline, so
keys become integer codes (one Arrow dictionary encoding per column) and rows are
ordered by one integer sort where the values allow it, with the same result.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["compute_group_codes", "sort_by_group_and_time"]


def sort_by_group_and_time(code: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Positions sorting rows by ``code`` then ``t``, stably (ties keep their input order).

    Equal to ``np.lexsort((t, code))``. With whole-second times (every GTFS-rt feed) and
    non-negative codes it is a least-significant-digit radix sort over 16-bit digits
    (numpy sorts 16-bit keys by counting): a few linear passes instead of a comparison sort.
    """
    if not len(t) or code.min() < 0 or not np.isfinite(t).all() or (t != np.floor(t)).any():
        return np.lexsort((t, code))
    if float(np.abs(t).max()) >= 2.0**52:  # differences of such times may not be exact
        return np.lexsort((t, code))
    order = np.arange(len(t))
    for key in ((t - t.min()).astype(np.int64), code.astype(np.int64, copy=False)):
        for shift in range(0, max(int(key.max()).bit_length(), 1), 16):
            digit = ((key[order] >> shift) & 0xFFFF).astype(np.uint16)
            order = order[np.argsort(digit, kind="stable")]
    return order


def compute_group_codes(df: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    """(N,) int64 code of each row's key (``columns`` compared as text, missing as ``?``).

    Codes are equal for equal keys and ordered as the keys (sorted by column, then as
    text), as ``groupby(columns, sort=True).ngroup()`` but not necessarily consecutive;
    from one dictionary encoding per column instead of a multi-column string groupby.

    Input columns: ``columns`` (any dtype; compared as strings).
    """
    code, size = np.zeros(len(df), dtype=np.int64), 1
    for column in columns:
        codes, n_values = _rank_text(df[column])
        if size * n_values >= 2**62:  # keep the mixed-radix code inside int64
            _, code = np.unique(code, return_inverse=True)
            size = int(code.max()) + 1 if len(code) else 1
        code = code * n_values + codes
        size *= n_values
    return code


def _rank_text(values: pd.Series) -> tuple[np.ndarray, int]:
    """(N,) int64 rank of each value among the sorted distinct values as text, and their count.

    Missing values read ``?``. Sorted by UTF-8 bytes (Arrow), which is code-point order,
    i.e. Python's string order.
    """
    if not len(values):
        return np.zeros(0, dtype=np.int64), 1
    text = pa.chunked_array([pa.array(values.astype("string").fillna("?"), type=pa.large_string())])
    encoded = pc.dictionary_encode(text).combine_chunks()
    rank = np.empty(len(encoded.dictionary), dtype=np.int64)
    rank[pc.array_sort_indices(encoded.dictionary).to_numpy()] = np.arange(len(rank))
    indices = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return rank[indices], len(rank)
