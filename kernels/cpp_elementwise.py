"""The 'cpp' backend's row-wise ops: RMSNorm (plain and fused with the residual add),
SiLU-and-mul, rotary embedding and the KV-cache store.

Each op checks its inputs (ValueError), then asks its `supports_*` predicate whether _C has a
kernel for them: the float32 / bfloat16 kernels take one dtype per call and contiguous rows, so
mixed dtypes (which the reference promotes or casts), float16 and strided last dimensions raise
UnsupportedInputError, and the dispatcher runs another backend.
"""

from __future__ import annotations

import torch
from swiftserve.kernels import cpp_native as native


def supports_norm(x: torch.Tensor, weight: torch.Tensor) -> str | None:
    if (reason := native.dtype_reason(x.dtype)) is not None:
        return reason
    if weight.dtype != x.dtype:
        return f"weight is {weight.dtype} and x {x.dtype} (the reference promotes; _C takes one dtype)"
    if not weight.is_contiguous():
        return "weight is not contiguous"
    return None


def supports_fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor) -> str | None:
    if residual.dtype != x.dtype:
        return f"residual is {residual.dtype} and x {x.dtype} (_C takes one dtype)"
    return supports_norm(x, weight)


def supports_rotary_embedding(q: torch.Tensor, k: torch.Tensor, cos_sin_cache: torch.Tensor) -> str | None:
    if (reason := native.dtype_reason(q.dtype)) is not None:
        return reason
    if k.dtype != q.dtype:
        return f"k is {k.dtype} and q {q.dtype} (_C takes one dtype)"
    if cos_sin_cache.dtype != torch.float32 or not cos_sin_cache.is_contiguous():
        return f"cos_sin_cache must be contiguous float32, got {cos_sin_cache.dtype}"
    if q.stride(-1) != 1 or k.stride(-1) != 1:
        return "q or k has a strided last dimension"
    return None


def supports_store_kv(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor
) -> str | None:
    """store_kv copies bytes, so any one dtype works (float16 too); the reference casts mixed ones."""
    if not (k.dtype == v.dtype == k_cache.dtype == v_cache.dtype):
        return (
            f"k, v, k_cache and v_cache are {k.dtype}, {v.dtype}, {k_cache.dtype}, {v_cache.dtype} "
            "(the reference casts)"
        )
    if k.stride(-1) != 1 or v.stride(-1) != 1:
        return "k or v has a strided last dimension"
    return None


def _check_norm(op: str, x: torch.Tensor, weight: torch.Tensor) -> None:
    """Checks x [..., hidden] and weight [hidden]."""
    native.check_cpu(op, x=x, weight=weight)
    if x.dim() == 0 or weight.shape != (x.shape[-1],):
        raise ValueError(
            f"{op}: weight must be [hidden] = [{x.shape[-1] if x.dim() else '?'}], got {tuple(weight.shape)}"
        )
    native.check_rows(op, "x", x)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    _check_norm("rms_norm", x, weight)
    native.unsupported("rms_norm", supports_norm(x, weight))
    out = torch.empty(x.shape, dtype=x.dtype)
    hidden = x.shape[-1]
    native.calls.rms_norm(
        out=out.data_ptr(),
        out_stride=hidden,
        x=x.data_ptr(),
        x_stride=x.stride(-2) if x.dim() > 1 else hidden,
        weight=weight.data_ptr(),
        num_rows=x.numel() // hidden if hidden else 0,
        hidden=hidden,
        eps=float(eps),
        dtype=native.NATIVE_DTYPES[x.dtype],
    )
    return out


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> torch.Tensor:
    """residual += x; x = rms_norm(residual). Both in place; returns residual."""
    op = "fused_add_rms_norm"
    _check_norm(op, x, weight)
    native.check_cpu(op, residual=residual)
    if residual.shape != x.shape:
        raise ValueError(f"{op}: residual {tuple(residual.shape)} must match x {tuple(x.shape)}")
    native.check_rows(op, "residual", residual)
    native.unsupported(op, supports_fused_add_rms_norm(x, residual, weight))
    hidden = x.shape[-1]
    native.calls.fused_add_rms_norm(
        x=x.data_ptr(),
        x_stride=x.stride(-2) if x.dim() > 1 else hidden,
        residual=residual.data_ptr(),
        residual_stride=residual.stride(-2) if residual.dim() > 1 else hidden,
        weight=weight.data_ptr(),
        num_rows=x.numel() // hidden if hidden else 0,
        hidden=hidden,
        eps=float(eps),
        dtype=native.NATIVE_DTYPES[x.dtype],
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
    native.unsupported("silu_and_mul", native.dtype_reason(x.dtype))
    d = x.shape[-1] // 2
    out = torch.empty((*x.shape[:-1], d), dtype=x.dtype)
    if out.numel():
        native.calls.silu_and_mul(
            out=out.data_ptr(),
            out_stride=d,
            x=x.data_ptr(),
            x_stride=x.stride(-2) if x.dim() > 1 else 2 * d,
            num_rows=out.numel() // d,
            d=d,
            dtype=native.NATIVE_DTYPES[x.dtype],
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
    native.unsupported("store_kv", supports_store_kv(k, v, k_cache, v_cache))
    cache_stride = k_cache.stride()
    native.calls.store_kv(
        k=k.data_ptr(),
        k_stride_token=k.stride(0),
        k_stride_head=k.stride(1),
        v=v.data_ptr(),
        v_stride_token=v.stride(0),
        v_stride_head=v.stride(1),
        k_cache=k_cache.data_ptr(),
        v_cache=v_cache.data_ptr(),
        num_blocks=k_cache.shape[0],
        block_size=k_cache.shape[1],
        cache_stride_block=cache_stride[0],
        cache_stride_token=cache_stride[1],
        cache_stride_head=cache_stride[2],
        slot_mapping=slots.data_ptr(),
        num_tokens=k.shape[0],
        num_kv_heads=k.shape[1],
        head_dim=k.shape[2],
        element_size=k.element_size(),
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
    native.unsupported("rotary_embedding", supports_rotary_embedding(q, k, cos_sin_cache))
    native.calls.rotary_embedding(
        positions=positions.data_ptr(),
        q=q.data_ptr(),
        q_stride_token=q.stride(0),
        q_stride_head=q.stride(1),
        k=k.data_ptr(),
        k_stride_token=k.stride(0),
        k_stride_head=k.stride(1),
        cos_sin_cache=cos_sin_cache.data_ptr(),
        max_position=cos_sin_cache.shape[0],
        num_tokens=q.shape[0],
        num_heads=q.shape[1],
        num_kv_heads=k.shape[1],
        rot_dim=cos_sin_cache.shape[1],
        is_neox=bool(is_neox),
        dtype=native.NATIVE_DTYPES[q.dtype],
    )
