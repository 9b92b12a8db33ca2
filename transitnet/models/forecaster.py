"""The forecasting network: line embedding + trajectory encoder + context → quantile head.

A plain ``nn.Module`` (no Lightning): a pure function of its inputs. The line enters as
an embedding row, so a new line is a new row (:func:`add_lines`), not a new input neuron.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from transitnet.datasets.vocab import LineVocabulary
from transitnet.models.embedding import LineEmbedding
from transitnet.models.encoder import EncoderKind, TrajectoryEncoder
from transitnet.models.heads import QuantileCalibration, QuantileForecastHead
from transitnet.models.migrate import InitSpec
from transitnet.models.schedule_skip import ScheduleSkip, compute_skip_offsets

logger = logging.getLogger(__name__)


class ForecastNet(nn.Module):
    """Forecast along-route distance travelled at several horizons, as quantiles.

    Args:
        num_lines: Embedding rows in use, the unknown row 0 included (``len(vocab)``).
        line_dim: Line embedding size.
        n_features: Features per past fix.
        horizons: Forecast horizons (e.g. seconds), strictly increasing.
        quantiles: Quantile levels in (0, 1), strictly increasing.
        encoder: ``gru``, ``transformer`` or ``tcn`` (see :class:`TrajectoryEncoder`).
        hidden_dim: Trunk size (and encoder size unless ``encoder_dim`` is given).
        n_context: Per-sample context features (time of day, delay, …); 0 for none.
        num_layers: Encoder layers.
        dropout: Dropout in the encoder and trunk.
        output_scale: Head output units per raw step (see :class:`QuantileForecastHead`).
        speed_scale: When set, each horizon's increment is weighted by its length (in
            the units of ``horizons``) times this speed, so raw outputs near 0 mean about
            this speed at every horizon (e.g. 5 m/s with horizons in seconds).
        max_len: Longest past window (transformer positions).
        pad_lines_to_multiple_of: Spare embedding capacity (see :class:`LineEmbedding`).
        num_base_lines: Rows in the embedding's freezable base part; default all.
        trunk_layers: Hidden layers (Linear + GELU + Dropout) between the concatenated
            encoder/line/context features and the head.
        encoder_dim: Encoder output size (default ``hidden_dim``); the encoder runs over
            every past fix, so it dominates inference cost as it grows.
        ignore_context: Positions of context features the network never sees (they are
            zeroed, i.e. set to their training mean once scaled): for ablations and for
            features that do not carry over to the prediction period.
        drop_context: Positions of context features left out of the trunk's input
            altogether (its first layer is narrower, e.g. the schedule features when no
            training window has a schedule).
        schedule_skip: The schedule's forecast as a skip connection (the head then
            predicts a correction to it where a window has a schedule); None for none.
    """

    context_keep: torch.Tensor
    context_used: torch.Tensor

    def __init__(
        self,
        num_lines: int,
        line_dim: int,
        n_features: int,
        horizons: Sequence[float],
        quantiles: Sequence[float] = (0.1, 0.5, 0.9),
        *,
        encoder: EncoderKind = "gru",
        hidden_dim: int = 64,
        n_context: int = 0,
        num_layers: int = 1,
        dropout: float = 0.0,
        output_scale: float = 100.0,
        max_len: int = 64,
        pad_lines_to_multiple_of: int | None = None,
        num_base_lines: int | None = None,
        speed_scale: float | None = None,
        trunk_layers: int = 1,
        encoder_dim: int | None = None,
        ignore_context: Sequence[int] = (),
        drop_context: Sequence[int] = (),
        schedule_skip: ScheduleSkip | None = None,
    ) -> None:
        super().__init__()
        encoder_dim = encoder_dim or hidden_dim
        self.horizons = _check_increasing(horizons, "horizons", low=0.0)
        self.quantiles = _check_increasing(quantiles, "quantiles", low=0.0, high=1.0)
        if n_context < 0 or trunk_layers < 1:
            raise ValueError(
                f"need n_context ≥ 0 and trunk_layers ≥ 1, got {n_context}, {trunk_layers}"
            )
        self.n_context = n_context
        keep = torch.ones(n_context)
        if any(not 0 <= i < n_context for i in ignore_context):
            raise ValueError(f"ignore_context positions must lie in [0, {n_context})")
        keep[list(ignore_context)] = 0.0
        self.register_buffer("context_keep", keep, persistent=False)
        if any(not 0 <= i < n_context for i in drop_context):
            raise ValueError(f"drop_context positions must lie in [0, {n_context})")
        used = [i for i in range(n_context) if i not in set(drop_context)]
        self.register_buffer("context_used", torch.tensor(used, dtype=torch.long), persistent=False)
        self.drops_context = len(used) < n_context
        self.line_embedding = LineEmbedding(
            num_lines,
            line_dim,
            pad_to_multiple_of=pad_lines_to_multiple_of,
            num_base=num_base_lines,
        )
        self.encoder = TrajectoryEncoder(
            n_features,
            encoder_dim,
            kind=encoder,
            num_layers=num_layers,
            dropout=dropout,
            max_len=max_len,
        )
        widths = [encoder_dim + line_dim + len(used)] + [hidden_dim] * trunk_layers
        self.trunk = nn.Sequential(
            *(
                layer
                for a, b in itertools.pairwise(widths)
                for layer in (nn.Linear(a, b), nn.GELU(), nn.Dropout(dropout))
            )
        )
        weights = None
        if speed_scale is not None:
            gaps = [b - a for a, b in zip((0.0, *self.horizons[:-1]), self.horizons, strict=True)]
            weights = [g * speed_scale / output_scale for g in gaps]
        self.head = QuantileForecastHead(
            hidden_dim,
            len(self.horizons),
            len(self.quantiles),
            output_scale=output_scale,
            step_weights=weights,
        )
        self.calibration = QuantileCalibration(len(self.horizons), len(self.quantiles))
        self.schedule_skip = schedule_skip

    def forward(
        self,
        features: torch.Tensor,
        lengths: torch.Tensor,
        line_ids: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        calibrated: bool = True,
    ) -> torch.Tensor:
        """Forecast.

        Args:
            features: ``(B, K, n_features)`` past fixes, left-aligned, padded after.
            lengths: ``(B,)`` valid fixes per sample, in ``[1, K]``.
            line_ids: ``(B,)`` embedding rows (0 = unknown line).
            context: ``(B, n_context)``; ``None`` when ``n_context == 0``.
            calibrated: Apply the fitted :attr:`calibration` (identity until fitted);
                False gives the head's raw quantiles (what calibration is fitted on).

        Returns:
            ``(B, len(horizons), len(quantiles))`` distance travelled, monotone in both.

        Raises:
            ValueError: Mismatched shapes or non-finite inputs. IndexError: bad line ids.
        """
        parts = [self.encoder(features, lengths), self.line_embedding(line_ids.view(-1))]
        ctx = self._check_context(context, features.shape[0])
        kept = ctx * self.context_keep
        parts.append(kept[:, self.context_used] if self.drops_context else kept)
        if parts[1].shape[0] != features.shape[0]:
            raise ValueError(f"line_ids has {parts[1].shape[0]} rows for {features.shape[0]}")
        offset = None
        if self.schedule_skip is not None:
            skip, has = self.schedule_skip(ctx)
            offset = compute_skip_offsets(skip, has, self.head.step_units)
        out: torch.Tensor = self.head(self.trunk(torch.cat(parts, dim=1)), offset)
        return self.calibration(out) if calibrated else out

    def resize_lines(
        self,
        new_num_lines: int,
        *,
        init: InitSpec = "unknown",
        pad_to_multiple_of: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        """Grow the line embedding (see :meth:`LineEmbedding.resize`); prefer :func:`add_lines`."""
        self.line_embedding.resize(
            new_num_lines, init=init, pad_to_multiple_of=pad_to_multiple_of, generator=generator
        )

    def freeze_except_new_rows(self) -> list[nn.Parameter]:
        """Set up row-only training: every parameter but the new embedding rows is frozen.

        Returns:
            The parameters to give the optimizer (the new rows). With only these in the
            optimizer, old lines' outputs stay bit-identical whatever the weight decay.
        """
        for param in self.parameters():
            param.requires_grad_(False)
        new = self.line_embedding.new_parameters()
        for param in new:
            param.requires_grad_(True)
        return new

    def _check_context(self, context: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Return a ``(B, n_context)`` context tensor, validated."""
        if context is None:
            if self.n_context:
                raise ValueError(f"this network needs context of width {self.n_context}")
            return torch.zeros(batch, 0, device=self.head.linear.weight.device)
        if context.shape != (batch, self.n_context):
            raise ValueError(
                f"context must be ({batch}, {self.n_context}), got {tuple(context.shape)}"
            )
        if not torch.isfinite(context).all():
            raise ValueError("context holds NaN or inf")
        return context


