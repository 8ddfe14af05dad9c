"""BlockPool: reference counts, the LRU free queue and the prefix-cache index, exactly."""

from __future__ import annotations

import pytest
from swiftserve.scheduler.block_pool import BlockPool


def free_queue(pool: BlockPool) -> list[int]:
    """The free queue, front (next to be allocated / evicted) first."""
    return list(pool._free)


def drain(pool: BlockPool) -> list[int]:
    """Allocate every free block; the order in which they come out is the eviction order."""
    return [pool.allocate() for _ in range(pool.num_free_blocks)]


def test_rejects_an_empty_pool():
    with pytest.raises(ValueError):
        BlockPool(0)


def test_fresh_pool_hands_out_blocks_in_id_order():
    pool = BlockPool(4)
    assert pool.num_blocks == 4 and pool.num_free_blocks == 4
    assert free_queue(pool) == [0, 1, 2, 3]
    assert pool.allocate() == 0
    assert pool.allocate() == 1
    assert pool.num_free_blocks == 2
    assert [b.ref_count for b in pool.blocks] == [1, 1, 0, 0]
    pool.check_integrity({0: 1, 1: 1})


def test_released_blocks_go_to_the_back_of_the_queue_lru():
    pool = BlockPool(5)
    assert [pool.allocate() for _ in range(3)] == [0, 1, 2]
    pool.release(1)
    pool.release(0)
    assert free_queue(pool) == [3, 4, 1, 0]
    pool.release(2)
    assert free_queue(pool) == [3, 4, 1, 0, 2]
    assert drain(pool) == [3, 4, 1, 0, 2]
    assert pool.num_free_blocks == 0


def test_double_release_raises():
    pool = BlockPool(2)
    b = pool.allocate()
    pool.release(b)
    with pytest.raises(RuntimeError):
        pool.release(b)
    with pytest.raises(RuntimeError):  # never taken at all
        pool.release(1)
    assert free_queue(pool) == [1, 0]
    pool.check_integrity({})


def test_shared_block_returns_to_the_queue_only_with_its_last_reference():
    pool = BlockPool(3)
    b = pool.allocate()
    pool.touch(b)  # a second user of an in-use block
    assert pool.blocks[b].ref_count == 2 and pool.num_free_blocks == 2
    pool.check_integrity({b: 2})
    pool.release(b)
    assert pool.blocks[b].ref_count == 1 and free_queue(pool) == [1, 2]
    pool.release(b)
    assert pool.blocks[b].ref_count == 0 and free_queue(pool) == [1, 2, 0]
    with pytest.raises(RuntimeError):
        pool.release(b)


def test_lookup_needs_the_hash_and_the_exact_tokens():
    pool = BlockPool(3)
    b = pool.allocate()
    pool.cache(b, 1234, (1, 2, 3, 4))
    assert pool.lookup(1234, (1, 2, 3, 4)) == b
    assert pool.lookup(1234, (1, 2, 3, 5)) is None  # hash collision with other tokens: no hit
    assert pool.lookup(999, (1, 2, 3, 4)) is None
    assert pool.blocks[b].block_hash == 1234 and pool.blocks[b].token_ids == (1, 2, 3, 4)


def test_freed_block_keeps_its_hash_and_can_be_taken_back():
    pool = BlockPool(3)
    b = pool.allocate()  # 0
    pool.cache(b, 7, (7, 7))
    pool.release(b)
    assert free_queue(pool) == [1, 2, 0]
    assert pool.lookup(7, (7, 7)) == 0  # still a prefix-cache hit while idle
    pool.touch(0)  # hit: leaves the free queue from the middle
    assert free_queue(pool) == [1, 2] and pool.blocks[0].ref_count == 1
    assert pool.blocks[0].block_hash == 7
    pool.check_integrity({0: 1})
    pool.release(0)
    assert free_queue(pool) == [1, 2, 0]  # back at the tail: most recently used
    pool.check_integrity({})


def test_allocation_evicts_cached_blocks_in_lru_order_and_drops_their_hash():
    pool = BlockPool(3)
    a, b, c = pool.allocate(), pool.allocate(), pool.allocate()
    for block_id, h in ((a, 100), (b, 101), (c, 102)):
        pool.cache(block_id, h, (h,))
    pool.release(b)
    pool.release(c)
    pool.release(a)
    assert free_queue(pool) == [1, 2, 0]
    assert pool.allocate() == 1  # least recently freed goes first
    assert pool.blocks[1].block_hash is None and pool.blocks[1].token_ids == ()
    assert pool.lookup(101, (101,)) is None
    assert pool.lookup(102, (102,)) == 2 and pool.lookup(100, (100,)) == 0
    pool.check_integrity({1: 1})
    # the evicted hash may be cached again, on another block
    pool.release(1)
    assert pool.allocate() == 2  # evicts 102 next
    assert pool.lookup(102, (102,)) is None
    pool.cache(2, 101, (101,))
    assert pool.lookup(101, (101,)) == 2
    pool.check_integrity({2: 1})


def test_first_block_with_a_hash_wins_and_a_hashed_block_keeps_its_hash():
    pool = BlockPool(3)
    a, b = pool.allocate(), pool.allocate()
    pool.cache(a, 5, (1,))
    pool.cache(b, 5, (1,))  # same prefix computed twice: the first copy stays indexed
    assert pool.lookup(5, (1,)) == a and pool.blocks[b].block_hash is None
    pool.cache(a, 6, (2,))  # already hashed: ignored
    assert pool.blocks[a].block_hash == 5 and pool.lookup(6, (2,)) is None
    pool.check_integrity({a: 1, b: 1})
    pool.release(a)
    pool.release(b)
    assert drain(pool) == [2, 0, 1]
    assert pool.lookup(5, (1,)) is None
    pool.check_integrity({0: 1, 1: 1, 2: 1})


def test_check_integrity_catches_disagreements():
    pool = BlockPool(3)
    b = pool.allocate()
    with pytest.raises(AssertionError):
        pool.check_integrity({})  # block 0 in use, nobody claims it
    with pytest.raises(AssertionError):
        pool.check_integrity({b: 2})
    with pytest.raises(AssertionError):
        pool.check_integrity({b: 1, 1: 1})  # block 1 claimed but free
    pool.check_integrity({b: 1})
    pool.cache(b, 9, (9,))
    pool._cached[10] = b  # a stale index entry
    with pytest.raises(AssertionError):
        pool.check_integrity({b: 1})
