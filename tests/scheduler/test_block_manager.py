"""BlockManager: allocation, growth, chained prefix hashes, cache hits and release, exactly.

Block size 4 throughout: a 10-token prompt fills blocks [t0..t3][t4..t7] and half of a third.
"""

from __future__ import annotations

import pytest
from swiftserve.scheduler import block_manager as bm_module
from swiftserve.scheduler.block_manager import BlockManager
from swiftserve.scheduler.sequence import Sequence

BS = 4


def seq_of(seq_id: int, tokens) -> Sequence:
    return Sequence.from_prompt(seq_id, list(tokens))


def run(bm: BlockManager, seq: Sequence, n: int, cached=()) -> None:
    """Allocate room for n tokens, compute them and index full blocks, as a scheduler step does."""
    assert bm.allocate(seq, n, list(cached))
    before = seq.num_computed_tokens
    seq.num_computed_tokens += n
    bm.cache_computed_blocks(seq, before)


def free_queue(bm: BlockManager) -> list[int]:
    return list(bm.pool._free)


def hashed(bm: BlockManager) -> list[int]:
    return [b.block_id for b in bm.pool.blocks if b.block_hash is not None]


def test_allocation_and_growth_take_blocks_one_block_at_a_time():
    bm = BlockManager(6, BS)
    a = seq_of(0, range(10))
    assert bm.num_blocks_needed(a, 10) == 3
    run(bm, a, 10)
    assert a.block_ids == [0, 1, 2] and a.num_computed_tokens == 10
    assert bm.num_free_blocks == 3 and free_queue(bm) == [3, 4, 5]
    assert hashed(bm) == [0, 1]  # the partial third block is not indexed
    assert len(a.block_hashes) == 2
    # decode: tokens 11 and 12 still fit block 2; token 13 needs a fourth block
    a.append_token(100)
    assert bm.num_blocks_needed(a, 1) == 0
    run(bm, a, 1)
    a.append_token(101)
    run(bm, a, 1)
    assert a.block_ids == [0, 1, 2] and a.num_computed_tokens == 12
    assert hashed(bm) == [0, 1, 2]  # block 2 became full of computed tokens
    a.append_token(102)
    assert bm.num_blocks_needed(a, 1) == 1
    run(bm, a, 1)
    assert a.block_ids == [0, 1, 2, 3] and bm.num_free_blocks == 2
    assert bm.usage == pytest.approx(4 / 6)
    bm.check_integrity([a])


def test_block_hashes_chain_over_the_whole_prefix():
    bm = BlockManager(9, BS)
    a = seq_of(0, [1, 2, 3, 4, 5, 6, 7, 8, 9])
    b = seq_of(1, [1, 2, 3, 4, 5, 6, 7, 8, 0])
    c = seq_of(2, [0, 2, 3, 4, 5, 6, 7, 8, 9])  # same second block, different first
    for s in (a, b, c):
        run(bm, s, 9)
    h0 = bm_module.chain_hash(bm_module._ROOT_HASH, (1, 2, 3, 4))
    assert a.block_hashes == [h0, bm_module.chain_hash(h0, (5, 6, 7, 8))]
    assert b.block_hashes == a.block_hashes
    assert c.block_hashes[0] != a.block_hashes[0] and c.block_hashes[1] != a.block_hashes[1]
    # b computed the same prefix as a after it: the first copies stay indexed
    assert hashed(bm) == [0, 1, 6, 7]
    assert b.block_ids == [3, 4, 5]


