"""store_kv: scatter each token's K and V [num_kv_heads, head_dim] into its paged cache slot.

Grid (num_tokens,). Slot -1 marks a token not to store (padding). Bytes ~ 2 * 2 * num_tokens *
num_kv_heads * head_dim * element size (read k, v; write both caches).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from swiftserve.kernels.triton.common import next_pow2


# fmt: off
@triton.jit
def _store_kv_kernel(
    # pointers
    k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, slot_mapping_ptr,
    # strides
    stride_k_token, stride_k_head, stride_v_token, stride_v_head,
    stride_cache_block, stride_cache_token, stride_cache_head,
    # meta-parameters
    NUM_KV_HEADS: tl.constexpr, HEADS_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    token = tl.program_id(0)
    slot = tl.load(slot_mapping_ptr + token).to(tl.int64)
    if slot < 0:
        return
    offs_h = tl.arange(0, HEADS_PAD)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    mask = (offs_h[:, None] < NUM_KV_HEADS) & (offs_d[None, :] < HEAD_DIM)
    src = offs_h[:, None] * stride_k_head + offs_d[None, :]
    dst = (
        (slot // BLOCK_SIZE) * stride_cache_block + (slot % BLOCK_SIZE) * stride_cache_token
        + offs_h[:, None] * stride_cache_head + offs_d[None, :]
    )
    k = tl.load(k_ptr + token * stride_k_token + src, mask=mask)
    tl.store(k_cache_ptr + dst, k.to(k_cache_ptr.dtype.element_ty), mask=mask)
    v = tl.load(v_ptr + token * stride_v_token + offs_h[:, None] * stride_v_head + offs_d[None, :], mask=mask)
    tl.store(v_cache_ptr + dst, v.to(v_cache_ptr.dtype.element_ty), mask=mask)
# fmt: on


def store_kv(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """k, v [num_tokens, num_kv_heads, head_dim] -> k_cache, v_cache at slot_mapping (in place)."""
    if k.shape != v.shape or k.dim() != 3 or k_cache.dim() != 4:
        shapes = f"{tuple(k.shape)}, {tuple(v.shape)}"
        raise ValueError(f"expected k, v [tokens, kv_heads, head_dim] of one shape, got {shapes}")
    if k_cache.shape != v_cache.shape or k_cache.stride() != v_cache.stride():
        raise ValueError("k_cache and v_cache must share shape and strides")
    if k_cache.shape[2:] != k.shape[1:]:
        raise ValueError(f"k {tuple(k.shape)} does not fit cache {tuple(k_cache.shape)}")
    if slot_mapping.shape != (k.shape[0],):
        raise ValueError(f"slot_mapping must be [{k.shape[0]}], got {tuple(slot_mapping.shape)}")
    if k.stride(-1) != 1 or v.stride(-1) != 1 or k_cache.stride(-1) != 1:
        raise ValueError("k, v and the caches must be contiguous in head_dim")
    num_tokens, num_kv_heads, head_dim = k.shape
    block_size = k_cache.shape[1]
    if num_tokens == 0:
        return
    # The kernel casts to the cache dtype: fp32 K/V may go into a bf16 cache, as in the reference.
    # fmt: off
    _store_kv_kernel[(num_tokens,)](
        k, v, k_cache, v_cache, slot_mapping.contiguous(),
        k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        NUM_KV_HEADS=num_kv_heads, HEADS_PAD=next_pow2(num_kv_heads), HEAD_DIM=head_dim,
        HEAD_DIM_PAD=next_pow2(head_dim), BLOCK_SIZE=block_size,
        num_warps=min(max(next_pow2(num_kv_heads * head_dim) // 256, 1), 8),
    )
    # fmt: on
