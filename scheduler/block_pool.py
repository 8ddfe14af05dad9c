"""The pool of KV blocks: reference counts, the free queue and the prefix-cache index. No torch.

Free blocks wait in one queue, least recently freed first. A freed block that holds a full,
hashed block of tokens keeps its hash, so a later request with the same prefix can take it back
out of the queue (a prefix-cache hit); allocation pops from the front, so cached blocks are
reused in LRU order and their hash is dropped only then.

The pool can be resized so that the KV cache follows demand. Only ids below `num_blocks` are
handed out; `blocks` may run longer while a shrink waits for in-use tail blocks to come back:

    ids:   0 ........ num_blocks-1 | num_blocks ....... len(blocks)-1
           allocatable (free queue)  retired: never handed out again, dropped once all are free

Growing re-admits retired ids and appends new ones at the tail of the free queue; shrinking drops
the free tail at once and retires the rest, so the shrink completes on a later `resize`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(eq=False)
class Block:
    block_id: int
    ref_count: int = 0
    block_hash: bytes | None = None
    token_ids: tuple[int, ...] = ()  # a cheap second check on a hit


class BlockPool:
    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"the KV cache needs at least one block, got {num_blocks}")
        self.blocks = [Block(i) for i in range(num_blocks)]
        self._free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self._cached: dict[bytes, int] = {}  # block hash -> block id
        self._num_allocatable = num_blocks

    @property
    def num_blocks(self) -> int:
        """Blocks the scheduler may use (ids 0 .. num_blocks - 1)."""
        return self._num_allocatable

    @property
    def num_backed_blocks(self) -> int:
        """Ids that still exist, retired in-use ones included: what the KV memory must back."""
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    def allocate(self) -> int:
        """Take the least recently freed block, dropping whatever prefix it cached."""
        block_id, _ = self._free.popitem(last=False)
        block = self.blocks[block_id]
        if block.block_hash is not None:
            del self._cached[block.block_hash]
            block.block_hash, block.token_ids = None, ()
        block.ref_count = 1
        return block_id

    def lookup(self, block_hash: bytes, token_ids: tuple[int, ...]) -> int | None:
        """The block caching exactly these tokens after this prefix, if any."""
        block_id = self._cached.get(block_hash)
        if block_id is None or self.blocks[block_id].token_ids != token_ids:
            return None
        return block_id

    def touch(self, block_id: int) -> None:
        """Share a cached block with one more sequence (taking it off the free queue if idle)."""
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self._free[block_id]
        block.ref_count += 1

    def release(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count <= 0:
            raise RuntimeError(f"block {block_id} released more often than taken")
        block.ref_count -= 1
        if block.ref_count == 0 and block_id < self._num_allocatable:  # a retired id stays out
            self._free[block_id] = None

    def cache(self, block_id: int, block_hash: bytes, token_ids: tuple[int, ...]) -> None:
        """Index a full, computed block; the first block with a given prefix wins. A retired block
        is not indexed: a hit on it would keep the shrink waiting."""
        block = self.blocks[block_id]
        if block.block_hash is not None or block_hash in self._cached or block_id >= self._num_allocatable:
            return
        block.block_hash, block.token_ids = block_hash, token_ids
        self._cached[block_hash] = block_id

    # -- resizing ----------------------------------------------------------------------------------
    def resize(self, num_blocks: int) -> int:
        """Make ids 0 .. num_blocks - 1 the allocatable ones; the number of ids still backed.

        Growing is immediate. Shrinking drops the free tail at once and retires the in-use ids
        beyond num_blocks; the result is num_blocks once the tail is free (call again to finish)."""
        if num_blocks < 1:
            raise ValueError(f"the KV cache needs at least one block, got {num_blocks}")
        if num_blocks >= self._num_allocatable:
            self._grow(num_blocks)
        else:
            self._retire(num_blocks)
        while len(self.blocks) > self._num_allocatable and self.blocks[-1].ref_count == 0:
            self.blocks.pop()
        return len(self.blocks)

    def _grow(self, num_blocks: int) -> None:
        for block in self.blocks[self._num_allocatable : num_blocks]:  # retired ids come back
            if block.ref_count == 0:
                self._free[block.block_id] = None
        for block_id in range(len(self.blocks), num_blocks):
            self.blocks.append(Block(block_id))
            self._free[block_id] = None
        self._num_allocatable = num_blocks

    def _retire(self, num_blocks: int) -> None:
        for block in self.blocks[num_blocks:]:
            self._free.pop(block.block_id, None)
            if block.block_hash is not None:  # the pages go: so does what they cached
                del self._cached[block.block_hash]
                block.block_hash, block.token_ids = None, ()
        self._num_allocatable = num_blocks

    def free_retired_runs(self) -> list[tuple[int, int]]:
        """[start, end) runs of retired ids no sequence holds: backed, yet their memory can go."""
        runs: list[tuple[int, int]] = []
        for block in self.blocks[self._num_allocatable :]:
            if block.ref_count:
                continue
            if runs and runs[-1][1] == block.block_id:
                runs[-1] = (runs[-1][0], block.block_id + 1)
            else:
                runs.append((block.block_id, block.block_id + 1))
        return runs

    def check_integrity(self, expected_refs: dict[int, int]) -> None:
        """Raise AssertionError unless refs, the free queue and the cache index agree."""
        assert all(0 <= b < len(self.blocks) for b in expected_refs), "a block id past the pool"
        assert all(b < self._num_allocatable for b in self._free), "a retired id in the free queue"
        for block in self.blocks:
            refs = expected_refs.get(block.block_id, 0)
            is_allocatable = block.block_id < self._num_allocatable
            assert block.ref_count == refs, (
                f"block {block.block_id}: ref_count {block.ref_count} != {refs} users"
            )
            assert (block.block_id in self._free) == (refs == 0 and is_allocatable), (
                f"block {block.block_id}: free-queue mismatch"
            )
            assert is_allocatable or block.block_hash is None, f"retired block {block.block_id} is cached"
            if block.block_hash is not None:
                assert self._cached.get(block.block_hash) == block.block_id, (
                    f"block {block.block_id}: stale hash"
                )
        assert len(self._cached) == sum(b.block_hash is not None for b in self.blocks), "cache index leak"
