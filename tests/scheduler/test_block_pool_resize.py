"""Resizing the block pool at its tail, exactly: growth, shrinks that wait for in-use tail blocks,
the free queue's order and the prefix-cache index across a resize."""

from __future__ import annotations

import pytest
from swiftserve.scheduler.block_manager import BlockManager
from swiftserve.scheduler.block_pool import BlockPool
from swiftserve.scheduler.sequence import Sequence

BS = 4


def free_queue(pool: BlockPool) -> list[int]:
    return list(pool._free)


def test_growth_appends_new_ids_at_the_tail_of_the_free_queue():
    pool = BlockPool(3)
    assert [pool.allocate(), pool.allocate()] == [0, 1]
    pool.release(0)
    assert free_queue(pool) == [2, 0]
    assert pool.resize(6) == 6
    assert pool.num_blocks == pool.num_backed_blocks == 6 and pool.num_free_blocks == 5
    assert free_queue(pool) == [2, 0, 3, 4, 5]  # the LRU order of the old blocks is kept
    pool.check_integrity({1: 1})
    assert [pool.allocate() for _ in range(5)] == [2, 0, 3, 4, 5]


def test_shrink_drops_a_free_tail_at_once_with_its_hashes():
    pool = BlockPool(6)
    ids = [pool.allocate() for _ in range(6)]
    for block_id in ids:
        pool.cache(block_id, bytes([block_id]), (block_id,))
    for block_id in ids:
        if block_id != 1:
            pool.release(block_id)
    assert pool.resize(2) == 2
    assert pool.num_blocks == pool.num_backed_blocks == 2
    assert free_queue(pool) == [0]
    assert pool.lookup(bytes([0]), (0,)) == 0  # a kept block keeps its cached prefix
    assert all(pool.lookup(bytes([i]), (i,)) is None for i in range(2, 6))
    assert len(pool._cached) == 2  # blocks 0 and 1
    pool.check_integrity({1: 1})


def test_shrink_stops_at_an_in_use_tail_block_and_finishes_once_it_is_released():
    pool = BlockPool(8)
    held = [pool.allocate() for _ in range(6)]  # 0..5
    for block_id in (0, 1, 2, 3):
        pool.release(block_id)
    # ids 4 and 5 are in use: the tail 6, 7 goes now, 4 and 5 are retired
    assert pool.resize(3) == 6
    assert pool.num_blocks == 3 and pool.num_backed_blocks == 6
    assert free_queue(pool) == [0, 1, 2]  # 3 is retired: free, but never handed out again
    pool.check_integrity({4: 1, 5: 1})
    pool.release(4)
    assert free_queue(pool) == [0, 1, 2]  # a released retired id stays out of the queue
    assert pool.resize(3) == 6  # 5 still holds the tail
    pool.release(held[5])
    assert pool.resize(3) == 3
    assert pool.num_backed_blocks == 3 and free_queue(pool) == [0, 1, 2]
    pool.check_integrity({})


def test_free_retired_runs_name_the_retired_ids_no_one_holds():
    pool = BlockPool(10)
    [pool.allocate() for _ in range(10)]
    for block_id in (0, 3, 4, 6, 8):
        pool.release(block_id)
    assert pool.free_retired_runs() == []  # nothing retired yet
    assert pool.resize(2) == 10  # 9 in use holds the tail; 2..8 retired
    assert pool.free_retired_runs() == [(3, 5), (6, 7), (8, 9)]
    pool.release(5)
    assert pool.free_retired_runs() == [(3, 7), (8, 9)]
    pool.release(9)
    assert pool.resize(2) == 8  # 9 and 8 go; 7 still in use
    assert pool.free_retired_runs() == [(3, 7)]
    pool.check_integrity({1: 1, 2: 1, 7: 1})


