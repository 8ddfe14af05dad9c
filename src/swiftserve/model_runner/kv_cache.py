"""Sizing and allocating one model's paged KV cache from the byte budget it was handed."""

from __future__ import annotations

import torch

from swiftserve.models.llama_config import LlamaConfig


def bytes_per_block(cfg: LlamaConfig, block_size: int, dtype: torch.dtype) -> int:
    """Keys and values of block_size tokens across all layers."""
    per_token = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * dtype.itemsize
    return per_token * block_size


def num_blocks_for_budget(cfg: LlamaConfig, block_size: int, dtype: torch.dtype, budget_bytes: int) -> int:
    num_blocks = budget_bytes // bytes_per_block(cfg, block_size, dtype)
    if num_blocks < 1:
        need = bytes_per_block(cfg, block_size, dtype)
        raise ValueError(f"KV cache budget of {budget_bytes} bytes is below one block ({need} bytes)")
    return num_blocks


def allocate_kv_cache(
    cfg: LlamaConfig, num_blocks: int, block_size: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """One tensor [num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim]; each layer
    takes views of its K and V halves (flash-attn's paged layout)."""
    shape = (cfg.num_layers, 2, num_blocks, block_size, cfg.num_kv_heads, cfg.head_dim)
    return torch.zeros(shape, dtype=dtype, device=device)
