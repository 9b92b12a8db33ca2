"""The schedule's forecast as a skip connection: the network predicts a correction to it.

Where a window has a usable timetable, its context carries the distance the schedule
moves the vehicle over fixed offsets while it keeps its current delay (the
``schedule_delay`` baseline, OneBusAway style). :class:`ScheduleSkip` reads those
columns back from the *scaled* context (it stores their scaler), interpolates them to the
network's horizons, and turns them into per-horizon offsets of the quantile head's
pre-activations (:func:`compute_skip_offsets`): with a zero correction the head's median
is exactly the schedule's forecast, so the network learns a residual on the
schedule instead of the whole distance. Where there is no schedule, the offset is 0 and
the head is unchanged (its prior: about ``speed_scale`` at every horizon).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

#: Smallest schedule step (in head units) turned into an offset: the inverse softplus
#: of 0 is -inf, so a schedule that does not move maps to this (≈ -6.9).
MIN_STEP = 1e-3


def build_interpolation(offsets: Sequence[float], horizons: Sequence[float]) -> np.ndarray:
    """``(len(offsets) + 1, len(horizons))`` weights taking ``[0, ahead…]`` to the horizons.

    Linear interpolation between the knots ``(0, *offsets)`` (value 0 at 0); beyond the
    last offset, its value scaled by ``horizon / last offset``. A horizon equal to an
    offset gets exactly that offset's value.

    Raises:
        ValueError: ``offsets`` not strictly increasing and positive.
    """
    knots = np.asarray([0.0, *offsets], dtype=np.float64)
    if len(knots) < 2 or not (np.diff(knots) > 0).all():
        raise ValueError(f"offsets must be positive and strictly increasing, got {offsets}")
    weights = np.zeros((len(knots), len(horizons)))
    for j, h in enumerate(horizons):
        if h >= knots[-1]:
            weights[-1, j] = h / knots[-1]
            continue
        i = int(np.searchsorted(knots, h, side="right")) - 1
        frac = (h - knots[i]) / (knots[i + 1] - knots[i])
        weights[i, j] += 1.0 - frac
        weights[i + 1, j] += frac
    return weights


class ScheduleSkip(nn.Module):
    """The schedule's forecast at the network's horizons, read from the scaled context.

    Args:
        horizons: The network's horizons (s).
        offsets: The offsets (s) of the ``ahead`` context columns.
        ahead_positions: Context positions of the metres-ahead columns, one per offset.
        has_position: Context position of the ``has_schedule`` flag.

    The scaler of those columns (:meth:`set_scale`) is a buffer, so it travels in state
    dicts and checkpoints.
    """

    positions: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    weights: torch.Tensor

    def __init__(
        self,
        horizons: Sequence[float],
        offsets: Sequence[float],
        ahead_positions: Sequence[int],
        has_position: int,
    ) -> None:
        super().__init__()
        if len(ahead_positions) != len(offsets):
            raise ValueError(f"{len(ahead_positions)} ahead columns for {len(offsets)} offsets")
        positions = torch.tensor([*ahead_positions, has_position], dtype=torch.long)
        self.register_buffer("positions", positions, persistent=False)
        self.register_buffer("mean", torch.zeros(len(positions)))
        self.register_buffer("std", torch.ones(len(positions)))
        interp = build_interpolation(offsets, horizons)
        self.register_buffer("weights", torch.from_numpy(interp).float(), persistent=False)

    def set_scale(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Install the context scaler (``(C,)`` mean and std of every context feature)."""
        idx = self.positions.cpu().numpy()
        if max(idx) >= len(mean) or len(mean) != len(std):
            raise ValueError(f"a context scaler of {len(mean)} features misses the schedule's")
        self.mean.copy_(torch.as_tensor(np.asarray(mean)[idx], dtype=torch.float32))
        self.std.copy_(torch.as_tensor(np.asarray(std)[idx], dtype=torch.float32))

    def forward(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, H)`` metres the schedule forecasts, and the ``(B,)`` bool has-schedule mask.

        Args:
            context: ``(B, C)`` scaled context features.
        """
        raw = context[:, self.positions] * self.std + self.mean
        has = raw[:, -1] > 0.5
        ahead = torch.cat([torch.zeros_like(raw[:, :1]), raw[:, :-1].clamp_min(0.0)], dim=1)
        skip = torch.where(has.unsqueeze(1), ahead @ self.weights, 0.0)
        return skip, has


def compute_skip_offsets(skip: torch.Tensor, has: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """``(B, H)`` pre-activation offsets that make the head's median equal ``skip``.

    The head's increments are ``unit[h] · softplus(raw[h])``; with ``raw = a[h]`` where
    ``a = softplus⁻¹(Δskip[h] / unit[h])`` its cumulative sum is ``skip`` (up to steps
    below :data:`MIN_STEP` units). Rows without a schedule get 0 (the head's prior).

    Args:
        skip: ``(B, H)`` schedule forecast (metres), non-decreasing over horizons.
        has: ``(B,)`` bool, True where the schedule applies.
        unit: ``(H,)`` metres per softplus unit of each horizon's increment.
    """
    steps = torch.diff(skip, dim=1, prepend=torch.zeros_like(skip[:, :1])).clamp_min(0.0)
    y = (steps / unit.view(1, -1)).clamp_min(MIN_STEP)
    inverse = y + torch.log(-torch.expm1(-y))  # softplus⁻¹(y), stable for small and large y
    return torch.where(has.unsqueeze(1), inverse, 0.0)
