"""Random paged-cache cases shared by the kernel tests and benchmarks.

Caches are filled with NaN first and only the slots of real tokens get values, so a kernel
that reads past a context, a padded block-table entry or an unused block returns NaN and fails.
Block tables are random permutations of block ids: non-contiguous and out of order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class PagedCache:
    k_cache: torch.Tensor  # [num_blocks, block_size, num_kv_heads, head_dim]
    v_cache: torch.Tensor
    block_tables: torch.Tensor  # int32 [num_seqs, max_blocks]
    context_lens: torch.Tensor  # int32 [num_seqs]


@dataclass
class DecodeCase:
    q: torch.Tensor  # [num_seqs, num_heads, head_dim]
    cache: PagedCache
    scale: float


@dataclass
class PrefillCase:
    q: torch.Tensor  # [num_tokens, num_heads, head_dim]
    cache: PagedCache
    query_start_loc: torch.Tensor  # int32 [num_seqs + 1]
    scale: float


def make_paged_cache(
    context_lens: list[int],
    num_kv_heads: int,
    head_dim: int,
    *,
    block_size: int = 16,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    seed: int = 0,
    spare_blocks: int = 3,
) -> PagedCache:
    """A cache holding random K/V for each sequence's context, in shuffled blocks."""
    gen = torch.Generator().manual_seed(seed)
    blocks_per_seq = [-(-ctx // block_size) for ctx in context_lens]
    num_blocks = sum(blocks_per_seq) + spare_blocks
    max_blocks = max(max(blocks_per_seq, default=1), 1)
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = torch.full(shape, float("nan"), dtype=dtype)
    v_cache = torch.full(shape, float("nan"), dtype=dtype)
    perm = torch.randperm(num_blocks, generator=gen)
    # Padding entries point at a real (poisoned or foreign) block: reading them must not happen.
    block_tables = torch.full((len(context_lens), max_blocks), int(perm[-1]), dtype=torch.int32)
    next_block = 0
    for seq, (ctx, nb) in enumerate(zip(context_lens, blocks_per_seq, strict=True)):
        ids = perm[next_block : next_block + nb]
        next_block += nb
        block_tables[seq, :nb] = ids.to(torch.int32)
        for pos in range(0, ctx, block_size):
            n = min(block_size, ctx - pos)
            block = int(ids[pos // block_size])
            k_cache[block, :n] = torch.randn(n, num_kv_heads, head_dim, generator=gen).to(dtype)
            v_cache[block, :n] = torch.randn(n, num_kv_heads, head_dim, generator=gen).to(dtype)
    return PagedCache(
        k_cache.to(device),
        v_cache.to(device),
        block_tables.to(device),
        torch.tensor(context_lens, dtype=torch.int32, device=device),
    )


def make_decode_case(
    context_lens: list[int],
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    *,
    block_size: int = 16,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    seed: int = 0,
) -> DecodeCase:
    cache = make_paged_cache(
        context_lens, num_kv_heads, head_dim, block_size=block_size, dtype=dtype, device=device, seed=seed
    )
    gen = torch.Generator().manual_seed(seed + 1)
    q = torch.randn(len(context_lens), num_heads, head_dim, generator=gen).to(dtype).to(device)
    return DecodeCase(q, cache, head_dim**-0.5)


def make_prefill_case(
    context_lens: list[int],
    query_lens: list[int],
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    *,
    block_size: int = 16,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    seed: int = 0,
) -> PrefillCase:
    """Each sequence's last query_lens[i] tokens of context_lens[i] are the new (query) tokens."""
    pairs = zip(query_lens, context_lens, strict=True)
    assert all(0 <= q <= c for q, c in pairs), "query_len must be <= context_len"
    cache = make_paged_cache(
        context_lens, num_kv_heads, head_dim, block_size=block_size, dtype=dtype, device=device, seed=seed
    )
    gen = torch.Generator().manual_seed(seed + 1)
    q = torch.randn(sum(query_lens), num_heads, head_dim, generator=gen).to(dtype).to(device)
    starts = [0]
    for n in query_lens:
        starts.append(starts[-1] + n)
    return PrefillCase(q, cache, torch.tensor(starts, dtype=torch.int32, device=device), head_dim**-0.5)


def random_lens(num_seqs: int, low: int, high: int, seed: int = 0) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(low, high + 1, (num_seqs,), generator=gen).tolist()
