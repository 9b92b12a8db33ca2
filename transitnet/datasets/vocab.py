"""The line vocabulary: stable line key → embedding row, append-only.

Row 0 is reserved for unknown lines, so encoding never fails on a line the model has
not seen: such a line goes to row 0 (the "unknown" row, trained by line-id dropout).
New lines are appended in the order they are added; existing rows never move, so a
trained embedding table stays aligned with the vocabulary as it grows.

The vocabulary is stored as plain JSON (:meth:`LineVocabulary.state_dict`), which is
what a LightningDataModule's ``state_dict`` saves into the checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

logger = logging.getLogger(__name__)

#: The key of row 0. It cannot be added as a real line key.
UNKNOWN_KEY = "<unknown>"
#: The row every unseen or missing line key encodes to.
UNKNOWN_ROW = 0
_STATE_VERSION = 1


def build_row_map(
    old_keys: Sequence[str],
    new_keys: Sequence[str],
    *,
    allow_drop: bool = False,
    allow_reorder: bool = False,
) -> torch.Tensor:
    """Map each new row to the old row holding the same key.

    Args:
        old_keys: Keys of the old rows, in row order (unique).
        new_keys: Keys of the new rows, in row order (unique).
        allow_drop: Allow old keys that are absent from ``new_keys`` (their rows are
            dropped). Off by default: a checkpoint is never silently truncated.
        allow_reorder: Allow an old key to change its row. Off by default: a vocabulary
            only appends, so a moved key signals a vocabulary rebuilt by mistake.

    Returns:
        LongTensor of shape ``(len(new_keys),)``: the old row of each new row, or -1 for
        a key absent from ``old_keys``.

    Raises:
        ValueError: Duplicate keys, a dropped old key or a moved old key (unless allowed).
    """
    old_pos = _index_unique(old_keys, "old keys")
    new_pos = _index_unique(new_keys, "new keys")
    dropped = [k for k in old_keys if k not in new_pos]
    if dropped and not allow_drop:
        raise ValueError(
            f"{len(dropped)} old key(s) are missing from the new keys (first: {dropped[:5]}); "
            "refusing to truncate. Pass allow_drop=True to drop them deliberately."
        )
    moved = [k for k in old_keys if k in new_pos and new_pos[k] != old_pos[k]]
    if moved and not allow_reorder:
        raise ValueError(
            f"{len(moved)} old key(s) changed row (first: {moved[:5]}); refusing to re-order. "
            "Grow by appending keys, or pass allow_reorder=True to move rows by key."
        )
    return torch.tensor([old_pos.get(k, -1) for k in new_keys], dtype=torch.long)


def _index_unique(keys: Sequence[str], what: str) -> dict[str, int]:
    """Return ``{key: position}``, raising ValueError on duplicates."""
    pos = {k: i for i, k in enumerate(keys)}
    if len(pos) != len(keys):
        dupes = sorted({k for k in keys if list(keys).count(k) > 1})
        raise ValueError(f"{what} hold duplicates: {dupes[:5]}")
    return pos


class LineVocabulary:
    """Stable line key → embedding row; row 0 is the unknown line.

    Args:
        line_keys: Initial line keys, appended in order (duplicates collapse).

    Example:
        >>> vocab = LineVocabulary(["austin:801", "austin:1"])
        >>> vocab.encode(["austin:1", "austin:999"]).tolist()
        [2, 0]
    """

    def __init__(self, line_keys: Iterable[str] = ()) -> None:
        self._keys: list[str] = [UNKNOWN_KEY]
        self._rows: dict[str, int] = {UNKNOWN_KEY: UNKNOWN_ROW}
        self._pd_index: pd.Index | None = None
        self.add(line_keys)

    @property
    def keys(self) -> tuple[str, ...]:
        """All keys in row order; ``keys[0]`` is :data:`UNKNOWN_KEY`."""
        return tuple(self._keys)

    @property
    def line_keys(self) -> tuple[str, ...]:
        """The real line keys (rows 1…), in row order."""
        return tuple(self._keys[1:])

    def __len__(self) -> int:
        """Number of rows, the unknown row included (the embedding size needed)."""
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key != UNKNOWN_KEY and key in self._rows

    def __repr__(self) -> str:
        return f"LineVocabulary({len(self) - 1} lines + unknown)"

    def row(self, key: str) -> int:
        """Return the row of one known line key; raise KeyError for an unknown one."""
        if key not in self:
            raise KeyError(f"line key {key!r} is not in the vocabulary")
        return self._rows[key]

    def add(self, line_keys: Iterable[str]) -> list[int]:
        """Append new line keys in order; keys already present keep their row.

        Args:
            line_keys: Non-empty strings other than :data:`UNKNOWN_KEY`.

        Returns:
            The row of each given key, in the given order.

        Raises:
            TypeError: A key is not a string (or a single string was passed).
            ValueError: A key is empty or equals :data:`UNKNOWN_KEY`.
        """
        keys = _check_key_list(line_keys)
        rows = []
        for key in keys:
            if key not in self._rows:
                self._rows[key] = len(self._keys)
                self._keys.append(key)
                self._pd_index = None
            rows.append(self._rows[key])
        return rows

    def missing(self, line_keys: Iterable[str | None]) -> list[str]:
        """Return the distinct non-null keys absent from the vocabulary, in first-seen order.

        This is what ``extend-lines --new-lines auto`` adds.
        """
        values = _as_key_index(line_keys)
        absent = values[self._index().get_indexer(values) < 0].dropna().unique()
        return [str(k) for k in absent if str(k) != ""]

    def encode(self, line_keys: Iterable[str | None]) -> np.ndarray:
        """Encode line keys to rows; unseen, null or empty keys give row 0 (never raise).

        Args:
            line_keys: A list, array, pandas Series or Index of string keys (nulls allowed).

        Returns:
            int64 array of rows, same length as ``line_keys``.

        Raises:
            TypeError: The keys are not strings, e.g. a ``route_id`` column that pandas
                read as integers (read it with ``dtype=str``). Encoding such keys would
                silently send every line to the unknown row.
        """
        values = _as_key_index(line_keys)
        rows = self._index().get_indexer(values)
        n_unknown = int((rows < 0).sum())
        if n_unknown:
            logger.debug("%d of %d line keys are unknown → row 0", n_unknown, len(rows))
        return np.where(rows < 0, UNKNOWN_ROW, rows).astype(np.int64)

    def encode_tensor(self, line_keys: Iterable[str | None]) -> torch.Tensor:
        """Like :meth:`encode`, returning a LongTensor."""
        return torch.from_numpy(self.encode(line_keys))

    def remap_from(
        self, old: LineVocabulary, *, allow_drop: bool = False, allow_reorder: bool = False
    ) -> torch.Tensor:
        """Map each row of this vocabulary to the row of the same key in ``old``.

        Returns:
            LongTensor ``(len(self),)``: old row per row, -1 for lines ``old`` lacks.

        Raises:
            ValueError: see :func:`build_row_map`.
        """
        return build_row_map(
            old.keys, self.keys, allow_drop=allow_drop, allow_reorder=allow_reorder
        )

    def state_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable state: ``{"version", "unknown_key", "line_keys"}``."""
        return {
            "version": _STATE_VERSION,
            "unknown_key": UNKNOWN_KEY,
            "line_keys": list(self._keys[1:]),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the contents with a state from :meth:`state_dict`.

        Raises:
            ValueError: The state is malformed, from another version, or holds duplicates.
        """
        if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION:
            raise ValueError(f"not a LineVocabulary state (version {_STATE_VERSION}): {state!r}")
        if state.get("unknown_key") != UNKNOWN_KEY:
            raise ValueError(f"state has unknown_key {state.get('unknown_key')!r}")
        keys = _check_key_list(state.get("line_keys", None))
        _index_unique(keys, "stored line keys")
        self._keys = [UNKNOWN_KEY, *keys]
        self._rows = {k: i for i, k in enumerate(self._keys)}
        self._pd_index = None

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> LineVocabulary:
        """Build a vocabulary from :meth:`state_dict` output."""
        vocab = cls()
        vocab.load_state_dict(state)
        return vocab

    def _index(self) -> pd.Index:
        if self._pd_index is None:
            self._pd_index = pd.Index(self._keys, dtype=object)
        return self._pd_index


def _check_key_list(line_keys: object) -> list[str]:
    """Return the keys as a list of valid line keys, raising on anything else."""
    if isinstance(line_keys, str | bytes) or not isinstance(line_keys, Iterable):
        raise TypeError(f"expected an iterable of line keys, got {type(line_keys).__name__}")
    keys = list(line_keys)
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"line keys must be str, got {type(key).__name__} ({key!r})")
        if key == "" or key == UNKNOWN_KEY:
            raise ValueError(f"{key!r} cannot be a line key (empty or reserved)")
    return keys


def _as_key_index(line_keys: Iterable[str | None]) -> pd.Index:
    """Return the keys as an object Index, checking they are strings (nulls allowed)."""
    if isinstance(line_keys, str | bytes):
        raise TypeError("expected an iterable of line keys, got a single string")
    source = (
        line_keys if isinstance(line_keys, pd.Series | pd.Index | np.ndarray) else list(line_keys)
    )
    values = pd.Index(source, dtype=object)
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind not in ("string", "empty"):
        raise TypeError(
            f"line keys must be strings, got {kind} values (e.g. a route_id column read as "
            "numbers: read it with dtype=str)"
        )
    return values
