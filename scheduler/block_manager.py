"""Maps sequences to KV blocks: allocation, growth, prefix-cache hits and release. No torch.

Block hashes chain: the hash of block i covers its own tokens and the hash of block i - 1,
so equal hashes mean equal whole prefixes.

    tokens:  [t0 .. t15][t16 .. t31][t32 .. t40]
    hashes:   h0 = H(-, t0..15)   h1 = H(h0, t16..31)   (partial block: no hash)
"""

from __future__ import annotations

import hashlib
from array import array

from swiftserve.scheduler.block_pool import BlockPool
from swiftserve.scheduler.sequence import Sequence

# A prefix-cache hit list (find_cached_prefix), or none: () by default, so no list is shared.
CachedIds = list[int] | tuple[int, ...]
_ROOT_HASH = b"swiftserve-prefix-root"


def chain_hash(parent: bytes, token_ids: tuple[int, ...]) -> bytes:
    """sha256 over the parent's hash and this block's tokens. Token ids come from clients, so a
    weak hash would let a crafted prompt collide with another user's prefix and read its KV."""
    return hashlib.sha256(parent + array("q", token_ids).tobytes()).digest()


def _blocks_for(num_tokens: int, block_size: int) -> int:
    return (num_tokens + block_size - 1) // block_size


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        self.pool = BlockPool(num_blocks)
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free_blocks

    @property
    def num_blocks(self) -> int:
        return self.pool.num_blocks

    @property
    def num_backed_blocks(self) -> int:
        return self.pool.num_backed_blocks

    @property
    def num_used_blocks(self) -> int:
        """Allocatable blocks held by live sequences (cached idle blocks count as free)."""
        return self.num_blocks - self.num_free_blocks

    def resize(self, num_blocks: int) -> int:
        """Grow or shrink the pool at its tail (BlockPool.resize); the number of ids still backed."""
        return self.pool.resize(num_blocks)

    def free_retired_runs(self) -> list[tuple[int, int]]:
        return self.pool.free_retired_runs()

    def _block_tokens(self, seq: Sequence, index: int) -> tuple[int, ...]:
        return tuple(seq.token_ids[index * self.block_size : (index + 1) * self.block_size])

    def _hash_full_blocks(self, seq: Sequence, num_tokens: int) -> list[bytes]:
        """Extend seq.block_hashes over the full blocks among its first num_tokens tokens."""
        for index in range(len(seq.block_hashes), num_tokens // self.block_size):
            parent = seq.block_hashes[-1] if seq.block_hashes else _ROOT_HASH
            seq.block_hashes.append(chain_hash(parent, self._block_tokens(seq, index)))
        return seq.block_hashes

    def find_cached_prefix(self, seq: Sequence) -> list[int]:
        """Block ids caching the longest prefix of seq, leaving at least one token to compute
        (the model must run on the last token to produce logits)."""
        if not self.enable_prefix_caching:
            return []
        hashes = self._hash_full_blocks(seq, seq.num_tokens - 1)
        hits = []
        for index, block_hash in enumerate(hashes):
            block_id = self.pool.lookup(block_hash, self._block_tokens(seq, index))
            if block_id is None:
                break
            hits.append(block_id)
        return hits

    def num_blocks_needed(self, seq: Sequence, num_new_tokens: int, cached: CachedIds = ()) -> int:
        """Blocks to take from the free queue to hold num_new_tokens more tokens."""
        if cached:  # admission: the hits become the sequence's first blocks
            num_held, num_computed = len(cached), len(cached) * self.block_size
        else:
            num_held, num_computed = len(seq.block_ids), seq.num_computed_tokens
        needed = _blocks_for(num_computed + num_new_tokens, self.block_size) - num_held
        reclaimed = sum(self.pool.blocks[b].ref_count == 0 for b in cached)  # idle hits leave the queue too
        return max(needed, 0) + reclaimed

    def allocate(self, seq: Sequence, num_new_tokens: int, cached: CachedIds = ()) -> bool:
        """Give seq room for num_new_tokens more tokens, first taking over its cached prefix
        (on admission). Returns False, changing nothing, when blocks are short."""
        if self.num_blocks_needed(seq, num_new_tokens, cached) > self.num_free_blocks:
            return False
        if cached:
            for block_id in cached:
                self.pool.touch(block_id)
            seq.block_ids = list(cached)
            seq.num_computed_tokens = len(cached) * self.block_size
            if seq.num_preemptions == 0:  # report prompt hits only, not a recompute's own outputs
                seq.num_cached_tokens = min(seq.num_computed_tokens, seq.num_prompt_tokens)
        target = _blocks_for(seq.num_computed_tokens + num_new_tokens, self.block_size)
        while len(seq.block_ids) < target:
            seq.block_ids.append(self.pool.allocate())
        return True

    def cache_computed_blocks(self, seq: Sequence, num_previously_computed: int = 0) -> None:
        """Index the blocks that became full of computed tokens since num_previously_computed."""
        if not self.enable_prefix_caching:
            return
        hashes = self._hash_full_blocks(seq, seq.num_computed_tokens)
        for index in range(
            num_previously_computed // self.block_size, seq.num_computed_tokens // self.block_size
        ):
            self.pool.cache(seq.block_ids[index], hashes[index], self._block_tokens(seq, index))

    def free(self, seq: Sequence) -> None:
        """Release seq's blocks, tail first, so that a prefix's head outlives its tail in the LRU."""
        for block_id in reversed(seq.block_ids):
            self.pool.release(block_id)
        seq.block_ids = []
        seq.num_computed_tokens = 0

    def check_integrity(self, live: list[Sequence]) -> None:
        refs: dict[int, int] = {}
        for seq in live:
            assert len(seq.block_ids) == len(set(seq.block_ids)), f"seq {seq.seq_id} holds a block twice"
            assert len(seq.block_ids) * self.block_size >= seq.num_computed_tokens, (
                f"seq {seq.seq_id} overflows"
            )
            for block_id in seq.block_ids:
                refs[block_id] = refs.get(block_id, 0) + 1
        self.pool.check_integrity(refs)

    @property
    def usage(self) -> float:
        """Fraction of blocks in use by live sequences (cached idle blocks count as free)."""
        return 1.0 - self.num_free_blocks / self.num_blocks
