"""Paged decode attention: one new query token per sequence over its paged KV cache.

Grid (num_seqs, num_kv_heads, num_partitions). One program takes all QUERY_GROUP query heads
that share a KV head (GQA/MQA), so each K/V tile is read once per KV head and feeds one tensor
core dot of [GROUP_PAD, D] x [D, BLOCK_N] (GROUP_PAD >= 16: the dot's minimum; padded rows are
zeros, never stored).

Split-K (flash-decoding): the context is cut into partitions of PARTITION_SIZE tokens so short
batches of long sequences still fill the GPU. Each partition writes its running max, sum and
unnormalised output in fp32, and a reduce kernel rescales and combines them:

    out = sum_p exp2(m_p - M) * acc_p / sum_p exp2(m_p - M) * l_p,   M = max_p m_p

With one partition the first kernel normalises and writes the output itself (no reduce).
Bytes moved ~ num_seqs * context * num_kv_heads * head_dim * 2 (K and V) * element size.
"""

from __future__ import annotations

from functools import cache

import torch
import triton
import triton.language as tl
from swiftserve.kernels.triton.common import LOG2E, attend_kv_tile, check_paged_inputs, dot_flags, next_pow2

BLOCK_N = 64  # tokens per K/V tile
MAX_PARTITIONS = 64  # bounds the reduce kernel's register tile


# fmt: off
@triton.jit
def _paged_decode_kernel(
    # pointers
    out_ptr, part_out_ptr, part_max_ptr, part_sum_ptr,
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, context_lens_ptr,
    # strides (caches: K and V share them)
    stride_q_seq, stride_q_head, stride_o_seq, stride_o_head,
    stride_cache_block, stride_cache_token, stride_cache_head, stride_bt_seq,
    # sizes and scalars
    num_heads, num_partitions, qk_scale, window,
    # meta-parameters
    QUERY_GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, PARTITION_SIZE: tl.constexpr,
    USE_PARTITIONS: tl.constexpr, USE_WINDOW: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr,
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    part = tl.program_id(2)

    context_len = tl.load(context_lens_ptr + seq)
    kv_lo = part * PARTITION_SIZE
    if USE_WINDOW:
        # The query sits at context_len - 1 and sees positions > context_len - 1 - window.
        kv_lo = tl.maximum(kv_lo, context_len - window)
    kv_hi = tl.minimum((part + 1) * PARTITION_SIZE, context_len)

    offs_g = tl.arange(0, GROUP_PAD)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    g_mask = offs_g < QUERY_GROUP
    d_mask = offs_d < HEAD_DIM
    heads = kv_head * QUERY_GROUP + offs_g  # [GROUP_PAD] query heads of this KV head

    q = tl.load(
        q_ptr + seq * stride_q_seq + heads[:, None] * stride_q_head + offs_d[None, :],
        mask=g_mask[:, None] & d_mask[None, :], other=0.0,
    )
    if UPCAST:
        q = q.to(tl.float32)
    q_pos = tl.zeros([GROUP_PAD], tl.int32) + context_len - 1  # unused: no CAUSAL/USE_WINDOW in tiles

    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM_PAD], tl.float32)
    block_table_row = block_tables_ptr + seq.to(tl.int64) * stride_bt_seq
    for start in range(kv_lo, kv_hi, BLOCK_N):
        acc, m_i, l_i = attend_kv_tile(
            acc, m_i, l_i, q, q_pos,
            k_cache_ptr, v_cache_ptr, block_table_row,
            start, kv_hi, kv_head * stride_cache_head, window, qk_scale,
            stride_cache_block, stride_cache_token, offs_d, d_mask,
            BLOCK_N=BLOCK_N, BLOCK_SIZE=BLOCK_SIZE, BOUNDS=True, CAUSAL=False, USE_WINDOW=False,
            UPCAST=UPCAST, IEEE=IEEE,
        )

    if USE_PARTITIONS:
        # [num_seqs, num_heads, num_partitions] fp32; part_out adds a trailing HEAD_DIM_PAD.
        row = (seq * num_heads + heads) * num_partitions + part  # [GROUP_PAD]
        tl.store(part_max_ptr + row, m_i, mask=g_mask)
        tl.store(part_sum_ptr + row, l_i, mask=g_mask)
        tl.store(part_out_ptr + row[:, None] * HEAD_DIM_PAD + offs_d[None, :], acc, mask=g_mask[:, None])
    else:
        out = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]  # context_len 0 (padding) gives zeros
        tl.store(
            out_ptr + seq * stride_o_seq + heads[:, None] * stride_o_head + offs_d[None, :],
            out.to(out_ptr.dtype.element_ty), mask=g_mask[:, None] & d_mask[None, :],
        )
