"""The 'cpp' backend: swiftserve._C's CPU kernels behind the signatures of kernels/reference.py.

Each wrapper checks its tensors (CPU, dtypes, shapes, a contiguous last dimension), allocates the
output and hands data pointers and element strides to _C, which releases the GIL while it runs.
float32 and bfloat16 run natively; what _C does not cover (float16, a head_dim it was not built
for, mixed dtypes that the reference casts) runs the torch reference instead, so the dispatcher
can always pick this backend on CPU.
"""

from __future__ import annotations

import torch
from swiftserve.kernels import reference
from swiftserve.kernels.cpp_linear import linear  # noqa: F401 - part of this backend's op set

try:
    from swiftserve import _C
except ImportError:  # the extension was not built: this backend is unavailable
    _C = None

_NATIVE_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}
_HEAD_DIMS = frozenset(_C.head_dims) if _C is not None else frozenset()
_MAX_GROUP = _C.max_group if _C is not None else 0


def is_available() -> bool:
    return _C is not None


def _check_cpu(op: str, **tensors: torch.Tensor) -> None:
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_cpu:
            raise ValueError(f"{op}: {name} is on {t.device}, the cpp backend runs on CPU tensors only")


def _check_rows(op: str, name: str, t: torch.Tensor) -> None:
    """t [..., n] must be addressable as rows of n contiguous elements with one row stride."""
    if t.stride(-1) != 1 or (t.dim() > 2 and not t.is_contiguous()):
        raise ValueError(
            f"{op}: {name} must be contiguous (or a 2-D view with contiguous rows), got strides {t.stride()}"
        )


def _int32(t: torch.Tensor) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"index tensors must be torch.Tensor, got {type(t).__name__}")
    if t.dtype == torch.int32 and t.stride(-1) == 1:
        return t
    if t.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"index tensors must be int32 or int64, got {t.dtype}")
    return t.to(torch.int32).contiguous()


