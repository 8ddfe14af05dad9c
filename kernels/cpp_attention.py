"""The 'cpp' backend's paged attention: decode (split over the context) and varlen prefill.

_C has kernels for float32 and bfloat16, the head sizes in cpp_native.HEAD_DIMS and up to
MAX_GROUP query heads per KV head; other inputs raise UnsupportedInputError (after the shape
checks), and the dispatcher runs another backend.
"""

from __future__ import annotations

import torch
from swiftserve.kernels import cpp_native as native


def supports_paged_attention(q: torch.Tensor, k_cache: torch.Tensor) -> str | None:
    """Why _C has no paged-attention kernel for these (checked) inputs, or None."""
    return native.attention_reason(q.dtype, k_cache.shape[3], q.shape[1] // k_cache.shape[2])


def _check_paged(op: str, q, k_cache, v_cache, block_tables, context_lens) -> None:
    """Checks the paged-attention inputs both kernels take (ValueError). block_tables must already
    be int32 (see cpp_native.int32) and outlive the call: _C gets its address."""
    native.check_cpu(
        op, q=q, k_cache=k_cache, v_cache=v_cache, block_tables=block_tables, context_lens=context_lens
    )
    if q.dim() != 3 or k_cache.dim() != 4:
        raise ValueError(
            f"{op}: q must be [tokens, num_heads, head_dim] and k_cache [num_blocks, block_size, "
            f"num_kv_heads, head_dim], got {tuple(q.shape)} and {tuple(k_cache.shape)}"
        )
    if v_cache.shape != k_cache.shape or v_cache.stride() != k_cache.stride():
        raise ValueError(
            f"{op}: v_cache {tuple(v_cache.shape)} must match k_cache {tuple(k_cache.shape)} "
            "in shape and strides"
        )
    if not (q.dtype == k_cache.dtype == v_cache.dtype):
        raise ValueError(
            f"{op}: q, k_cache and v_cache must share a dtype, "
            f"got {q.dtype}, {k_cache.dtype}, {v_cache.dtype}"
        )
    _, _, num_kv_heads, head_dim = k_cache.shape
    if q.shape[2] != head_dim or q.shape[1] % num_kv_heads:
        raise ValueError(
            f"{op}: q {tuple(q.shape)} does not fit a cache with {num_kv_heads} KV heads of dim {head_dim}"
        )
    if q.stride(2) != 1 or k_cache.stride(3) != 1:
        raise ValueError(f"{op}: q and the caches need a contiguous last dimension")
    if block_tables.dim() != 2 or context_lens.dim() != 1 or block_tables.shape[0] < context_lens.shape[0]:
        raise ValueError(
            f"{op}: block_tables must be [num_seqs, max_blocks] and context_lens [num_seqs], got "
            f"{tuple(block_tables.shape)} and {tuple(context_lens.shape)}"
        )


def _cache_args(k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor) -> dict:
    """The paged cache and block table as both attention kernels take them (checked by _check_paged)."""
    num_blocks, block_size = k_cache.shape[:2]
    kv_stride = k_cache.stride()
    return {
        "k_cache": k_cache.data_ptr(),
        "v_cache": v_cache.data_ptr(),
        "num_blocks": num_blocks,
        "block_size": block_size,
        "kv_stride_block": kv_stride[0],
        "kv_stride_token": kv_stride[1],
        "kv_stride_head": kv_stride[2],
        "block_tables": block_tables.data_ptr(),
        "max_blocks_per_seq": block_tables.shape[1],
        "block_table_stride": block_tables.stride(0),
    }


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
    op = "paged_decode_attention"
    block_tables = native.int32(block_tables)
    _check_paged(op, q, k_cache, v_cache, block_tables, context_lens)
    if context_lens.shape[0] != q.shape[0]:
        raise ValueError(f"{op}: {q.shape[0]} queries but {context_lens.shape[0]} context_lens")
    window = _window(sliding_window)
    native.unsupported(op, supports_paged_attention(q, k_cache))
    context_lens = native.int32(context_lens)
    out = torch.empty(q.shape, dtype=q.dtype)
    num_seqs, num_heads, head_dim = q.shape
    native.calls.paged_decode_attention(
        out=out.data_ptr(),
        out_stride_seq=num_heads * head_dim,
        out_stride_head=head_dim,
        q=q.data_ptr(),
        q_stride_seq=q.stride(0),
        q_stride_head=q.stride(1),
        **_cache_args(k_cache, v_cache, block_tables),
        context_lens=context_lens.data_ptr(),
        num_seqs=num_seqs,
        num_heads=num_heads,
        num_kv_heads=k_cache.shape[2],
        head_dim=head_dim,
        scale=float(scale),
        sliding_window=window,
        dtype=native.NATIVE_DTYPES[q.dtype],
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
    op = "paged_prefill_attention"
    block_tables = native.int32(block_tables)
    _check_paged(op, q, k_cache, v_cache, block_tables, context_lens)
    native.check_cpu(op, query_start_loc=query_start_loc)
    num_seqs = context_lens.shape[0]
    if query_start_loc.shape != (num_seqs + 1,):
        raise ValueError(
            f"{op}: query_start_loc must be [num_seqs + 1] = [{num_seqs + 1}], "
            f"got {tuple(query_start_loc.shape)}"
        )
    window = _window(sliding_window)
    native.unsupported(op, supports_paged_attention(q, k_cache))
    context_lens, query_start_loc = native.int32(context_lens), native.int32(query_start_loc)
    out = torch.empty(q.shape, dtype=q.dtype)
    num_tokens, num_heads, head_dim = q.shape
    native.calls.paged_prefill_attention(
        out=out.data_ptr(),
        out_stride_token=num_heads * head_dim,
        out_stride_head=head_dim,
        q=q.data_ptr(),
        q_stride_token=q.stride(0),
        q_stride_head=q.stride(1),
        **_cache_args(k_cache, v_cache, block_tables),
        query_start_loc=query_start_loc.data_ptr(),
        context_lens=context_lens.data_ptr(),
        num_seqs=num_seqs,
        num_tokens=num_tokens,
        num_heads=num_heads,
        num_kv_heads=k_cache.shape[2],
        head_dim=head_dim,
        scale=float(scale),
        sliding_window=window,
        dtype=native.NATIVE_DTYPES[q.dtype],
    )
    return out