def test_find_cached_prefix_exact_hits_leave_one_token_to_compute():
    bm = BlockManager(8, BS)
    a = seq_of(0, range(10))
    run(bm, a, 10)  # blocks 0, 1 cached
    assert bm.find_cached_prefix(seq_of(1, range(10))) == [0, 1]
    assert bm.find_cached_prefix(seq_of(2, range(9))) == [0, 1]
    assert bm.find_cached_prefix(seq_of(3, range(8))) == [0]  # all 8 cached, but the last must run
    assert bm.find_cached_prefix(seq_of(4, range(5))) == [0]
    assert bm.find_cached_prefix(seq_of(5, range(4))) == []
    assert bm.find_cached_prefix(seq_of(6, [0, 1, 2, 3, 4, 5, 6, 99, 8, 9])) == [0]
    assert bm.find_cached_prefix(seq_of(7, [99, 1, 2, 3, 4, 5, 6, 7, 8, 9])) == []
    assert bm.find_cached_prefix(seq_of(8, [4, 5, 6, 7, 0, 1, 2, 3, 8])) == []  # blocks 1, 0 reordered
    # partial block 2 (t8, t9) is never a hit, even for a longer prompt
    assert bm.find_cached_prefix(seq_of(9, range(20))) == [0, 1]


def test_admission_with_hits_shares_blocks_and_sets_progress():
    bm = BlockManager(6, BS)
    a = seq_of(0, range(10))
    run(bm, a, 10)
    b = seq_of(1, list(range(10)) + [50, 51])
    hits = bm.find_cached_prefix(b)
    assert hits == [0, 1]
    assert bm.num_blocks_needed(b, 4, hits) == 1  # hits are in use by a: nothing to reclaim
    assert bm.allocate(b, 4, hits)
    assert b.block_ids == [0, 1, 3]
    assert b.num_computed_tokens == 8 and b.num_cached_tokens == 8
    assert [blk.ref_count for blk in bm.pool.blocks] == [2, 2, 1, 1, 0, 0]
    bm.check_integrity([a, b])
    b.num_computed_tokens += 4
    bm.cache_computed_blocks(b, 8)
    assert hashed(bm) == [0, 1, 3]
    # free releases tail first; shared blocks only leave with their last user
    bm.free(a)
    assert a.block_ids == [] and a.num_computed_tokens == 0
    assert free_queue(bm) == [4, 5, 2]
    bm.free(b)
    assert free_queue(bm) == [4, 5, 2, 3, 1, 0]
    assert bm.num_free_blocks == 6 and bm.usage == 0.0
    bm.check_integrity([])


def test_idle_hits_are_reclaimed_from_the_free_queue():
    bm = BlockManager(6, BS)
    a = seq_of(0, range(10))
    run(bm, a, 10)
    bm.free(a)
    assert free_queue(bm) == [3, 4, 5, 2, 1, 0]
    g = seq_of(1, range(10))
    hits = bm.find_cached_prefix(g)
    assert hits == [0, 1]
    assert bm.num_blocks_needed(g, 2, hits) == 3  # one new block + two idle hits leave the queue
    assert bm.allocate(g, 2, hits)
    assert g.block_ids == [0, 1, 3]
    assert free_queue(bm) == [4, 5, 2]
    assert g.num_computed_tokens == 8
    bm.check_integrity([g])


def test_lru_eviction_drops_the_tail_of_a_freed_prefix_first():
    bm = BlockManager(4, BS)
    a = seq_of(0, range(12))
    run(bm, a, 12)
    assert hashed(bm) == [0, 1, 2]
    bm.free(a)
    assert free_queue(bm) == [3, 2, 1, 0]
    b = seq_of(1, range(100, 108))
    run(bm, b, 8)
    assert b.block_ids == [3, 2]  # evicts a's last block, keeps its head
    assert hashed(bm) == [0, 1, 2, 3]  # block 2 now holds b's second block
    assert bm.find_cached_prefix(seq_of(2, list(range(12)) + [7])) == [0, 1]
    bm.free(b)
    assert free_queue(bm) == [1, 0, 2, 3]
    c = seq_of(3, range(200, 204))
    run(bm, c, 4)
    assert c.block_ids == [1]  # the next victim is a's second block
    assert bm.find_cached_prefix(seq_of(4, list(range(12)) + [7])) == [0]
    bm.check_integrity([c])