def _paged_args(op: str, q, k_cache, v_cache, block_tables, context_lens) -> tuple | None:
    """Checks the paged-attention inputs; returns _C's cache arguments, or None to use the reference.

    The arguments, positional for speed (one call per layer and step): k_cache, v_cache,
    num_blocks, block_size, kv_stride_block, kv_stride_token, kv_stride_head, block_tables,
    max_blocks_per_seq, block_table_stride. block_tables must already be int32 (see _int32) and
    outlive the call: _C gets its address.
    """
    _check_cpu(
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
    if q.dtype not in _NATIVE_DTYPES or head_dim not in _HEAD_DIMS or q.shape[1] // num_kv_heads > _MAX_GROUP:
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
    block_tables = _int32(block_tables)
    cache = _paged_args("paged_decode_attention", q, k_cache, v_cache, block_tables, context_lens)
    if cache is None:
        return reference.paged_decode_attention(
            q, k_cache, v_cache, block_tables, context_lens, scale, sliding_window
        )
    if context_lens.shape[0] != q.shape[0]:
        raise ValueError(
            f"paged_decode_attention: {q.shape[0]} queries but {context_lens.shape[0]} context_lens"
        )
    context_lens = _int32(context_lens)
    out = torch.empty(q.shape, dtype=q.dtype)
    num_seqs, num_heads, head_dim = q.shape
    _C.paged_decode_attention(
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
        _NATIVE_DTYPES[q.dtype],
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
    block_tables = _int32(block_tables)
    cache = _paged_args("paged_prefill_attention", q, k_cache, v_cache, block_tables, context_lens)
    if cache is None:
        return reference.paged_prefill_attention(
            q, k_cache, v_cache, block_tables, query_start_loc, context_lens, scale, sliding_window
        )
    _check_cpu("paged_prefill_attention", query_start_loc=query_start_loc)
    num_seqs = context_lens.shape[0]
    if query_start_loc.shape != (num_seqs + 1,):
        raise ValueError(
            f"paged_prefill_attention: query_start_loc must be [num_seqs + 1] = [{num_seqs + 1}], "
            f"got {tuple(query_start_loc.shape)}"
        )
    context_lens, query_start_loc = _int32(context_lens), _int32(query_start_loc)
    out = torch.empty(q.shape, dtype=q.dtype)
    num_tokens, num_heads, head_dim = q.shape
    _C.paged_prefill_attention(
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
        _NATIVE_DTYPES[q.dtype],
    )
    return out


def _norm_args(op: str, x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Checks x [..., hidden] and weight [hidden]; False means 'use the reference'."""
    _check_cpu(op, x=x, weight=weight)
    if x.dim() == 0 or weight.shape != (x.shape[-1],):
        raise ValueError(
            f"{op}: weight must be [hidden] = [{x.shape[-1] if x.dim() else '?'}], got {tuple(weight.shape)}"
        )
    _check_rows(op, "x", x)
    # A weight of another dtype promotes the reference's result: keep those semantics there.
    return x.dtype in _NATIVE_DTYPES and weight.dtype == x.dtype and weight.is_contiguous()


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if not _norm_args("rms_norm", x, weight):
        return reference.rms_norm(x, weight, eps)
    out = torch.empty(x.shape, dtype=x.dtype)
    hidden = x.shape[-1]
    _C.rms_norm(
        out.data_ptr(),
        hidden,
        x.data_ptr(),
        x.stride(-2) if x.dim() > 1 else hidden,
        weight.data_ptr(),
        x.numel() // hidden if hidden else 0,
        hidden,
        float(eps),
        _NATIVE_DTYPES[x.dtype],
    )
    return out


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> torch.Tensor:
    """residual += x; x = rms_norm(residual). Both in place; returns residual."""
    native = _norm_args("fused_add_rms_norm", x, weight)
    _check_cpu("fused_add_rms_norm", residual=residual)
    if residual.shape != x.shape:
        raise ValueError(
            f"fused_add_rms_norm: residual {tuple(residual.shape)} must match x {tuple(x.shape)}"
        )
    _check_rows("fused_add_rms_norm", "residual", residual)
    if not native or residual.dtype != x.dtype:
        return reference.fused_add_rms_norm(x, residual, weight, eps)
    hidden = x.shape[-1]
    _C.fused_add_rms_norm(
        x.data_ptr(),
        x.stride(-2) if x.dim() > 1 else hidden,
        residual.data_ptr(),
        residual.stride(-2) if residual.dim() > 1 else hidden,
        weight.data_ptr(),
        x.numel() // hidden if hidden else 0,
        hidden,
        float(eps),
        _NATIVE_DTYPES[x.dtype],
    )
    return residual


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x [..., 2d] -> silu(x[..., :d]) * x[..., d:]."""
    _check_cpu("silu_and_mul", x=x)
    if x.dim() == 0 or x.shape[-1] % 2:
        raise ValueError(
            f"silu_and_mul: the last dimension must be even (gate and up halves), got {tuple(x.shape)}"
        )
    _check_rows("silu_and_mul", "x", x)
    if x.dtype not in _NATIVE_DTYPES:
        return reference.silu_and_mul(x)
    d = x.shape[-1] // 2
    out = torch.empty((*x.shape[:-1], d), dtype=x.dtype)
    if out.numel():
        _C.silu_and_mul(
            out.data_ptr(),
            d,
            x.data_ptr(),
            x.stride(-2) if x.dim() > 1 else 2 * d,
            out.numel() // d,
            d,
            _NATIVE_DTYPES[x.dtype],
        )
    return out


def _int64(t: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.dtype not in (torch.int32, torch.int64) or t.dim() != 1:
        raise ValueError(f"{name} must be a 1-D int32 or int64 tensor")
    return t if t.dtype == torch.int64 and t.is_contiguous() else t.to(torch.int64).contiguous()


def store_kv(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """k, v [num_tokens, num_kv_heads, head_dim] written into the cache at slot_mapping [num_tokens]."""
    _check_cpu("store_kv", k=k, v=v, k_cache=k_cache, v_cache=v_cache, slot_mapping=slot_mapping)
    if k.dim() != 3 or v.shape != k.shape or k_cache.dim() != 4 or k_cache.shape[2:] != k.shape[1:]:
        raise ValueError(
            "store_kv: k, v [tokens, kv_heads, head_dim] must match the cache [blocks, block_size, kv_heads, "
            f"head_dim], got {tuple(k.shape)}, {tuple(v.shape)} and {tuple(k_cache.shape)}"
        )
    if v_cache.shape != k_cache.shape or v_cache.stride() != k_cache.stride() or k_cache.stride(-1) != 1:
        raise ValueError(
            "store_kv: k_cache and v_cache need the same shape and strides, last dimension contiguous"
        )
    slots = _int64(slot_mapping, "store_kv: slot_mapping")
    if slots.shape[0] != k.shape[0]:
        raise ValueError(f"store_kv: {k.shape[0]} tokens but {slots.shape[0]} slots")
    if not (k.dtype == v.dtype == k_cache.dtype == v_cache.dtype) or k.stride(-1) != 1 or v.stride(-1) != 1:
        reference.store_kv(k, v, k_cache, v_cache, slot_mapping)  # casts, or gathers odd strides
        return
    _C.store_kv(
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
    _check_cpu("rotary_embedding", positions=positions, q=q, k=k, cos_sin_cache=cos_sin_cache)
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
    positions = _int64(positions, "rotary_embedding: positions")
    if positions.shape[0] != q.shape[0]:
        raise ValueError(f"rotary_embedding: {q.shape[0]} tokens but {positions.shape[0]} positions")
    if (
        q.dtype not in _NATIVE_DTYPES
        or k.dtype != q.dtype
        or cos_sin_cache.dtype != torch.float32
        or not cos_sin_cache.is_contiguous()
        or q.stride(-1) != 1
        or k.stride(-1) != 1
    ):
        reference.rotary_embedding(positions, q, k, cos_sin_cache, is_neox)
        return
    _C.rotary_embedding(
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
        _NATIVE_DTYPES[q.dtype],
    )