def test_growth_after_a_partial_shrink_readmits_the_retired_ids():
    pool = BlockPool(6)
    [pool.allocate() for _ in range(6)]
    for block_id in (0, 1, 2, 3, 5):
        pool.release(block_id)
    assert pool.resize(2) == 5  # 5 dropped, 4 in use keeps 2..4 backed
    assert free_queue(pool) == [0, 1]
    assert pool.resize(4) == 5  # 2 and 3 come back; 4 is still retired and in use
    assert free_queue(pool) == [0, 1, 2, 3]
    pool.check_integrity({4: 1})
    pool.release(4)
    assert free_queue(pool) == [0, 1, 2, 3]
    assert pool.resize(7) == 7  # 4 rejoins as a free id, then the new 5 and 6
    assert free_queue(pool) == [0, 1, 2, 3, 4, 5, 6]
    pool.check_integrity({})


def test_a_retired_in_use_block_is_not_cached():
    pool = BlockPool(4)
    ids = [pool.allocate() for _ in range(4)]
    for block_id in ids[:3]:
        pool.release(block_id)
    assert pool.resize(2) == 4
    pool.cache(3, b"late", (3,))  # its step finishes after the shrink: not indexed
    assert pool.lookup(b"late", (3,)) is None and pool.blocks[3].block_hash is None
    pool.check_integrity({3: 1})


def test_resize_rejects_an_empty_pool():
    pool = BlockPool(2)
    with pytest.raises(ValueError):
        pool.resize(0)


def test_check_integrity_catches_a_retired_block_in_the_free_queue():
    pool = BlockPool(4)
    [pool.allocate() for _ in range(4)]
    pool.release(2)
    assert pool.resize(2) == 4  # 2 is retired and free, 3 retired and in use
    pool.check_integrity({0: 1, 1: 1, 3: 1})
    pool._free[2] = None
    with pytest.raises(AssertionError):
        pool.check_integrity({0: 1, 1: 1, 3: 1})
    del pool._free[2]
    pool._free[7] = None  # an id that no longer exists
    with pytest.raises(AssertionError):
        pool.check_integrity({0: 1, 1: 1, 3: 1})


# -- the block manager across resizes ---------------------------------------------------------------
def run(bm: BlockManager, seq: Sequence, n: int, cached=()) -> None:
    """Allocate room for n tokens, compute them and index full blocks, as a scheduler step does."""
    assert bm.allocate(seq, n, list(cached))
    before = seq.num_computed_tokens
    seq.num_computed_tokens += n
    bm.cache_computed_blocks(seq, before)


def test_prefix_cache_hits_survive_a_grow_and_a_shrink_that_keeps_their_blocks():
    bm = BlockManager(4, BS)
    a = Sequence.from_prompt(0, list(range(9)))  # blocks [0..3][4..7][8]
    run(bm, a, 9)
    assert a.block_ids == [0, 1, 2]
    bm.free(a)
    assert bm.resize(10) == 10
    b = Sequence.from_prompt(1, list(range(9)))
    assert bm.find_cached_prefix(b) == [0, 1]  # hit across the growth
    run(bm, b, 1, [0, 1])
    assert b.block_ids == [0, 1, 3]  # 3, never used, led the free queue [3, 2, 1, 0, 4, ...]
    bm.check_integrity([b])
    bm.free(b)
    assert bm.resize(2) == 2  # the tail is free: it goes
    c = Sequence.from_prompt(2, list(range(9)))
    assert bm.find_cached_prefix(c) == [0, 1]  # hit across the shrink
    assert not bm.allocate(c, 1, [0, 1])  # the third block no longer exists
    bm.check_integrity([])


def test_sequences_grow_into_new_blocks_and_leak_nothing():
    bm = BlockManager(2, BS)
    a = Sequence.from_prompt(0, list(range(8)))
    run(bm, a, 8)
    assert bm.num_free_blocks == 0 and bm.num_used_blocks == 2
    a.append_token(100)
    assert not bm.allocate(a, 1)
    assert bm.resize(3) == 3
    run(bm, a, 1)
    assert a.block_ids == [0, 1, 2] and bm.usage == 1.0
    bm.check_integrity([a])
    assert bm.resize(1) == 3  # all three in use: nothing can go
    assert bm.num_blocks == 1 and bm.num_used_blocks == 1  # of the one allocatable id
    bm.free(a)
    assert bm.resize(1) == 1 and bm.num_free_blocks == 1
    bm.check_integrity([])
