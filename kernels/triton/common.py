"""Shared by the Triton attention kernels: input checks, and one paged K/V tile through online softmax.

The interpreter stores bfloat16 as raw uint16 and computes garbage for bf16 arithmetic and
tl.dot, so under the interpreter launchers pass UPCAST=True and tiles are widened to fp32 before
any math. On a GPU bf16 tiles go straight to the tensor cores; fp32 tiles use IEEE dots (not
TF32) so fp32 models keep fp32 accuracy.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from swiftserve.kernels.triton import INTERPRET

LOG2E = 1.4426950408889634


def next_pow2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def dot_flags(dtype: torch.dtype) -> dict:
    """UPCAST (widen tiles to fp32, interpreter only) and IEEE (fp32 tiles: no TF32)."""
    return {"UPCAST": INTERPRET, "IEEE": INTERPRET or dtype == torch.float32}


def check_paged_inputs(q, k_cache, v_cache, block_tables, context_lens) -> tuple[int, int]:
    """Shared input checks of the paged attention launchers; returns (query_group, block_size)."""
    if k_cache.shape != v_cache.shape or k_cache.stride() != v_cache.stride():
        raise ValueError(
            f"k_cache {tuple(k_cache.shape)} and v_cache {tuple(v_cache.shape)} must share shape and strides"
        )
    if k_cache.dim() != 4 or q.dim() != 3:
        raise ValueError("expected q [tokens, heads, d] and caches [blocks, block_size, kv_heads, d]")
    _, block_size, num_kv_heads, head_dim = k_cache.shape
    num_heads = q.shape[1]
    if q.shape[2] != head_dim or num_heads % num_kv_heads != 0:
        raise ValueError(f"q {tuple(q.shape)} does not fit {num_kv_heads} KV heads of dim {head_dim}")
    if block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two, got {block_size}")
    if q.stride(-1) != 1 or k_cache.stride(-1) != 1:
        raise ValueError("q and the caches must be contiguous in head_dim")
    if block_tables.dtype != torch.int32 or context_lens.dtype != torch.int32:
        raise ValueError("block_tables and context_lens must be int32")
    if block_tables.stride(-1) != 1 or context_lens.stride(0) != 1:
        raise ValueError("block_tables rows and context_lens must be contiguous")
    if q.dtype != k_cache.dtype:
        raise ValueError(f"q dtype {q.dtype} differs from cache dtype {k_cache.dtype}")
    return num_heads // num_kv_heads, block_size


# fmt: off
@triton.jit
def attend_kv_tile(
    acc, m_i, l_i, q, q_pos,
    k_cache_ptr, v_cache_ptr, block_table_row_ptr,
    kv_start, kv_end, head_offset, window, qk_scale,
    stride_block, stride_token, offs_d, d_mask,
    BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BOUNDS: tl.constexpr, CAUSAL: tl.constexpr, USE_WINDOW: tl.constexpr,
    UPCAST: tl.constexpr, IEEE: tl.constexpr,
):
    """One flash-attention step: rows q [M, D] attend to cached tokens kv_start..kv_start+BLOCK_N-1.

    Scores live in the log2 domain (qk_scale includes log2 e). m_i is the running row max, l_i the
    running row sum, acc the unnormalised output [M, D]. BOUNDS masks tokens >= kv_end, CAUSAL
    tokens after each row's position q_pos, USE_WINDOW tokens at or before q_pos - window.

    Helpers are inlined by hand: the interpreter re-patches triton.language on every jit call,
    which would dominate the CPU test time.

    token position p ──► block_table[p // BLOCK_SIZE] = physical block b
                     ──► element offset b * stride_block + (p % BLOCK_SIZE) * stride_token + head_offset
    (int64: caches exceed 2^31 elements)
    """
    k_pos = kv_start + tl.arange(0, BLOCK_N)
    kv_mask = k_pos < kv_end
    block_ids = tl.load(block_table_row_ptr + k_pos // BLOCK_SIZE, mask=kv_mask, other=0).to(tl.int64)
    offs = block_ids * stride_block + (k_pos % BLOCK_SIZE).to(tl.int64) * stride_token + head_offset
    k_ptrs = k_cache_ptr + offs[None, :] + offs_d[:, None]  # [D, N]: K arrives transposed for q @ k
    v_ptrs = v_cache_ptr + offs[:, None] + offs_d[None, :]  # [N, D]
    if BOUNDS:
        k = tl.load(k_ptrs, mask=kv_mask[None, :] & d_mask[:, None], other=0.0)
        v = tl.load(v_ptrs, mask=kv_mask[:, None] & d_mask[None, :], other=0.0)
    else:
        k = tl.load(k_ptrs, mask=d_mask[:, None], other=0.0)
        v = tl.load(v_ptrs, mask=d_mask[None, :], other=0.0)
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    if IEEE:  # fp32 tiles: no TF32
        s = tl.dot(q, k, input_precision="ieee") * qk_scale  # [M, N]
    else:
        s = tl.dot(q, k) * qk_scale
    if BOUNDS:
        s = tl.where(kv_mask[None, :], s, float("-inf"))
    if CAUSAL:
        s = tl.where(k_pos[None, :] <= q_pos[:, None], s, float("-inf"))
    if USE_WINDOW:
        s = tl.where(k_pos[None, :] > q_pos[:, None] - window, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    # A row that has seen only masked tokens keeps max -inf; subtracting 0 keeps exp2 at 0, not NaN.
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_safe)
    p = tl.exp2(s - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    if IEEE:
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
    else:
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return acc, m_new, l_i
# fmt: on