def add_lines(
    net: ForecastNet,
    vocab: LineVocabulary,
    line_keys: Iterable[str],
    *,
    init: InitSpec = "unknown",
    pad_to_multiple_of: int | None = None,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Add lines by key to the vocabulary and grow the network's table to match.

    Old rows are untouched, so old lines' outputs are bit-identical (zero-shot tier).

    Args:
        net: The network; its table must have exactly ``len(vocab)`` rows in use.
        vocab: The vocabulary, extended in place.
        line_keys: Keys to add; keys already known keep their row.
        init: As :meth:`LineEmbedding.resize`, but ``similar:<key>,<key>…`` names line
            keys (known ones) instead of rows.
        pad_to_multiple_of: Spare capacity.
        generator: RNG for sampled inits.

    Returns:
        The row of each given key.

    Raises:
        ValueError: The table and vocabulary are out of sync, or a ``similar`` key is unknown.
    """
    if net.line_embedding.num_lines != len(vocab):
        raise ValueError(
            f"table has {net.line_embedding.num_lines} rows in use but the "
            f"vocabulary has {len(vocab)}: they are out of sync"
        )
    if isinstance(init, str) and init.startswith("similar:"):
        names = [k.strip() for k in init.removeprefix("similar:").split(",") if k.strip()]
        unknown = [k for k in names if k not in vocab]
        if unknown or not names:
            raise ValueError(f"similar lines must be known line keys, unknown: {unknown}")
        init = "similar:" + ",".join(str(vocab.row(k)) for k in names)
    trial = LineVocabulary.from_state_dict(vocab.state_dict())
    trial.add(line_keys)  # validates the keys before anything changes
    net.resize_lines(
        len(trial), init=init, pad_to_multiple_of=pad_to_multiple_of, generator=generator
    )
    return vocab.add(line_keys)


def _check_increasing(
    values: Sequence[float], what: str, *, low: float, high: float | None = None
) -> tuple[float, ...]:
    """Return ``values`` as a tuple of floats, checking they increase strictly in range."""
    out = tuple(float(v) for v in values)
    ok = bool(out) and all(a < b for a, b in itertools.pairwise(out))
    if not ok or out[0] <= low or (high is not None and out[-1] >= high):
        bounds = f"({low}, {high})" if high is not None else f"> {low}"
        raise ValueError(f"{what} must be strictly increasing and {bounds}, got {list(values)}")
    return out
