"""Trajectory encoders: the past K fixes of a vehicle → one feature vector.

Sequences are left-aligned: sample ``b`` holds its fixes, oldest first, at time steps
``[0, lengths[b])`` and padding after. Padded steps are zeroed before encoding and never
reach the output (GRU: packed sequences; Transformer: key padding mask; TCN: causal
convolutions read at the last valid step), so a sample's feature does not depend on how
far its batch was padded.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

EncoderKind = Literal["gru", "transformer", "tcn"]


class TrajectoryEncoder(nn.Module):
    """Encode ``(B, K, F)`` past-fix features with their lengths into ``(B, H)``.

    Args:
        n_features: Features per fix, ``F``.
        hidden_dim: Output size, ``H``.
        kind: ``gru`` (default), ``transformer`` (a small pre-norm TransformerEncoder with
            positions counted back from the latest fix) or ``tcn`` (dilated causal convs).
        num_layers: Recurrent, attention or convolution layers.
        dropout: Dropout inside the encoder.
        max_len: Longest sequence the transformer accepts.
        n_heads: Attention heads (transformer; must divide ``hidden_dim``).
        kernel_size: Convolution width (tcn); dilations are 1, 2, 4, ….
    """

    def __init__(
        self,
        n_features: int,
        hidden_dim: int = 64,
        *,
        kind: EncoderKind = "gru",
        num_layers: int = 1,
        dropout: float = 0.0,
        max_len: int = 64,
        n_heads: int = 4,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        if n_features < 1 or hidden_dim < 1 or num_layers < 1:
            raise ValueError("n_features, hidden_dim and num_layers must be ≥ 1")
        self.n_features = n_features
        self.hidden_dim = hidden_dim
        self.kind = kind
        self.core: nn.Module
        if kind == "gru":
            self.core = _GRUCore(n_features, hidden_dim, num_layers, dropout)
        elif kind == "transformer":
            self.core = _TransformerCore(
                n_features, hidden_dim, num_layers, dropout, max_len, n_heads
            )
        elif kind == "tcn":
            self.core = _TCNCore(n_features, hidden_dim, num_layers, dropout, kernel_size)
        else:
            raise ValueError(f"unknown encoder kind {kind!r}: use gru, transformer or tcn")

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Encode.

        Args:
            features: ``(B, K, F)`` float; padded steps may hold anything (even NaN).
            lengths: ``(B,)`` integer, valid steps per sample, in ``[1, K]``.

        Returns:
            ``(B, H)``.

        Raises:
            ValueError: Wrong shapes, lengths outside ``[1, K]`` or non-finite valid steps.
        """
        mask = self.compute_mask(features, lengths)
        full = bool(mask.all())  # serving: every window full, nothing to zero
        x = features if full else features.masked_fill(~mask.unsqueeze(-1), 0.0)
        out: torch.Tensor = self.core(x, mask, lengths)
        return out

    def compute_mask(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Check the inputs and return the ``(B, K)`` bool mask of valid steps."""
        if features.ndim != 3 or features.shape[-1] != self.n_features:
            raise ValueError(
                f"features must be (B, K, {self.n_features}), got {tuple(features.shape)}"
            )
        if lengths.shape != features.shape[:1] or lengths.dtype.is_floating_point:
            raise ValueError(
                f"lengths must be integer (B,), got {tuple(lengths.shape)} {lengths.dtype}"
            )
        if lengths.numel() and (lengths.min() < 1 or lengths.max() > features.shape[1]):
            raise ValueError(
                f"lengths must lie in [1, K={features.shape[1]}], got "
                f"[{int(lengths.min())}, {int(lengths.max())}]"
            )
        steps = torch.arange(features.shape[1], device=features.device)
        mask = steps.unsqueeze(0) < lengths.unsqueeze(1)
        if not (torch.isfinite(features).all(dim=-1) | ~mask).all():
            raise ValueError("features hold NaN or inf at valid (unpadded) steps")
        return mask


def _gather_last(out: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Pick ``out[b, lengths[b] - 1]`` from ``(B, K, H)`` → ``(B, H)``."""
    index = (lengths - 1).long().view(-1, 1, 1).expand(-1, 1, out.shape[-1])
    return out.gather(1, index).squeeze(1)


class _GRUCore(nn.Module):
    """GRU over packed sequences; the last layer's final hidden state."""

    def __init__(self, n_features: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.gru = nn.GRU(
            n_features,
            hidden,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(
            x, lengths.cpu().long(), batch_first=True, enforce_sorted=False
        )
        _, h_n = self.gru(packed)
        last: torch.Tensor = h_n[-1]
        return last


class _TransformerCore(nn.Module):
    """Pre-norm TransformerEncoder with learned positions counted back from the last fix."""

    def __init__(
        self, n_features: int, hidden: int, layers: int, dropout: float, max_len: int, heads: int
    ) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden_dim={hidden} must be a multiple of n_heads={heads}")
        self.max_len = max_len
        self.proj = nn.Linear(n_features, hidden)
        self.pos = nn.Embedding(max_len, hidden)
        layer = nn.TransformerEncoderLayer(
            hidden,
            heads,
            dim_feedforward=2 * hidden,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.max_len:
            raise ValueError(f"sequence length {x.shape[1]} exceeds max_len={self.max_len}")
        steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
        back = (lengths.unsqueeze(1) - 1 - steps).clamp(min=0)
        h = self.proj(x) + self.pos(back)
        h = self.encoder(h, src_key_padding_mask=~mask)
        out: torch.Tensor = self.norm(_gather_last(h, lengths))
        return out


class _TCNCore(nn.Module):
    """Residual dilated causal 1-D convolutions, read at the last valid step."""

    def __init__(
        self, n_features: int, hidden: int, layers: int, dropout: float, kernel: int
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(n_features, hidden)
        self.convs = nn.ModuleList(
            nn.Conv1d(hidden, hidden, kernel, dilation=2**i) for i in range(layers)
        )
        self.pads = [(kernel - 1) * 2**i for i in range(layers)]
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.proj(x).transpose(1, 2)  # (B, H, K)
        for conv, pad in zip(self.convs, self.pads, strict=True):
            y = conv(nn.functional.pad(h, (pad, 0)))
            h = h + self.dropout(torch.relu(y))
        return _gather_last(h.transpose(1, 2), lengths)
