"""The optional 'flash_attn' backend: FlashAttention-2's paged-KV entry points.

Available only with flash_attn installed and a CUDA device. FlashAttention-2 reads a paged cache
only when its block size is a multiple of 256, so the engine's 16-token blocks cannot use it:
that is why the dispatcher does not prefer it; callers name it (backend="flash_attn"), and the
GPU benchmark compares against it on a 256-token-block cache.

Sliding window: the reference lets a query at position p see keys p - window + 1 .. p, which is
flash-attn's window_size=(window - 1, 0).
"""

from __future__ import annotations

import torch

try:
    from flash_attn import flash_attn_varlen_func, flash_attn_with_kvcache
except ImportError:  # the dispatcher then sees is_available() False
    flash_attn_varlen_func = flash_attn_with_kvcache = None

__all__ = ["is_available", "paged_decode_attention", "paged_prefill_attention", "status"]

PAGE_MULTIPLE = 256


def is_available() -> bool:
    return flash_attn_with_kvcache is not None and torch.cuda.is_available()


def status() -> str:
    if flash_attn_with_kvcache is None:
        return "flash_attn is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device"
    return f"FlashAttention-2 paged KV (blocks of a multiple of {PAGE_MULTIPLE} tokens), named only"


def _check(q: torch.Tensor, k_cache: torch.Tensor) -> None:
    if k_cache.shape[1] % PAGE_MULTIPLE:
        raise ValueError(
            f"flash_attn needs a KV block size that is a multiple of {PAGE_MULTIPLE}, "
            f"got {k_cache.shape[1]}; use the triton backend"
        )
    if q.dtype not in (torch.float16, torch.bfloat16) or not q.is_cuda:
        raise ValueError(f"flash_attn runs fp16/bf16 on CUDA only, got {q.dtype} on {q.device}")


def _window(sliding_window: int | None) -> tuple[int, int]:
    return (-1, -1) if sliding_window is None else (sliding_window - 1, 0)


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
    _check(q, k_cache)
    out = flash_attn_with_kvcache(
        q.unsqueeze(1),
        k_cache,
        v_cache,  # [num_seqs, 1 query token, num_heads, head_dim]
        cache_seqlens=context_lens,
        block_table=block_tables,
        softmax_scale=scale,
        causal=True,
        window_size=_window(sliding_window),
    )
    return out.squeeze(1)


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
    """q [num_tokens, num_heads, head_dim] -> out like q. See kernels.reference.paged_prefill_attention.

    flash-attn aligns the causal mask bottom-right when seqlen_q < seqlen_k: the queries are the
    last tokens of each context, as here. Syncs once for the max lengths.
    """
    _check(q, k_cache)
    cu_seqlens_k = torch.zeros(context_lens.shape[0] + 1, dtype=torch.int32, device=q.device)
    torch.cumsum(context_lens, 0, dtype=torch.int32, out=cu_seqlens_k[1:])
    max_seqlen_q = int((query_start_loc[1:] - query_start_loc[:-1]).max())
    return flash_attn_varlen_func(
        q,
        k_cache,
        v_cache,
        cu_seqlens_q=query_start_loc,
        cu_seqlens_k=cu_seqlens_k,
        max_seqlen_q=max_seqlen_q,
        max_seqlen_k=int(context_lens.max()),
        softmax_scale=scale,
        causal=True,
        window_size=_window(sliding_window),
        block_table=block_tables,
    )
