"""``RoutedForecastNet``: the base network for old lines, a fine-tuned fork for new ones.

The ``fork`` extension tier (:mod:`transitnet.tasks.extension`) trains a copy of the
grown base network on the new lines only and serves through this module: each window
goes to the fork when its embedding row is a routed (new) line, else to the untouched
base. The base runs on the whole batch exactly as it did before the extension, so old
lines' outputs are bit-identical to the base model's (forgetting exactly 0 by
construction); the fork runs only on the routed rows of the batch.

Serving cost: two networks' weights in memory, and per batch one base forward over every
window plus one fork forward over the routed windows (index, then scatter back). Both
networks share the base's quantile calibration (the fork starts from it and an
extension never refits it).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from transitnet.models.embedding import LineEmbedding
from transitnet.models.encoder import TrajectoryEncoder
from transitnet.models.forecaster import ForecastNet
from transitnet.models.heads import QuantileCalibration


class RoutedForecastNet(nn.Module):
    """Route windows by embedding row: routed rows to ``fork``, every other row to ``base``.

    Args:
        base: The base network, grown to the full vocabulary (its weights are not trained).
        fork: The fine-tuned copy, same shapes as ``base``.
        routed_rows: Embedding rows served by the fork (the new lines' rows).

    Raises:
        ValueError: ``base`` and ``fork`` differ in rows, or a routed row is out of range
            or is the unknown row 0.
    """

    routed: torch.Tensor

    def __init__(self, base: ForecastNet, fork: ForecastNet, routed_rows: Sequence[int]) -> None:
        super().__init__()
        n_rows = base.line_embedding.num_lines
        if fork.line_embedding.num_lines != n_rows:
            raise ValueError(
                f"base has {n_rows} line rows, fork {fork.line_embedding.num_lines}: "
                "grow both to the same vocabulary"
            )
        bad = [r for r in routed_rows if not 0 < r < n_rows]
        if bad:
            raise ValueError(f"routed rows {bad} are outside 1..{n_rows - 1}")
        self.base, self.fork = base, fork
        routed = torch.zeros(n_rows, dtype=torch.bool)
        routed[list(routed_rows)] = True
        self.register_buffer("routed", routed)

    @property
    def encoder(self) -> TrajectoryEncoder:
        """The base network's encoder (both share its input widths)."""
        return self.base.encoder

    @property
    def n_context(self) -> int:
        """Context features the networks take."""
        return self.base.n_context

    @property
    def calibration(self) -> QuantileCalibration:
        """The quantile calibration both networks' outputs go through (the base's)."""
        return self.base.calibration

    @property
    def line_embedding(self) -> LineEmbedding:
        """The fork's line embedding (the one whose new rows train)."""
        return self.fork.line_embedding

    def routed_rows(self) -> list[int]:
        """Embedding rows served by the fork."""
        return [int(i) for i in torch.nonzero(self.routed).view(-1)]

    def forward(
        self,
        features: torch.Tensor,
        lengths: torch.Tensor,
        line_ids: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        calibrated: bool = True,
    ) -> torch.Tensor:
        """Forecast each window with its line's network (see :meth:`ForecastNet.forward`).

        Returns:
            ``(B, len(horizons), len(quantiles))``: the base's output on non-routed rows
            (bit-identical to ``base`` alone), the fork's on routed rows.

        Raises:
            ValueError / IndexError: as :meth:`ForecastNet.forward`.
        """
        ids = line_ids.view(-1)
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.routed.numel()):
            raise IndexError(f"line ids must be in 0..{self.routed.numel() - 1}")
        out = self.base(features, lengths, line_ids, context, calibrated=False)
        take = torch.nonzero(self.routed[ids]).view(-1)
        if take.numel():
            ctx = None if context is None else context[take]
            forked = self.fork(features[take], lengths[take], ids[take], ctx, calibrated=False)
            out = out.index_copy(0, take, forked)
        result: torch.Tensor = self.calibration(out) if calibrated else out
        return result


def fork_network(base: ForecastNet, routed_rows: Sequence[int]) -> RoutedForecastNet:
    """A :class:`RoutedForecastNet` whose fork is a deep copy of ``base`` (same weights).

    Args:
        base: The grown base network (new rows already initialised).
        routed_rows: Rows the fork serves.
    """
    return RoutedForecastNet(base, copy.deepcopy(base), routed_rows)
