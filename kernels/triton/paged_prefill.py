"""Paged prefill attention: varlen causal attention of new query tokens over the paged KV cache.

Grid (query tiles, num_heads). Tiles never straddle sequences: sequence s owns the tile ids
query_start_loc[s] // BLOCK_M + s ..., so tiles_upper_bound = num_tokens // BLOCK_M + num_seqs
programs cover every batch without reading query_start_loc on the host; surplus programs exit.
Each program finds its sequence by binary search over those tile starts.

The new tokens are the last query_len of context_len, all already in the cache:

    key positions   0 ........................................ context_len - 1
    query rows                         [ tile rows ] ......... (query_len rows in all)
                                       ^ first_pos = context_len - query_len + tile * BLOCK_M
    keys < first_pos (rounded down to BLOCK_N) are visible to every row: no mask (loop 1);
    the rest up to the tile's last row is causally masked (loop 2). A sliding window masks all.

FLOPs ~ 4 * num_heads * head_dim * sum over sequences of query_len * (mean keys seen).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from swiftserve.kernels.triton import INTERPRET
from swiftserve.kernels.triton.common import LOG2E, attend_kv_tile, check_paged_inputs, dot_flags, next_pow2


@triton.jit
def _find_seq(query_start_loc_ptr, tile_id, num_seqs, BLOCK_M: tl.constexpr):
    """The last sequence s whose first tile id, query_start_loc[s] // BLOCK_M + s, is <= tile_id."""
    left: tl.int32 = 0
    right = num_seqs
    while left < right:
        mid = (left + right) // 2
        first_tile = tl.load(query_start_loc_ptr + mid) // BLOCK_M + mid
        if first_tile <= tile_id:
            left = mid + 1
        else:
            right = mid
    return left - 1


# fmt: off
@triton.jit
def _paged_prefill_kernel(
    # pointers
    out_ptr, q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, query_start_loc_ptr, context_lens_ptr,
    # strides (caches: K and V share them)
    stride_q_token, stride_q_head, stride_o_token, stride_o_head,
    stride_cache_block, stride_cache_token, stride_cache_head, stride_bt_seq,
    # sizes and scalars
    num_seqs, qk_scale, window,
    # meta-parameters
    QUERY_GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, USE_WINDOW: tl.constexpr,
    UPCAST: tl.constexpr, IEEE: tl.constexpr,
):
    tile_id = tl.program_id(0)
    head = tl.program_id(1)
    kv_head = head // QUERY_GROUP

    seq = _find_seq(query_start_loc_ptr, tile_id, num_seqs, BLOCK_M)
    q_start = tl.load(query_start_loc_ptr + seq)
    query_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
    tile = tile_id - (q_start // BLOCK_M + seq)
    if tile * BLOCK_M >= query_len:
        return
    context_len = tl.load(context_lens_ptr + seq)

    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)  # query index within the sequence
    row_mask = rows < query_len
    first_pos = context_len - query_len + tile * BLOCK_M
    q_pos = first_pos + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    d_mask = offs_d < HEAD_DIM
    tokens = (q_start + rows).to(tl.int64)

    q = tl.load(
        q_ptr + tokens[:, None] * stride_q_token + head * stride_q_head + offs_d[None, :],
        mask=row_mask[:, None] & d_mask[None, :], other=0.0,
    )
    if UPCAST:
        q = q.to(tl.float32)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM_PAD], tl.float32)
    block_table_row = block_tables_ptr + seq.to(tl.int64) * stride_bt_seq
    head_offset = kv_head * stride_cache_head
    kv_hi = tl.minimum(first_pos + BLOCK_M, context_len)  # one past the tile's last key

    if USE_WINDOW:
        full_end = 0
        masked_start = (tl.maximum(first_pos - window + 1, 0) // BLOCK_N) * BLOCK_N
    else:
        full_end = (first_pos // BLOCK_N) * BLOCK_N
        masked_start = full_end

    for start in range(0, full_end, BLOCK_N):
        acc, m_i, l_i = attend_kv_tile(
            acc, m_i, l_i, q, q_pos,
            k_cache_ptr, v_cache_ptr, block_table_row,
            start, full_end, head_offset, window, qk_scale,
            stride_cache_block, stride_cache_token, offs_d, d_mask,
            BLOCK_N=BLOCK_N, BLOCK_SIZE=BLOCK_SIZE, BOUNDS=False, CAUSAL=False, USE_WINDOW=False,
            UPCAST=UPCAST, IEEE=IEEE,
        )
    for start in range(masked_start, kv_hi, BLOCK_N):
        acc, m_i, l_i = attend_kv_tile(
            acc, m_i, l_i, q, q_pos,
            k_cache_ptr, v_cache_ptr, block_table_row,
            start, kv_hi, head_offset, window, qk_scale,
            stride_cache_block, stride_cache_token, offs_d, d_mask,
            BLOCK_N=BLOCK_N, BLOCK_SIZE=BLOCK_SIZE, BOUNDS=True, CAUSAL=True, USE_WINDOW=USE_WINDOW,
            UPCAST=UPCAST, IEEE=IEEE,
        )

    out = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]
    tl.store(
        out_ptr + tokens[:, None] * stride_o_token + head * stride_o_head + offs_d[None, :],
        out.to(out_ptr.dtype.element_ty), mask=row_mask[:, None] & d_mask[None, :],
    )
# fmt: on


def _tile_config(head_dim_pad: int, dtype: torch.dtype) -> dict:
    """BLOCK_M x BLOCK_N and warps. Hopper, bf16, d <= 128: 128 x 64 with 8 warps keeps the
    [128, d] fp32 accumulator and two K/V tiles in registers and shared memory. The interpreter
    gets small tiles: its cost grows with padded rows, and tests use short sequences."""
    if INTERPRET:
        return {"BLOCK_M": 32, "BLOCK_N": 64, "num_warps": 4, "num_stages": 1}
    if head_dim_pad > 128 or dtype == torch.float32:
        return {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2}
    return {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 2}


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
    """q [num_tokens, num_heads, head_dim] -> out like q. See kernels.reference.paged_prefill_attention."""
    query_group, block_size = check_paged_inputs(q, k_cache, v_cache, block_tables, context_lens)
    if query_start_loc.dtype != torch.int32 or query_start_loc.shape != (context_lens.shape[0] + 1,):
        raise ValueError("query_start_loc must be int32 [num_seqs + 1]")
    num_tokens, num_heads, head_dim = q.shape
    num_seqs = context_lens.shape[0]
    out = torch.empty_like(q)
    if num_tokens == 0 or num_seqs == 0:
        return out
    head_dim_pad = max(next_pow2(head_dim), 16)
    config = _tile_config(head_dim_pad, q.dtype)
    num_tiles = num_tokens // config["BLOCK_M"] + num_seqs

    # fmt: off
    _paged_prefill_kernel[(num_tiles, num_heads)](
        out, q, k_cache, v_cache, block_tables, query_start_loc.contiguous(), context_lens,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_tables.stride(0),
        num_seqs, scale * LOG2E, sliding_window or 0,
        QUERY_GROUP=query_group, HEAD_DIM=head_dim, HEAD_DIM_PAD=head_dim_pad, BLOCK_SIZE=block_size,
        USE_WINDOW=sliding_window is not None, **dot_flags(q.dtype), **config,
    )
    # fmt: on
    return out
