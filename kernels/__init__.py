"""swiftserve.kernels: the ops models are built from, each with several backends.

Every op takes an optional `backend` keyword ('torch', 'triton', 'cpp', 'cuda', 'flash_attn');
left out, the fastest backend for the tensors' device that has a kernel for the inputs runs (see
dispatch.py). A named backend without one raises UnsupportedInputError. `reference.py` holds the
pure-torch ground truth for all of them.
"""

from __future__ import annotations

import torch
from swiftserve.kernels.dispatch import available_backends, resolve
from swiftserve.kernels.errors import UnsupportedInputError

__all__ = [
    "UnsupportedInputError",
    "available_backends",
    "fused_add_rms_norm",
    "linear",
    "paged_decode_attention",
    "paged_prefill_attention",
    "rms_norm",
    "rotary_embedding",
    "silu_and_mul",
    "store_kv",
]


def store_kv(k, v, k_cache, v_cache, slot_mapping, *, backend: str | None = None) -> None:
    """Scatter k, v [num_tokens, num_kv_heads, head_dim] into the paged cache at slot_mapping."""
    resolve("store_kv", k.device.type, backend)(k, v, k_cache, v_cache, slot_mapping)


def paged_decode_attention(
    q,
    k_cache,
    v_cache,
    block_tables,
    context_lens,
    scale: float,
    *,
    sliding_window: int | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """q [num_seqs, num_heads, head_dim] attends to each sequence's cached context."""
    fn = resolve("paged_decode_attention", q.device.type, backend)
    return fn(q, k_cache, v_cache, block_tables, context_lens, scale, sliding_window=sliding_window)


def paged_prefill_attention(
    q,
    k_cache,
    v_cache,
    block_tables,
    query_start_loc,
    context_lens,
    scale: float,
    *,
    sliding_window: int | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Varlen causal attention of new tokens q [num_tokens, num_heads, head_dim] over the paged cache."""
    fn = resolve("paged_prefill_attention", q.device.type, backend)
    return fn(
        q, k_cache, v_cache, block_tables, query_start_loc, context_lens, scale, sliding_window=sliding_window
    )


def rms_norm(x, weight, eps: float, *, backend: str | None = None) -> torch.Tensor:
    return resolve("rms_norm", x.device.type, backend)(x, weight, eps)


def fused_add_rms_norm(x, residual, weight, eps: float, *, backend: str | None = None) -> torch.Tensor:
    """residual += x; x = rms_norm(residual), both in place. Returns residual."""
    return resolve("fused_add_rms_norm", x.device.type, backend)(x, residual, weight, eps)


def rotary_embedding(
    positions, q, k, cos_sin_cache, *, is_neox: bool = True, backend: str | None = None
) -> None:
    """Rotate q and k in place by the cos/sin rows of `positions`."""
    resolve("rotary_embedding", q.device.type, backend)(positions, q, k, cos_sin_cache, is_neox=is_neox)


def silu_and_mul(x, *, backend: str | None = None) -> torch.Tensor:
    """x [..., 2d] -> silu(x[..., :d]) * x[..., d:]."""
    return resolve("silu_and_mul", x.device.type, backend)(x)


def linear(x, weight, bias=None, *, backend: str | None = None) -> torch.Tensor:
    """x [..., in_features] @ weight [out_features, in_features]^T (+ bias)."""
    return resolve("linear", x.device.type, backend)(x, weight, bias)
