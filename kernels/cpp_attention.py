"""The 'cpp' backend's paged attention: decode (split over the context) and varlen prefill."""

from __future__ import annotations

import torch
from swiftserve.kernels import cpp_native as native
from swiftserve.kernels import reference


def _paged_args(op: str, q, k_cache, v_cache, block_tables, context_lens) -> tuple | None:
    """Checks the paged-attention inputs; returns _C's cache arguments, or None to use the reference.

    The arguments, positional for speed (one call per layer and step): k_cache, v_cache,
    num_blocks, block_size, kv_stride_block, kv_stride_token, kv_stride_head, block_tables,
    max_blocks_per_seq, block_table_stride. block_tables must already be int32 (see cpp_native.int32) and
    outlive the call: _C gets its address.
    """
    native.check_cpu(
        op, q=q, k_cache=k_cache, v_cache=v_cache, block_tables=block_tables, context_lens=context_lens
    )
    if q.dim() != 3 or k_cache.dim() != 4:
        raise ValueError(
            f"{op}: q must be [tokens, num_heads, head_dim] and k_cache [num_blocks, block_size, "
            f"num_kv_heads, head_dim], got {tuple(q.shape)} and {tuple(k_cache.shape)}"
        )
    kv_strides = k_cache.stride()
    if v_cache.shape != k_cache.shape or v_cache.stride() != kv_strides:
        raise ValueError(
            f"{op}: v_cache {tuple(v_cache.shape)} must match k_cache {tuple(k_cache.shape)} "
            "in shape and strides"
        )
    if not (q.dtype == k_cache.dtype == v_cache.dtype):
        raise ValueError(
            f"{op}: q, k_cache and v_cache must share a dtype, "
            f"got {q.dtype}, {k_cache.dtype}, {v_cache.dtype}"
        )
    num_blocks, block_size, num_kv_heads, head_dim = k_cache.shape
    if q.shape[2] != head_dim or q.shape[1] % num_kv_heads:
        raise ValueError(
            f"{op}: q {tuple(q.shape)} does not fit a cache with {num_kv_heads} KV heads of dim {head_dim}"
        )
    if q.stride(2) != 1 or kv_strides[3] != 1:
        raise ValueError(f"{op}: q and the caches need a contiguous last dimension")
    if block_tables.dim() != 2 or context_lens.dim() != 1 or block_tables.shape[0] < context_lens.shape[0]:
        raise ValueError(
            f"{op}: block_tables must be [num_seqs, max_blocks] and context_lens [num_seqs], got "
            f"{tuple(block_tables.shape)} and {tuple(context_lens.shape)}"
        )
    if (
        q.dtype not in native.NATIVE_DTYPES
        or head_dim not in native.HEAD_DIMS
        or q.shape[1] // num_kv_heads > native.MAX_GROUP
    ):
        return None
    return (
        k_cache.data_ptr(),
        v_cache.data_ptr(),
        num_blocks,
        block_size,
        kv_strides[0],
        kv_strides[1],
        kv_strides[2],
        block_tables.data_ptr(),
        block_tables.shape[1],
        block_tables.stride(0),
    )


def _window(sliding_window: int | None) -> int:
    if sliding_window is None:
        return 0
    if sliding_window < 1:
        raise ValueError(f"sliding_window must be a positive number of tokens or None, got {sliding_window}")
    return int(sliding_window)


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """One query token per sequence, the last of its context. q [num_seqs, num_heads, head_dim]."""
    block_tables = native.int32(block_tables)
    cache = _paged_args("paged_decode_attention", q, k_cache, v_cache, block_tables, context_lens)
    if cache is None:
        return reference.paged_decode_attention(
            q, k_cache, v_cache, block_tables, context_lens, scale, sliding_window
        )
    if context_lens.shape[0] != q.shape[0]:
        raise ValueError(
            f"paged_decode_attention: {q.shape[0]} queries but {context_lens.shape[0]} context_lens"
        )
    context_lens = native.int32(context_lens)
    out = torch.empty(q.shape, dtype=q.dtype)
    num_seqs, num_heads, head_dim = q.shape
    native._C.paged_decode_attention(
        out.data_ptr(),
        num_heads * head_dim,
        head_dim,
        q.data_ptr(),
        q.stride(0),
        q.stride(1),
        *cache,
        context_lens.data_ptr(),
        num_seqs,
        num_heads,
        k_cache.shape[2],
        head_dim,
        float(scale),
        _window(sliding_window),
        native.NATIVE_DTYPES[q.dtype],
    )
    return out


def paged_prefill_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    query_start_loc: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """Varlen causal attention over the paged cache (see reference.paged_prefill_attention)."""
    block_tables = native.int32(block_tables)
    cache = _paged_args("paged_prefill_attention", q, k_cache, v_cache, block_tables, context_lens)
    if cache is None:
        return reference.paged_prefill_attention(
            q, k_cache, v_cache, block_tables, query_start_loc, context_lens, scale, sliding_window
        )
    native.check_cpu("paged_prefill_attention", query_start_loc=query_start_loc)
    num_seqs = context_lens.shape[0]
    if query_start_loc.shape != (num_seqs + 1,):
        raise ValueError(
            f"paged_prefill_attention: query_start_loc must be [num_seqs + 1] = [{num_seqs + 1}], "
            f"got {tuple(query_start_loc.shape)}"
        )
    context_lens, query_start_loc = native.int32(context_lens), native.int32(query_start_loc)
    out = torch.empty(q.shape, dtype=q.dtype)
    num_tokens, num_heads, head_dim = q.shape
    native._C.paged_prefill_attention(
        out.data_ptr(),
        num_heads * head_dim,
        head_dim,
        q.data_ptr(),
        q.stride(0),
        q.stride(1),
        *cache,
        query_start_loc.data_ptr(),
        context_lens.data_ptr(),
        num_seqs,
        num_tokens,
        num_heads,
        k_cache.shape[2],
        head_dim,
        float(scale),
        _window(sliding_window),
        native.NATIVE_DTYPES[q.dtype],
    )
    return out
