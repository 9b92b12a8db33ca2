"""A growable line-embedding table, stored as a split table.

``requires_grad`` applies to a whole tensor, so single rows cannot be frozen with it, and
AdamW's decoupled weight decay and momentum still move rows that merely get no gradient.
The table is therefore two parameters concatenated at lookup: ``base`` (rows
``[0, n_base)``, freezable) and ``new`` (the rows after it, trainable). For row-only
training freeze the base and give the optimizer ``new`` alone: the old rows are then in
no optimizer group at all and stay bit-identical.

In a ``state_dict`` the two parts are saved as one tensor (``…table.rows``), so a
checkpoint does not depend on where the split was; row-wise growth of a checkpoint by
line key is :func:`transitnet.models.migrate.migrate_rows`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from transitnet.models.migrate import InitSpec, compute_init_rows, migrate_rows

logger = logging.getLogger(__name__)


class SplitRows(nn.Module):
    """A row table held as a ``base`` and a ``new`` parameter, concatenated on read.

    Args:
        rows: Initial rows, shape ``(n_rows, *trailing)``.
        n_base: Rows that go to ``base`` (the rest go to ``new``); default all.
    """

    def __init__(self, rows: torch.Tensor, n_base: int | None = None) -> None:
        super().__init__()
        n_base = rows.shape[0] if n_base is None else n_base
        if not 0 <= n_base <= rows.shape[0]:
            raise ValueError(f"n_base={n_base} outside [0, {rows.shape[0]}]")
        self.base = nn.Parameter(rows[:n_base].detach().clone())
        self.new = nn.Parameter(rows[n_base:].detach().clone())

    @property
    def n_rows(self) -> int:
        """Total number of rows (base + new)."""
        return self.base.shape[0] + self.new.shape[0]

    @property
    def n_base(self) -> int:
        """Number of rows in the base part."""
        return int(self.base.shape[0])

    def full(self) -> torch.Tensor:
        """Return all rows, ``(n_rows, *trailing)``, differentiable w.r.t. both parts."""
        if self.new.shape[0] == 0:
            return self.base
        return torch.cat([self.base, self.new], dim=0)

    def split_at(self, n_base: int) -> None:
        """Re-partition so that ``base`` holds rows ``[0, n_base)``; values are unchanged.

        Creates new Parameter objects: build optimizers afterwards. ``base`` keeps its
        ``requires_grad`` flag; ``new`` is trainable.
        """
        if not 0 <= n_base <= self.n_rows:
            raise ValueError(f"n_base={n_base} outside [0, {self.n_rows}]")
        trainable = self.base.requires_grad
        rows = self.full().detach()
        self.base = nn.Parameter(rows[:n_base].clone(), requires_grad=trainable)
        self.new = nn.Parameter(rows[n_base:].clone())

    def set_rows(self, start: int, rows: torch.Tensor) -> None:
        """Append or overwrite rows from ``start`` on, in the ``new`` part only.

        Rows before ``start`` are kept; rows from ``start`` are replaced by ``rows`` and the
        table gets exactly ``start + len(rows)`` rows. Creates a new ``new`` Parameter.
        """
        if start < self.n_base:
            raise ValueError(f"cannot overwrite base rows (start={start} < n_base={self.n_base})")
        kept = self.new.detach()[: start - self.n_base]
        fresh = rows.detach().to(dtype=self.base.dtype, device=self.base.device)
        self.new = nn.Parameter(torch.cat([kept, fresh], dim=0).clone())

    def _save_to_state_dict(
        self, destination: dict[str, Any], prefix: str, keep_vars: bool
    ) -> None:
        rows = self.full()
        destination[prefix + "rows"] = rows if keep_vars else rows.detach()

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        key = prefix + "rows"
        own = [k for k in state_dict if k.startswith(prefix) and "." not in k[len(prefix) :]]
        unexpected_keys.extend(k for k in own if k != key)
        if key not in state_dict:
            missing_keys.append(key)
            return
        rows = state_dict[key]
        expected = (self.n_rows, *self.base.shape[1:])
        if tuple(rows.shape) != expected:
            error_msgs.append(
                f"size mismatch for {key}: checkpoint has shape {tuple(rows.shape)}, the model "
                f"{expected}. Grow the checkpoint by key (transitnet.models.migrate.migrate_rows)."
            )
            return
        with torch.no_grad():
            self.base.copy_(rows[: self.n_base])
            self.new.copy_(rows[self.n_base :])


class LineEmbedding(nn.Module):
    """Line key row → vector, growable without touching the trained rows.

    Row 0 is the unknown line. Rows ``[num_lines, capacity)`` are spare padding: they
    are always initialised but never looked up (an id there raises IndexError).

    Args:
        num_lines: Rows in use, the unknown row included (``len(vocabulary)``).
        dim: Embedding size.
        pad_to_multiple_of: Round the capacity up to a multiple of this.
        num_base: Rows in the freezable base part; default all rows in use.
        init_std: Std of the initial N(0, std²) rows.
        generator: RNG for the initial rows.
    """

    row_count: torch.Tensor

    def __init__(
        self,
        num_lines: int,
        dim: int,
        *,
        pad_to_multiple_of: int | None = None,
        num_base: int | None = None,
        init_std: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if num_lines < 1 or dim < 1:
            raise ValueError(f"need num_lines ≥ 1 and dim ≥ 1, got {num_lines}, {dim}")
        capacity = _round_up(num_lines, pad_to_multiple_of)
        rows = torch.randn(capacity, dim, generator=generator) * init_std
        self.table = SplitRows(rows, num_lines if num_base is None else num_base)
        if self.table.n_base > num_lines:
            raise ValueError(f"num_base={num_base} exceeds num_lines={num_lines}")
        self.register_buffer("row_count", torch.tensor(num_lines, dtype=torch.long))

    @property
    def num_lines(self) -> int:
        """Rows in use (valid ids are ``[0, num_lines)``)."""
        return int(self.row_count)

    @property
    def capacity(self) -> int:
        """Rows allocated, spare padding included."""
        return self.table.n_rows

    @property
    def dim(self) -> int:
        """Embedding size."""
        return int(self.table.base.shape[1])

    @property
    def weight(self) -> torch.Tensor:
        """The rows in use, ``(num_lines, dim)``."""
        return self.table.full()[: self.num_lines]

    def forward(self, line_ids: torch.Tensor) -> torch.Tensor:
        """Look up rows.

        Args:
            line_ids: Integer tensor of any shape ``S`` with values in ``[0, num_lines)``.

        Returns:
            Tensor ``(*S, dim)``.

        Raises:
            IndexError: An id outside ``[0, num_lines)`` (e.g. a vocabulary larger than the
                table: grow it with :meth:`resize`).
        """
        if line_ids.dtype.is_floating_point or line_ids.dtype == torch.bool:
            raise TypeError(f"line ids must be integers, got {line_ids.dtype}")
        if line_ids.numel() and (line_ids.min() < 0 or line_ids.max() >= self.num_lines):
            raise IndexError(
                f"line ids span [{int(line_ids.min())}, {int(line_ids.max())}] but the table "
                f"has {self.num_lines} rows in use; resize it to the vocabulary first"
            )
        return nn.functional.embedding(line_ids, self.table.full())

    def resize(
        self,
        new_num_lines: int,
        *,
        init: InitSpec = "unknown",
        pad_to_multiple_of: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        """Grow to ``new_num_lines`` rows in use; old rows are untouched (same ``base``).

        New rows and every spare padded row are initialised by ``init`` from the rows in
        use before growth (see :func:`transitnet.models.migrate.compute_init_rows`).
        ``unknown`` copies row 0: use it when the unknown row was trained with line-id
        dropout, else ``mean``. The new rows land in the ``new`` part (a new Parameter:
        build the optimizer afterwards).

        Raises:
            ValueError: ``new_num_lines`` below ``num_lines`` (never truncates) or a bad init.
        """
        old = self.num_lines
        if new_num_lines < old:
            raise ValueError(f"refusing to shrink the table from {old} to {new_num_lines} rows")
        capacity = max(_round_up(new_num_lines, pad_to_multiple_of), self.capacity)
        if new_num_lines == old and capacity == self.capacity:
            return
        with torch.no_grad():
            fresh = compute_init_rows(self.weight.detach(), capacity - old, init, generator)
        self.table.set_rows(old, fresh)
        self.row_count.fill_(new_num_lines)
        logger.info(
            "line embedding: %d → %d rows (capacity %d, init %s)",
            old,
            new_num_lines,
            capacity,
            init if isinstance(init, str) else "callable",
        )

    def freeze_old(self) -> None:
        """Exclude the base rows from gradients; optimize :meth:`new_parameters` only."""
        self.table.base.requires_grad_(False)

    def merge(self) -> None:
        """Fold the trained new rows into the base (after training); spare rows stay new."""
        self.table.split_at(self.num_lines)

    def new_parameters(self) -> list[nn.Parameter]:
        """The parameter holding the new (and spare) rows, for the optimizer."""
        return [self.table.new]

    def migrate_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        old_keys: Sequence[str],
        new_keys: Sequence[str],
        *,
        allow_drop: bool = False,
        allow_reorder: bool = False,
    ) -> list[str]:
        """Rewrite a checkpoint's entries under ``prefix`` from ``old_keys`` to this table.

        Call from ``on_load_checkpoint`` with the saved and the current vocabulary keys.
        Old lines keep their rows; lines the checkpoint lacks (and spare rows) take this
        table's current rows, as initialised by :meth:`resize`.

        Returns:
            The state-dict keys rewritten.

        Raises:
            ValueError: Keys that do not match the row counts, truncation or re-ordering.
        """
        rows_key, count_key = prefix + "table.rows", prefix + "row_count"
        if len(new_keys) != self.num_lines or int(state_dict[count_key]) != len(old_keys):
            raise ValueError(
                f"{len(old_keys)} old / {len(new_keys)} new keys for a checkpoint "
                f"with {int(state_dict[count_key])} and a table with {self.num_lines} rows"
            )
        state_dict[rows_key] = migrate_rows(
            state_dict[rows_key],
            old_keys,
            new_keys,
            self.table.full(),
            allow_drop=allow_drop,
            allow_reorder=allow_reorder,
        )
        state_dict[count_key] = self.row_count.clone()
        return [rows_key, count_key]

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        count = state_dict.get(prefix + "row_count")
        if count is not None and not 1 <= int(count) <= self.capacity:
            error_msgs.append(f"{prefix}row_count={int(count)} outside [1, {self.capacity}]")
            return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


def dropout_ids(
    line_ids: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Replace each id by the unknown row 0 with probability ``p`` (training only).

    This trains row 0 as the "unknown line" row that unseen lines fall back to.

    Args:
        line_ids: Integer tensor of any shape.
        p: Drop probability in ``[0, 1]``.
        generator: RNG (CPU) for reproducible drops.

    Returns:
        A new tensor of the same shape and dtype.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if p == 0.0:
        return line_ids.clone()
    draw = torch.rand(line_ids.shape, generator=generator).to(line_ids.device)
    return line_ids.masked_fill(draw < p, 0)


def _round_up(n: int, multiple: int | None) -> int:
    """Round ``n`` up to a multiple of ``multiple`` (``None`` → ``n``)."""
    if multiple is None:
        return n
    if multiple < 1:
        raise ValueError(f"pad_to_multiple_of must be ≥ 1, got {multiple}")
    return -(-n // multiple) * multiple