# fmt: on


# fmt: off
@triton.jit
def _paged_decode_reduce_kernel(
    # pointers
    out_ptr, part_out_ptr, part_max_ptr, part_sum_ptr,
    # strides
    stride_o_seq, stride_o_head,
    # sizes
    num_heads, num_partitions,
    # meta-parameters
    HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, PARTS_PAD: tl.constexpr,
):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    offs_p = tl.arange(0, PARTS_PAD)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    p_mask = offs_p < num_partitions
    row = (seq * num_heads + head) * num_partitions + offs_p  # [PARTS_PAD]

    part_max = tl.load(part_max_ptr + row, mask=p_mask, other=float("-inf"))
    part_sum = tl.load(part_sum_ptr + row, mask=p_mask, other=0.0)
    m_max = tl.max(part_max, 0)
    m_max = tl.where(m_max == float("-inf"), 0.0, m_max)
    w = tl.exp2(part_max - m_max)  # empty partitions have max -inf: weight 0
    total = tl.sum(w * part_sum, 0)
    part_out_ptrs = part_out_ptr + row[:, None] * HEAD_DIM_PAD + offs_d[None, :]
    acc = tl.load(part_out_ptrs, mask=p_mask[:, None], other=0.0)
    out = tl.sum(acc * w[:, None], 0) / tl.where(total > 0.0, total, 1.0)
    out_ptrs = out_ptr + seq * stride_o_seq + head * stride_o_head + offs_d
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=offs_d < HEAD_DIM)
# fmt: on


@cache
def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 4
    return torch.cuda.get_device_properties(device).multi_processor_count


def _partition_size(max_context: int, num_programs: int, num_sms: int) -> int:
    """Tokens per split-K partition: 512 by default, smaller while the grid is under two waves,
    larger while there would be more than MAX_PARTITIONS partitions."""
    size = 512
    while size > BLOCK_N and num_programs * triton.cdiv(max_context, size) < 2 * num_sms:
        size //= 2
    while triton.cdiv(max_context, size) > MAX_PARTITIONS:
        size *= 2
    return size


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """q [num_seqs, num_heads, head_dim] -> out like q. See kernels.reference.paged_decode_attention."""
    query_group, block_size = check_paged_inputs(q, k_cache, v_cache, block_tables, context_lens)
    num_seqs, num_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    out = torch.empty_like(q)
    if num_seqs == 0:
        return out
    head_dim_pad = max(next_pow2(head_dim), 16)

    # Upper bound on any context length, known without a device sync (CUDA-graph safe).
    max_context = block_tables.shape[1] * block_size
    part_size = _partition_size(max_context, num_seqs * num_kv_heads, _num_sms(q.device))
    num_partitions = triton.cdiv(max_context, part_size)
    use_partitions = num_partitions > 1
    if use_partitions:
        part_shape = (num_seqs, num_heads, num_partitions)
        part_max = torch.empty(part_shape, dtype=torch.float32, device=q.device)
        part_sum = torch.empty_like(part_max)
        part_out = torch.empty(*part_shape, head_dim_pad, dtype=torch.float32, device=q.device)
    else:
        part_max = part_sum = part_out = out  # unused placeholders

    # fmt: off
    _paged_decode_kernel[(num_seqs, num_kv_heads, num_partitions)](
        out, part_out, part_max, part_sum,
        q, k_cache, v_cache, block_tables, context_lens,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_tables.stride(0),
        num_heads, num_partitions, scale * LOG2E, sliding_window or 0,
        QUERY_GROUP=query_group, GROUP_PAD=max(next_pow2(query_group), 16),
        HEAD_DIM=head_dim, HEAD_DIM_PAD=head_dim_pad, BLOCK_SIZE=block_size, BLOCK_N=BLOCK_N,
        PARTITION_SIZE=part_size, USE_PARTITIONS=use_partitions, USE_WINDOW=sliding_window is not None,
        **dot_flags(q.dtype), num_warps=4, num_stages=2,
    )
    # fmt: on
    if use_partitions:
        # fmt: off
        _paged_decode_reduce_kernel[(num_seqs, num_heads)](
            out, part_out, part_max, part_sum,
            out.stride(0), out.stride(1),
            num_heads, num_partitions,
            HEAD_DIM=head_dim, HEAD_DIM_PAD=head_dim_pad, PARTS_PAD=next_pow2(num_partitions),
            num_warps=4,
        )
        # fmt: on
    return out