def test_allocate_changes_nothing_when_blocks_are_short():
    bm = BlockManager(3, BS)
    a = seq_of(0, range(9))
    run(bm, a, 9)
    bm.free(a)
    assert free_queue(bm) == [2, 1, 0]
    b = seq_of(1, list(range(8)) + list(range(50, 58)))
    hits = bm.find_cached_prefix(b)
    assert hits == [0, 1]
    # 8 more tokens: two new blocks plus the two idle hits = 4 > 3 free
    assert bm.num_blocks_needed(b, 8, hits) == 4
    assert not bm.allocate(b, 8, hits)
    assert b.block_ids == [] and b.num_computed_tokens == 0 and b.num_cached_tokens == 0
    assert free_queue(bm) == [2, 1, 0]
    assert all(blk.ref_count == 0 for blk in bm.pool.blocks)
    # a 4-token chunk fits exactly
    assert bm.num_blocks_needed(b, 4, hits) == 3
    assert bm.allocate(b, 4, hits)
    assert b.block_ids == [0, 1, 2] and bm.num_free_blocks == 0
    # and a running sequence short of blocks is left as it was
    b.num_computed_tokens = 12
    assert not bm.allocate(b, 1)
    assert b.block_ids == [0, 1, 2] and b.num_computed_tokens == 12
    bm.check_integrity([b])


def test_prefix_caching_disabled_never_hits_nor_indexes():
    bm = BlockManager(6, BS, enable_prefix_caching=False)
    a = seq_of(0, range(10))
    run(bm, a, 10)
    assert hashed(bm) == [] and a.block_hashes == []
    b = seq_of(1, range(10))
    assert bm.find_cached_prefix(b) == []
    run(bm, b, 10)
    assert b.block_ids == [3, 4, 5] and b.num_cached_tokens == 0
    bm.check_integrity([a, b])


def test_free_is_idempotent_per_sequence_but_a_block_cannot_be_released_twice():
    bm = BlockManager(4, BS)
    a = seq_of(0, range(6))
    run(bm, a, 6)
    held = list(a.block_ids)
    bm.free(a)
    bm.free(a)  # nothing left to release
    assert bm.num_free_blocks == 4
    with pytest.raises(RuntimeError):
        bm.pool.release(held[0])
    bm.check_integrity([])


def test_check_integrity_catches_a_block_held_twice_or_an_overflow():
    bm = BlockManager(4, BS)
    a = seq_of(0, range(6))
    run(bm, a, 6)
    a.block_ids.append(a.block_ids[0])
    with pytest.raises(AssertionError):
        bm.check_integrity([a])
    a.block_ids.pop()
    a.num_computed_tokens = 9  # more than its 2 blocks hold
    with pytest.raises(AssertionError):
        bm.check_integrity([a])
    a.num_computed_tokens = 6
    with pytest.raises(AssertionError):
        bm.check_integrity([])  # a's blocks unaccounted for
    bm.check_integrity([a])


def test_a_colliding_hash_with_other_tokens_is_never_a_hit(monkeypatch):
    monkeypatch.setattr(bm_module, "chain_hash", lambda parent, tokens: b"42")  # every block collides
    bm = BlockManager(6, BS)
    a = seq_of(0, range(9))
    run(bm, a, 9)
    assert hashed(bm) == [0]  # one index entry per hash
    assert bm.find_cached_prefix(seq_of(1, [9, 9, 9, 9, 4, 5, 6, 7, 8])) == []
    assert bm.find_cached_prefix(seq_of(2, range(9))) == [0]  # the chain stops at block 1 (not indexed)


def test_the_chained_hash_covers_the_prefix():
    # The hash is sha256 over parent + tokens, so equal tokens after another prefix never collide.
    bm = BlockManager(6, BS)
    a = seq_of(0, [9, 9, 9, 9, 1, 2, 3, 4, 0])
    run(bm, a, 9)  # block 1 holds (1, 2, 3, 4) computed after the prefix (9, 9, 9, 9)
    b = seq_of(1, [1, 2, 3, 4, 5])  # (1, 2, 3, 4) at position 0: must not reuse a's block 1
    assert bm.find_cached_prefix(b) == []
