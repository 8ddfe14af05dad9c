"""rotary_embedding: rotate q and k in place by the cos/sin rows of each token's position.

Grid (num_tokens,). One program loads its cos/sin row once and rotates every head of q and k.
Pairs (x1, x2) are (d, d + rot_dim/2) in neox style and (2i, 2i + 1) in GPT-J style; features
past rot_dim are left alone (partial rotary). Bytes ~ 2 * num_tokens * (num_heads +
num_kv_heads) * rot_dim * element size + the cos/sin rows.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from swiftserve.kernels.triton.common import next_pow2


# fmt: off
@triton.jit
def _rotate_heads(
    t_ptr, cos, sin, offs_half, half_mask, num_heads,
    stride_head,
    HEADS_PAD: tl.constexpr, HALF: tl.constexpr, IS_NEOX: tl.constexpr,
):
    """Rotates the [num_heads, rot_dim] front of one token's heads at t_ptr."""
    offs_h = tl.arange(0, HEADS_PAD)
    mask = (offs_h[:, None] < num_heads) & half_mask[None, :]
    if IS_NEOX:
        first = offs_half
        second = offs_half + HALF
    else:
        first = offs_half * 2
        second = offs_half * 2 + 1
    p1 = t_ptr + offs_h[:, None] * stride_head + first[None, :]
    p2 = t_ptr + offs_h[:, None] * stride_head + second[None, :]
    x1 = tl.load(p1, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(p2, mask=mask, other=0.0).to(tl.float32)
    tl.store(p1, (x1 * cos[None, :] - x2 * sin[None, :]).to(t_ptr.dtype.element_ty), mask=mask)
    tl.store(p2, (x2 * cos[None, :] + x1 * sin[None, :]).to(t_ptr.dtype.element_ty), mask=mask)
# fmt: on


# fmt: off
@triton.jit
def _rotary_kernel(
    # pointers
    q_ptr, k_ptr, positions_ptr, cos_sin_ptr,
    # strides
    stride_q_token, stride_q_head, stride_k_token, stride_k_head, stride_cos_sin_pos,
    # sizes
    num_heads, num_kv_heads,
    # meta-parameters
    HALF: tl.constexpr, HALF_PAD: tl.constexpr, HEADS_PAD: tl.constexpr, KV_HEADS_PAD: tl.constexpr,
    IS_NEOX: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    pos = tl.load(positions_ptr + token).to(tl.int64)
    offs_half = tl.arange(0, HALF_PAD)
    half_mask = offs_half < HALF
    row = cos_sin_ptr + pos * stride_cos_sin_pos  # [cos (HALF) | sin (HALF)]
    cos = tl.load(row + offs_half, mask=half_mask, other=0.0).to(tl.float32)
    sin = tl.load(row + HALF + offs_half, mask=half_mask, other=0.0).to(tl.float32)
    _rotate_heads(q_ptr + token * stride_q_token, cos, sin, offs_half, half_mask, num_heads, stride_q_head,
                  HEADS_PAD=HEADS_PAD, HALF=HALF, IS_NEOX=IS_NEOX)
    _rotate_heads(k_ptr + token * stride_k_token, cos, sin, offs_half, half_mask, num_kv_heads, stride_k_head,
                  HEADS_PAD=KV_HEADS_PAD, HALF=HALF, IS_NEOX=IS_NEOX)
# fmt: on


def rotary_embedding(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    is_neox: bool = True,
) -> None:
    """q [num_tokens, num_heads, head_dim], k [num_tokens, num_kv_heads, head_dim] rotated in place.

    q and k may be strided views (say of a fused qkv projection) as long as head_dim is contiguous.
    """
    if q.dim() != 3 or k.dim() != 3 or q.shape[0] != k.shape[0] or positions.shape != (q.shape[0],):
        # fmt: off
        raise ValueError(f"expected positions [T], q [T, heads, d], k [T, kv_heads, d]; got "
                         f"{tuple(positions.shape)}, {tuple(q.shape)}, {tuple(k.shape)}")
        # fmt: on
    rot_dim = cos_sin_cache.shape[-1]
    if rot_dim % 2 or rot_dim > min(q.shape[-1], k.shape[-1]):
        raise ValueError(f"rot_dim {rot_dim} must be even and at most head_dim")
    if q.stride(-1) != 1 or k.stride(-1) != 1 or cos_sin_cache.stride(-1) != 1:
        raise ValueError("q, k and cos_sin_cache must be contiguous in the last dim")
    num_tokens = q.shape[0]
    if num_tokens == 0:
        return
    half = rot_dim // 2
    # fmt: off
    _rotary_kernel[(num_tokens,)](
        q, k, positions.contiguous(), cos_sin_cache,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), cos_sin_cache.stride(0),
        q.shape[1], k.shape[1],
        HALF=half, HALF_PAD=next_pow2(half),
        HEADS_PAD=next_pow2(q.shape[1]), KV_HEADS_PAD=next_pow2(k.shape[1]),
        IS_NEOX=is_neox, num_warps=4,
    )
    # fmt: on
