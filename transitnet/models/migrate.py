"""Growing tables by key: how new rows are initialised and how old rows move.

A grown model (more lines, more classes) cannot load a checkpoint saved at the old size
with ``load_state_dict``: ``strict=False`` never forgives a size mismatch. Lightning runs
``on_load_checkpoint`` before ``load_state_dict``; that is where a task calls
``migrate_state_dict`` of its :class:`~transitnet.models.embedding.LineEmbedding` or
:class:`~transitnet.models.classifier.ExtensibleClassifier`, which use
:func:`migrate_rows` here. Rows follow their key; nothing is truncated or re-ordered
silently.

Optimizer state (:func:`migrate_optimizer_state`): the Adam/AdamW moments ``exp_avg``,
``exp_avg_sq`` (and ``max_exp_avg_sq``) of old rows are kept, moved with their key; new
rows start at zero moments. The per-tensor ``step`` is kept, so Adam's bias correction
for the new rows is already ≈ 1: their first updates are up to (1-β1)/√(1-β2) ≈ 3 times
the learning rate. Pass ``reset=True`` to drop the whole tensor's state instead (Avalanche's
behaviour, which also forgets the old rows' moments).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from transitnet.datasets.vocab import build_row_map

logger = logging.getLogger(__name__)

#: An init strategy: a name (see :func:`compute_init_rows`) or a callable
#: ``(rows_in_use (n_used, dim), n_new) -> Tensor (n_new, dim)``.
InitSpec = str | Callable[[torch.Tensor, int], torch.Tensor]
#: Hugging Face's ε for ``mean_cov`` (new rows ~ N(μ, ε·Σ)).
MEAN_COV_EPS = 1e-9
#: Optimizer-state entries that are per-tensor scalars, never row-indexed.
_SCALAR_STATE = frozenset({"step"})


def migrate_rows(
    old_tensor: torch.Tensor,
    old_keys: Sequence[str],
    new_keys: Sequence[str],
    init_rows: torch.Tensor | Callable[[torch.Tensor, int], torch.Tensor],
    *,
    allow_drop: bool = False,
    allow_reorder: bool = False,
) -> torch.Tensor:
    """Build a table for ``new_keys`` from one for ``old_keys``, row by key.

    Args:
        old_tensor: ``(n_old_rows, *trailing)`` with ``n_old_rows ≥ len(old_keys)``; rows
            beyond the keys are spare padding and are not carried over.
        old_keys: Key of each old row, in row order.
        new_keys: Key of each new row, in row order.
        init_rows: Rows for keys absent from ``old_keys``: either the grown model's own
            table ``(n_out ≥ len(new_keys), *trailing)`` (its rows for absent keys and its
            spare rows are kept), exactly one row per absent key in order, or a callable
            ``(old rows in use, n_absent) -> (n_absent, *trailing)``.
        allow_drop: Allow old keys absent from ``new_keys``.
        allow_reorder: Allow old keys to change row.

    Returns:
        The migrated table, dtype of ``old_tensor``.

    Raises:
        ValueError: Truncation, re-ordering, duplicate keys or mismatched shapes.
    """
    if old_tensor.shape[0] < len(old_keys):
        raise ValueError(f"old tensor has {old_tensor.shape[0]} rows for {len(old_keys)} keys")
    row_map = build_row_map(old_keys, new_keys, allow_drop=allow_drop, allow_reorder=allow_reorder)
    absent = torch.nonzero(row_map < 0).squeeze(1)
    kept = torch.nonzero(row_map >= 0).squeeze(1)
    n_absent = int(absent.numel())
    fresh = init_rows(old_tensor[: len(old_keys)], n_absent) if callable(init_rows) else init_rows
    fresh = fresh.detach().to(old_tensor.dtype)
    if tuple(fresh.shape[1:]) != tuple(old_tensor.shape[1:]):
        raise ValueError(f"init rows {tuple(fresh.shape)} do not match {tuple(old_tensor.shape)}")
    if not callable(init_rows) and fresh.shape[0] >= len(new_keys):
        out = fresh.clone()
    elif fresh.shape[0] == n_absent:
        out = old_tensor.new_empty((len(new_keys), *old_tensor.shape[1:]))
        out[absent] = fresh
    else:
        raise ValueError(
            f"init rows have {fresh.shape[0]} rows; need {n_absent} (one per new key) "
            f"or at least {len(new_keys)} (a full table)"
        )
    out[kept] = old_tensor[row_map[kept]]
    logger.info(
        "migrated %d rows by key: %d kept, %d new",
        len(new_keys),
        len(new_keys) - n_absent,
        n_absent,
    )
    return out


def migrate_optimizer_state(
    optimizer_state: Mapping[str, Any],
    row_maps: Mapping[int, torch.Tensor],
    *,
    reset: bool = False,
) -> dict[str, Any]:
    """Migrate an ``optimizer.state_dict()`` for tensors whose rows grew by key.

    Args:
        optimizer_state: ``{"state": {param_index: {...}}, "param_groups": [...]}`` as saved
            by Adam/AdamW (any optimizer whose per-row state has the parameter's shape).
        row_maps: Parameter index (its position across the param groups, as in
            ``state_dict()``) → row map ``(n_new_rows,)`` from
            :func:`~transitnet.datasets.vocab.build_row_map` (old row or -1).
        reset: Drop the whole state of those tensors instead (fresh moments for all rows).

    Returns:
        A new state dict; the input is not modified. Old rows keep their moments, new rows
        get zeros, ``step`` is kept.

    Raises:
        ValueError: A row map points past the rows of a saved moment.
    """
    out = copy.deepcopy(dict(optimizer_state))
    states = out.get("state", {})
    for index, row_map in row_maps.items():
        if index not in states:
            continue
        if reset:
            del states[index]
            continue
        states[index] = {
            name: _migrate_moment(value, row_map, f"param {index} {name}")
            if name not in _SCALAR_STATE and isinstance(value, torch.Tensor) and value.ndim
            else value
            for name, value in states[index].items()
        }
    return out


def _migrate_moment(value: torch.Tensor, row_map: torch.Tensor, what: str) -> torch.Tensor:
    """Return ``value`` with rows picked by ``row_map`` (-1 → zeros)."""
    keep = row_map >= 0
    if keep.any() and int(row_map.max()) >= value.shape[0]:
        raise ValueError(
            f"{what}: row map needs row {int(row_map.max())}, state has {value.shape[0]} rows"
        )
    out = value.new_zeros((row_map.shape[0], *value.shape[1:]))
    out[keep] = value[row_map[keep]]
    return out


def compute_init_rows(
    rows: torch.Tensor,
    n: int,
    init: InitSpec,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Compute ``n`` new embedding rows from the rows in use.

    Statistics (``mean``, ``mean_cov``, ``random``) use the line rows ``rows[1:]`` and
    exclude the unknown row 0, which is a different kind of row (trained on dropped ids
    of every line, or never trained); with no line rows yet they use row 0.

    Args:
        rows: Rows in use, ``(n_used, dim)``, row 0 the unknown line.
        n: Number of rows to make.
        init: ``unknown`` (copy row 0), ``mean`` (mean of the line rows), ``mean_cov`` or
            ``mean_cov:<eps>`` (sample N(μ, ε·Σ) of the line rows, ε=1e-9 by default, μ when
            ε·Σ is not positive definite), ``similar:<row>,<row>…`` (mean of those rows),
            ``random`` (normal, mean 0, std matched to the line rows; an ablation), or a callable
            ``(rows, n) -> (n, dim)``.
        generator: RNG for ``mean_cov`` and ``random``.

    Returns:
        Tensor ``(n, dim)``, same dtype as ``rows``.
    """
    stats = rows[1:] if rows.shape[0] > 1 else rows
    name, _, arg = init.partition(":") if isinstance(init, str) else ("callable", "", "")
    if callable(init):
        out = init(rows, n)
    elif name == "unknown":
        out = rows[0].expand(n, -1)
    elif name == "mean":
        out = stats.mean(0).expand(n, -1)
    elif name == "mean_cov":
        out = _sample_mean_cov(stats, n, float(arg) if arg else MEAN_COV_EPS, generator)
    elif name == "similar":
        out = rows[_parse_rows(arg, rows.shape[0])].mean(0).expand(n, -1)
    elif name == "random":
        out = torch.randn(n, rows.shape[1], generator=generator) * stats.std()
    else:
        raise ValueError(
            f"unknown init {init!r}: use unknown, mean, mean_cov, similar:<rows>, "
            "random or a callable"
        )
    if tuple(out.shape) != (n, rows.shape[1]) or not torch.isfinite(out).all():
        raise ValueError(f"init {init!r} gave shape {tuple(out.shape)} or non-finite values")
    return out.to(rows.dtype).clone()


def _sample_mean_cov(
    stats: torch.Tensor, n: int, eps: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Sample ``n`` rows from N(μ, ε·Σ) of ``stats``; μ when ε·Σ is not positive definite."""
    x = stats.double()
    mu = x.mean(0)
    centred = x - mu
    cov = eps * (centred.T @ centred) / max(x.shape[0], 1)
    chol, info = torch.linalg.cholesky_ex(cov)
    if int(info) != 0:
        logger.info(
            "mean_cov: ε·Σ not positive definite (%d rows, dim %d); using the mean",
            x.shape[0],
            x.shape[1],
        )
        return mu.expand(n, -1)
    z = torch.randn(n, x.shape[1], generator=generator, dtype=torch.float64)
    sample: torch.Tensor = mu + z @ chol.T
    return sample


def _parse_rows(arg: str, n_used: int) -> list[int]:
    """Parse ``"3,5"`` into row indices in ``[0, n_used)``."""
    try:
        idx = [int(part) for part in arg.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"similar:<rows> needs integer rows, got {arg!r}") from None
    if not idx or min(idx) < 0 or max(idx) >= n_used:
        raise ValueError(f"similar:{arg} needs rows in [0, {n_used})")
    return idx
