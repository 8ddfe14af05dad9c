"""The 'cuda' backend: CUDA C++ kernels compiled at run time with NVRTC (through CuPy).

Only paged_decode_attention is here (csrc/cuda/paged_decode_attention.cu); the dispatcher takes
other ops from other backends. Each (dtype, head_dim, query heads per KV head) compiles once per
process, on first use, and CuPy caches the binary on disk. Available when torch sees a CUDA
device, CuPy imports and the .cu source is found (a source checkout or an editable install).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

try:
    import cupy
except ImportError:  # no CuPy: this backend is unavailable
    cupy = None

SOURCE = Path(__file__).resolve().parent.parent / "csrc" / "cuda" / "paged_decode_attention.cu"
PARTITION = 256  # context tokens per thread block: kPartition in the .cu file
THREADS = 128  # kThreads
MAX_GROUP = 16
HEAD_DIMS = (32, 64, 128, 256)
_DTYPE_CODES = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2}


def is_available() -> bool:
    return cupy is not None and torch.cuda.is_available() and SOURCE.is_file()


def status() -> str:
    if cupy is None:
        return "CuPy is not installed (NVRTC compiles the kernel through it)"
    if not torch.cuda.is_available():
        return "no CUDA device"
    if not SOURCE.is_file():
        return f"kernel source {SOURCE} not found (needs a source checkout or an editable install)"
    return f"NVRTC-compiled decode attention on {torch.cuda.get_device_name()}"


@functools.cache
def _kernels(dtype_code: int, head_dim: int, group: int):
    """(partition kernel, reduce kernel) for one configuration, compiled by NVRTC."""
    main = f"paged_decode_attention<{dtype_code}, {head_dim}, {group}>"
    reduce = f"paged_decode_attention_reduce<{dtype_code}, {head_dim}>"
    module = cupy.RawModule(
        code=SOURCE.read_text(), options=("--std=c++17",), name_expressions=(main, reduce)
    )
    return module.get_function(main), module.get_function(reduce)


def _ptr(t: torch.Tensor | None) -> np.uint64:
    return np.uint64(t.data_ptr() if t is not None else 0)


def _check(q, k_cache, v_cache, block_tables, context_lens) -> None:
    op = "cuda paged_decode_attention"
    for name, t in dict(
        q=q, k_cache=k_cache, v_cache=v_cache, block_tables=block_tables, context_lens=context_lens
    ).items():
        if not isinstance(t, torch.Tensor) or t.device.type != "cuda" or t.device != q.device:
            raise ValueError(f"{op}: {name} must be a CUDA tensor on {q.device}")
    if (
        q.dim() != 3
        or k_cache.dim() != 4
        or v_cache.shape != k_cache.shape
        or v_cache.stride() != k_cache.stride()
    ):
        raise ValueError(
            f"{op}: q [seqs, heads, head_dim] and matching k/v caches [blocks, block_size, kv_heads, "
            f"head_dim] expected, got {tuple(q.shape)}, {tuple(k_cache.shape)}, {tuple(v_cache.shape)}"
        )
    if not (q.dtype == k_cache.dtype == v_cache.dtype) or q.dtype not in _DTYPE_CODES:
        raise ValueError(
            f"{op}: q and caches must share a float16/bfloat16/float32 dtype, got "
            f"{q.dtype}, {k_cache.dtype}, {v_cache.dtype}"
        )
    num_kv_heads, head_dim = k_cache.shape[2], k_cache.shape[3]
    if q.shape[2] != head_dim or q.shape[1] % num_kv_heads or q.shape[1] // num_kv_heads > MAX_GROUP:
        raise ValueError(
            f"{op}: q {tuple(q.shape)} needs head_dim {head_dim} and 1..{MAX_GROUP} query heads per "
            f"KV head ({num_kv_heads} KV heads)"
        )
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"{op}: head_dim must be one of {HEAD_DIMS}, got {head_dim}")
    vector = 16 // k_cache.element_size()  # K/V rows are read in 16-byte pieces
    if (
        q.stride(-1) != 1
        or k_cache.stride(-1) != 1
        or k_cache.data_ptr() % 16
        or v_cache.data_ptr() % 16
        or any(s % vector for s in k_cache.stride()[:3])
    ):
        raise ValueError(
            f"{op}: q and the caches need a contiguous last dimension and 16-byte aligned K/V rows"
        )
    if block_tables.dim() != 2 or context_lens.shape != (q.shape[0],) or block_tables.shape[0] < q.shape[0]:
        raise ValueError(
            f"{op}: block_tables [seqs, max_blocks] and context_lens [seqs] expected, got "
            f"{tuple(block_tables.shape)} and {tuple(context_lens.shape)}"
        )


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
    _check(q, k_cache, v_cache, block_tables, context_lens)
    if sliding_window is not None and sliding_window < 1:
        raise ValueError(f"sliding_window must be a positive number of tokens or None, got {sliding_window}")
    block_tables = block_tables.to(torch.int32).contiguous()
    context_lens = context_lens.to(torch.int32).contiguous()
    num_seqs, num_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    out = torch.empty((num_seqs, num_heads, head_dim), dtype=q.dtype, device=q.device)
    if num_seqs == 0:
        return out
    # Partitions from the block table's capacity, not the real lengths: no device-to-host sync
    # (and graph-capturable); partitions past a sequence's end exit at once.
    max_len = block_tables.shape[1] * block_size
    if sliding_window is not None:
        max_len = min(max_len, sliding_window)
    num_partitions = max(1, -(-max_len // PARTITION))
    partial_out = partial_max = partial_sum = None
    if num_partitions > 1:
        partial_out = torch.empty(
            (num_seqs, num_heads, num_partitions, head_dim), dtype=torch.float32, device=q.device
        )
        partial_max = torch.empty((num_seqs, num_heads, num_partitions), dtype=torch.float32, device=q.device)
        partial_sum = torch.empty_like(partial_max)
    args = (
        _ptr(out),
        _ptr(partial_out),
        _ptr(partial_max),
        _ptr(partial_sum),
        _ptr(q),
        _ptr(k_cache),
        _ptr(v_cache),
        _ptr(block_tables),
        _ptr(context_lens),
        np.int64(q.stride(0)),
        np.int64(q.stride(1)),
        np.int64(k_cache.stride(0)),
        np.int64(k_cache.stride(1)),
        np.int64(k_cache.stride(2)),
        np.int32(num_heads),
        np.int32(block_size),
        np.int32(block_tables.shape[1]),
        np.int32(num_partitions),
        np.int32(sliding_window or 0),
        np.float32(scale),
    )
    main, reduce = _kernels(_DTYPE_CODES[q.dtype], head_dim, num_heads // num_kv_heads)
    stream = torch.cuda.current_stream(q.device)
    with cupy.cuda.Device(q.device.index), cupy.cuda.ExternalStream(stream.cuda_stream):
        main((num_partitions, num_kv_heads, num_seqs), (THREADS,), args)
        if num_partitions > 1:
            reduce((num_heads, num_seqs), (THREADS,), args)
    return out
