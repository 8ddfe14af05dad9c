"""The 'cpp' backend's row-wise ops: RMSNorm (plain and fused with the residual add),
SiLU-and-mul, rotary embedding and the KV-cache store."""

from __future__ import annotations

import torch
from swiftserve.kernels import cpp_native as native
from swiftserve.kernels import reference


def _norm_args(op: str, x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Checks x [..., hidden] and weight [hidden]; False means 'use the reference'."""
    native.check_cpu(op, x=x, weight=weight)
    if x.dim() == 0 or weight.shape != (x.shape[-1],):
        raise ValueError(
            f"{op}: weight must be [hidden] = [{x.shape[-1] if x.dim() else '?'}], got {tuple(weight.shape)}"
        )
    native.check_rows(op, "x", x)
    # A weight of another dtype promotes the reference's result: keep those semantics there.
    return x.dtype in native.NATIVE_DTYPES and weight.dtype == x.dtype and weight.is_contiguous()


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if not _norm_args("rms_norm", x, weight):
        return reference.rms_norm(x, weight, eps)
    out = torch.empty(x.shape, dtype=x.dtype)
    hidden = x.shape[-1]
    native._C.rms_norm(
        out.data_ptr(),
        hidden,
        x.data_ptr(),
        x.stride(-2) if x.dim() > 1 else hidden,
        weight.data_ptr(),
        x.numel() // hidden if hidden else 0,
        hidden,
        float(eps),
        native.NATIVE_DTYPES[x.dtype],
    )
    return out


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> torch.Tensor:
    """residual += x; x = rms_norm(residual). Both in place; returns residual."""
    supported = _norm_args("fused_add_rms_norm", x, weight)
    native.check_cpu("fused_add_rms_norm", residual=residual)
    if residual.shape != x.shape:
        raise ValueError(
            f"fused_add_rms_norm: residual {tuple(residual.shape)} must match x {tuple(x.shape)}"
        )
    native.check_rows("fused_add_rms_norm", "residual", residual)
    if not supported or residual.dtype != x.dtype:
        return reference.fused_add_rms_norm(x, residual, weight, eps)
    hidden = x.shape[-1]
    native._C.fused_add_rms_norm(
        x.data_ptr(),
        x.stride(-2) if x.dim() > 1 else hidden,
        residual.data_ptr(),
        residual.stride(-2) if residual.dim() > 1 else hidden,
        weight.data_ptr(),
        x.numel() // hidden if hidden else 0,
        hidden,
        float(eps),
        native.NATIVE_DTYPES[x.dtype],
    )
    return residual


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x [..., 2d] -> silu(x[..., :d]) * x[..., d:]."""
    native.check_cpu("silu_and_mul", x=x)
    if x.dim() == 0 or x.shape[-1] % 2:
        raise ValueError(
            f"silu_and_mul: the last dimension must be even (gate and up halves), got {tuple(x.shape)}"
        )
    native.check_rows("silu_and_mul", "x", x)
    if x.dtype not in native.NATIVE_DTYPES:
        return reference.silu_and_mul(x)
    d = x.shape[-1] // 2
    out = torch.empty((*x.shape[:-1], d), dtype=x.dtype)
    if out.numel():
        native._C.silu_and_mul(
            out.data_ptr(),
            d,
            x.data_ptr(),
            x.stride(-2) if x.dim() > 1 else 2 * d,
            out.numel() // d,
            d,
            native.NATIVE_DTYPES[x.dtype],
        )
    return out


def store_kv(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """k, v [num_tokens, num_kv_heads, head_dim] written into the cache at slot_mapping [num_tokens]."""
    native.check_cpu("store_kv", k=k, v=v, k_cache=k_cache, v_cache=v_cache, slot_mapping=slot_mapping)
    if k.dim() != 3 or v.shape != k.shape or k_cache.dim() != 4 or k_cache.shape[2:] != k.shape[1:]:
        raise ValueError(
            "store_kv: k, v [tokens, kv_heads, head_dim] must match the cache [blocks, block_size, kv_heads, "
            f"head_dim], got {tuple(k.shape)}, {tuple(v.shape)} and {tuple(k_cache.shape)}"
        )
    if v_cache.shape != k_cache.shape or v_cache.stride() != k_cache.stride() or k_cache.stride(-1) != 1:
        raise ValueError(
            "store_kv: k_cache and v_cache need the same shape and strides, last dimension contiguous"
        )
    slots = native.int64(slot_mapping, "store_kv: slot_mapping")
    if slots.shape[0] != k.shape[0]:
        raise ValueError(f"store_kv: {k.shape[0]} tokens but {slots.shape[0]} slots")
    if not (k.dtype == v.dtype == k_cache.dtype == v_cache.dtype) or k.stride(-1) != 1 or v.stride(-1) != 1:
        reference.store_kv(k, v, k_cache, v_cache, slot_mapping)  # casts, or gathers odd strides
        return
    native._C.store_kv(
        k.data_ptr(),
        k.stride(0),
        k.stride(1),
        v.data_ptr(),
        v.stride(0),
        v.stride(1),
        k_cache.data_ptr(),
        v_cache.data_ptr(),
        k_cache.shape[0],
        k_cache.shape[1],
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        slots.data_ptr(),
        k.shape[0],
        k.shape[1],
        k.shape[2],
        k.element_size(),
    )


def rotary_embedding(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    is_neox: bool = True,
) -> None:
    """Rotates q [num_tokens, num_heads, head_dim] and k [num_tokens, num_kv_heads, head_dim] in place."""
    native.check_cpu("rotary_embedding", positions=positions, q=q, k=k, cos_sin_cache=cos_sin_cache)
    if q.dim() != 3 or k.dim() != 3 or k.shape[0] != q.shape[0] or k.shape[2] != q.shape[2]:
        raise ValueError(
            f"rotary_embedding: q [tokens, heads, head_dim] and k [tokens, kv_heads, head_dim] expected, "
            f"got {tuple(q.shape)} and {tuple(k.shape)}"
        )
    if cos_sin_cache.dim() != 2 or cos_sin_cache.shape[1] % 2 or cos_sin_cache.shape[1] > q.shape[2]:
        raise ValueError(
            f"rotary_embedding: cos_sin_cache must be [max_position, rot_dim] with an even rot_dim <= "
            f"head_dim ({q.shape[2]}), got {tuple(cos_sin_cache.shape)}"
        )
    positions = native.int64(positions, "rotary_embedding: positions")
    if positions.shape[0] != q.shape[0]:
        raise ValueError(f"rotary_embedding: {q.shape[0]} tokens but {positions.shape[0]} positions")
    if (
        q.dtype not in native.NATIVE_DTYPES
        or k.dtype != q.dtype
        or cos_sin_cache.dtype != torch.float32
        or not cos_sin_cache.is_contiguous()
        or q.stride(-1) != 1
        or k.stride(-1) != 1
    ):
        reference.rotary_embedding(positions, q, k, cos_sin_cache, is_neox)
        return
    native._C.rotary_embedding(
        positions.data_ptr(),
        q.data_ptr(),
        q.stride(0),
        q.stride(1),
        k.data_ptr(),
        k.stride(0),
        k.stride(1),
        cos_sin_cache.data_ptr(),
        cos_sin_cache.shape[0],
        q.shape[0],
        q.shape[1],
        k.shape[1],
        cos_sin_cache.shape[1],
        bool(is_neox),
        native.NATIVE_DTYPES[q.dtype],
    )
