"""Sizing, reserving and releasing one model's paged KV cache.

The byte budget a model is handed (kv_cache_memory) is its maximum, not an allocation. On CPU the
whole maximum is reserved as one anonymous private mmap: the kernel commits a page on its first
write, so only blocks in use cost RSS, and a shrink hands the pages of the dropped tail back with
madvise(MADV_DONTNEED) (they read as zeros if the tail grows again). One reserved range per model
keeps the layout, and so the attention kernels, unchanged:

    tensor [num_layers, 2, max_blocks, block_size, num_kv_heads, head_dim], C order, so each
    (layer, K/V) pair is one slab of max_blocks blocks, and a block range is contiguous per slab:

    slab (0,K)                slab (0,V)                slab (1,K) ...
    [b0 b1 .. bn-1 | bn ..]   [b0 b1 .. bn-1 | bn ..]   [b0 ..
                    ^ tail released: one madvise per slab, rounded inward to whole pages

On CUDA there is no lazily committed memory without the driver's virtual memory API (cuMemMap,
the real answer later), so the cache is allocated physically at its initial size: a shrink only
stops using the tail, and growth past the allocation is refused by the engine.
"""

from __future__ import annotations

import mmap

import torch

from swiftserve.models.llama_config import LlamaConfig


def bytes_per_block(cfg: LlamaConfig, block_size: int, dtype: torch.dtype) -> int:
    """Keys and values of block_size tokens across all layers."""
    per_token = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * dtype.itemsize
    return per_token * block_size


def num_blocks_for_budget(cfg: LlamaConfig, block_size: int, dtype: torch.dtype, budget_bytes: int) -> int:
    num_blocks = budget_bytes // bytes_per_block(cfg, block_size, dtype)
    if num_blocks < 1:
        need = bytes_per_block(cfg, block_size, dtype)
        raise ValueError(f"KV cache budget of {budget_bytes} bytes is below one block ({need} bytes)")
    return num_blocks


class KVCache:
    """The cache tensor and, on CPU, the mapping behind it (the tensor keeps the mapping alive too:
    torch.frombuffer holds a reference to its buffer)."""

    def __init__(self, tensor: torch.Tensor, mapping: mmap.mmap | None) -> None:
        self.tensor = tensor  # [num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim]
        self._mapping = mapping

    @property
    def num_blocks(self) -> int:
        """Blocks the memory can hold: the reserved maximum on CPU, the allocation on CUDA."""
        return self.tensor.shape[2]

    @property
    def commits_on_use(self) -> bool:
        """Whether unused blocks cost no memory (CPU), so the cache may start small and grow."""
        return self._mapping is not None

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of one layer's K and V caches, [num_blocks, block_size, num_kv_heads, head_dim] each."""
        return self.tensor[index, 0], self.tensor[index, 1]

    def release(self, first_block: int, end_block: int) -> None:
        """Return the physical pages of blocks [first_block, end_block) to the OS (CPU only; on CUDA
        the allocation stays whole). Their contents are lost: only call it for blocks no one uses."""
        if self._mapping is None or end_block <= first_block:
            return
        slab_bytes = self.tensor[0, 0].numel() * self.tensor.itemsize
        block_bytes = slab_bytes // self.num_blocks
        for slab in range(self.tensor.shape[0] * 2):
            start = _round_up(slab * slab_bytes + first_block * block_bytes)
            stop = _round_down(slab * slab_bytes + end_block * block_bytes)
            if stop > start:  # inward: a page shared with a kept block stays
                self._mapping.madvise(mmap.MADV_DONTNEED, start, stop - start)


def reserve_kv_cache(
    cfg: LlamaConfig, num_blocks: int, block_size: int, dtype: torch.dtype, device: torch.device
) -> KVCache:
    """A cache of num_blocks blocks: reserved and committed on use on CPU, allocated on CUDA."""
    shape = (cfg.num_layers, 2, num_blocks, block_size, cfg.num_kv_heads, cfg.head_dim)
    if device.type != "cpu":
        return KVCache(torch.zeros(shape, dtype=dtype, device=device), None)
    num_bytes = bytes_per_block(cfg, block_size, dtype) * num_blocks
    # Private: DONTNEED on a shared anonymous mapping would not free its (shmem) pages.
    mapping = mmap.mmap(-1, num_bytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    # Small pages: a transparent huge page would commit 2 MiB of a slab on its first write, and a
    # shrink would split it anyway. (Linux only; elsewhere the kernel's default stands.)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        mapping.madvise(mmap.MADV_NOHUGEPAGE)
    return KVCache(torch.frombuffer(mapping, dtype=dtype).view(shape), mapping)


def allocate_kv_cache(
    cfg: LlamaConfig, num_blocks: int, block_size: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The tensor alone, [num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim], zeros; each
    layer takes views of its K and V halves (flash-attn's paged layout)."""
    return reserve_kv_cache(cfg, num_blocks, block_size, dtype, device).tensor


def _round_up(offset: int) -> int:
    return -(-offset // mmap.PAGESIZE) * mmap.PAGESIZE


def _round_down(offset: int) -> int:
    return offset // mmap.PAGESIZE * mmap.PAGESIZE
