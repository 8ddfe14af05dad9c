"""Paged attention: store the step's keys and values, then attend over each sequence's cache."""

from __future__ import annotations

import torch
from torch import nn

from swiftserve import kernels
from swiftserve.layers.attention_metadata import AttentionMetadata


class PagedAttention(nn.Module):
    """Holds no weights; the model runner binds this layer's slice of the KV cache."""

    def __init__(
        self,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        scale: float,
        sliding_window: int | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.scale = scale
        self.sliding_window = sliding_window
        self.backend = backend
        self.k_cache: torch.Tensor | None = None  # [num_blocks, block_size, num_kv_heads, head_dim]
        self.v_cache: torch.Tensor | None = None

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """q [tokens, heads, head_dim]; k, v [tokens, kv_heads, head_dim] -> [tokens, heads, head_dim]."""
        kernels.store_kv(k, v, self.k_cache, self.v_cache, meta.slot_mapping, backend=self.backend)
        n = meta.num_decode_tokens
        if meta.num_prefill_seqs == 0:
            return self._decode(q, meta)
        if n == 0:
            return self._prefill(q, meta)
        return torch.cat((self._decode(q[:n], meta), self._prefill(q[n:], meta)))

    def _decode(self, q: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        return kernels.paged_decode_attention(
            q,
            self.k_cache,
            self.v_cache,
            meta.decode_block_tables,
            meta.decode_context_lens,
            self.scale,
            sliding_window=self.sliding_window,
            backend=self.backend,
        )

    def _prefill(self, q: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        return kernels.paged_prefill_attention(
            q,
            self.k_cache,
            self.v_cache,
            meta.prefill_block_tables,
            meta.prefill_query_start_loc,
            meta.prefill_context_lens,
            self.scale,
            sliding_window=self.sliding_window,
            backend=self.backend,
        )
