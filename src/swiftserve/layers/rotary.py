"""Rotary position embedding: the cos/sin table (with Llama-3 or linear scaling) and its application."""

from __future__ import annotations

import math

import torch
from torch import nn

from swiftserve import kernels


def _llama3_inv_freq(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    """Llama 3.1's frequency-dependent stretch: long wavelengths scale by `factor`, short ones
    stay, and the band between is interpolated smoothly."""
    factor = scaling["factor"]
    low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
    old_len = scaling.get("original_max_position_embeddings", 8192)
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(is_medium, smoothed, scaled)


def build_cos_sin_cache(
    rotary_dim: int, max_position: int, base: float, scaling: dict | None
) -> torch.Tensor:
    """[max_position, rotary_dim] float32: cos in the first half of each row, sin in the second."""
    inv_freq = 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim))
    positions = torch.arange(max_position, dtype=torch.float64)
    scaling = scaling or {}  # no rope_scaling in the config: none
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "llama3":
        inv_freq = _llama3_inv_freq(inv_freq, scaling)
    elif kind == "linear":
        positions = positions / scaling["factor"]
    elif kind not in (None, "default"):
        raise ValueError(f"unsupported rope_scaling type {kind!r} (supported: llama3, linear)")
    freqs = torch.outer(positions, inv_freq)
    return torch.cat((freqs.cos(), freqs.sin()), dim=-1).float()


class RotaryEmbedding(nn.Module):
    def __init__(
        self,
        rotary_dim: int,
        max_position: int,
        base: float,
        scaling: dict | None = None,
        is_neox: bool = True,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        if torch.empty(0).is_meta:
            # A skeleton that a snapshot fills (its table included): only the shape matters, and
            # computing on meta would cost the process a one-time ~1.5 s import of torch._dynamo.
            table = torch.empty(max_position, rotary_dim, dtype=torch.float32)
        else:
            table = build_cos_sin_cache(rotary_dim, max_position, base, scaling)
        self.register_buffer("cos_sin_cache", table, persistent=False)
        self.is_neox = is_neox
        self.backend = backend

    def _apply(self, fn, recurse=True):
        # Casting the model to bf16/fp16 must not coarsen the table: angles stay float32.
        super()._apply(fn, recurse)
        self.cos_sin_cache = self.cos_sin_cache.float()
        return self

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> None:
        """Rotates q [tokens, heads, head_dim] and k [tokens, kv_heads, head_dim] in place."""
        kernels.rotary_embedding(
            positions, q, k, self.cos_sin_cache, is_neox=self.is_neox, backend=self.backend
        )
