"""Scheduler: decodes first, chunked prefill, FCFS admission with prefix hits, preemption, aborts.

Every expectation is exact: which sequences run, with how many tokens, in which blocks.
"""

from __future__ import annotations

import pytest
from swiftserve.scheduler.batch_scheduler import Scheduler, SchedulerOutput
from swiftserve.scheduler.config import SchedulerConfig
from swiftserve.scheduler.sequence import Sequence, SequenceStatus

WAITING, RUNNING, FINISHED = SequenceStatus.WAITING, SequenceStatus.RUNNING, SequenceStatus.FINISHED


def make(num_blocks: int, block_size: int = 2, budget: int = 100, max_seqs: int = 8, **kw) -> Scheduler:
    cfg = SchedulerConfig(
        max_num_seqs=max_seqs, max_num_batched_tokens=budget, max_model_len=4096, block_size=block_size, **kw
    )
    return Scheduler(cfg, num_blocks)


_next_token = [10_000]


def add(s: Scheduler, seq_id: int, prompt_len: int, base: int | None = None, tokens=None) -> Sequence:
    """A prompt of distinct tokens (seq_id * 1000 + i) unless tokens are given."""
    if tokens is None:
        base = seq_id * 1000 if base is None else base
        tokens = [base + i for i in range(prompt_len)]
    seq = Sequence.from_prompt(seq_id, tokens)
    s.add(seq)
    return seq


def step(s: Scheduler, finish: dict[Sequence, int] | None = None):
    """Schedule, 'run', update, append a token to each sampling seq and finish those at their
    output length. Returns the output and [(seq_id, start, num_new_tokens, is_sampling)]."""
    out = s.schedule()
    rows = [(it.seq.seq_id, it.start, it.num_new_tokens, it.is_sampling) for it in out.scheduled]
    sampling = [it.seq for it in out.scheduled if it.is_sampling]
    s.update(out)
    for seq in sampling:
        _next_token[0] += 1
        seq.append_token(_next_token[0])
        if finish and seq in finish and seq.num_output_tokens >= finish[seq]:
            s.finish(seq)
    s.check_integrity()
    return out, rows


def ids(seqs) -> list[int]:
    return [q.seq_id for q in seqs]


def free_queue(s: Scheduler) -> list[int]:
    return list(s.block_manager.pool._free)


# -- configuration and queue ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"max_num_seqs": 0},
        {"max_num_batched_tokens": 0},
        {"max_model_len": 0},
        {"block_size": 0},
        {"block_size": 1.5},
        {"max_num_waiting": -1},
    ],
)
def test_config_rejects_bad_limits(kw):
    with pytest.raises(ValueError):
        SchedulerConfig(**kw)


def test_can_accept_bounds_the_waiting_queue():
    s = make(4, max_num_waiting=2)
    assert s.can_accept() and s.can_accept(2) and not s.can_accept(3)
    add(s, 0, 3)
    add(s, 1, 3)
    assert not s.can_accept()
    assert make(4).can_accept(10**6)  # unbounded
    assert make(4, max_num_waiting=0).can_accept(0) and not make(4, max_num_waiting=0).can_accept()


def test_empty_scheduler_schedules_nothing():
    s = make(4)
    assert not s.has_unfinished()
    out = s.schedule()
    assert out.is_empty and out.num_batched_tokens == 0 and out.preempted == []


# -- prefill, chunking, decode --------------------------------------------------------------------


def test_whole_prefill_then_decodes():
    s = make(8, block_size=4)
    a = add(s, 0, 10)
    assert a.status is WAITING and s.has_unfinished()
    out, rows = step(s)
    assert rows == [(0, 0, 10, True)]
    assert a.status is RUNNING and a.block_ids == [0, 1, 2] and a.num_computed_tokens == 10
    assert out.num_batched_tokens == 10 and not out.is_empty
    _, rows = step(s)
    assert rows == [(0, 10, 1, True)]
    _, rows = step(s)
    assert rows == [(0, 11, 1, True)]
    assert a.block_ids == [0, 1, 2]
    _, rows = step(s)  # position 12 opens a fourth block
    assert rows == [(0, 12, 1, True)] and a.block_ids == [0, 1, 2, 3]
    assert a.num_output_tokens == 4


def test_chunked_prefill_under_a_small_budget():
    s = make(8, block_size=4, budget=4)
    a = add(s, 0, 10)
    _, rows = step(s)
    assert rows == [(0, 0, 4, False)] and a.block_ids == [0]
    _, rows = step(s)
    assert rows == [(0, 4, 4, False)] and a.block_ids == [0, 1]
    _, rows = step(s)
    assert rows == [(0, 8, 2, True)] and a.block_ids == [0, 1, 2]
    assert a.num_tokens == 11
    _, rows = step(s)
    assert rows == [(0, 10, 1, True)]


def test_decodes_come_first_and_are_never_stalled_by_a_long_prefill():
    s = make(32, block_size=4, budget=8)
    x = add(s, 0, 2)
    long = add(s, 1, 40)
    _, rows = step(s)
    assert rows == [(0, 0, 2, True), (1, 0, 6, False)]
    starts = [6]
    while long.num_computed_tokens < 40:
        _, rows = step(s)
        n = min(7, 40 - starts[-1])
        assert rows == [(0, x.num_computed_tokens - 1, 1, True), (1, starts[-1], n, starts[-1] + n == 40)]
        starts.append(starts[-1] + n)
    assert starts == [6, 13, 20, 27, 34, 40]
    # even when the prefilling sequence is the older one, the decode goes first
    y = add(s, 2, 30)
    step(s)  # x, long decode; y admitted with the 6 tokens left
    assert ids(s.running) == [0, 1, 2] and y.num_computed_tokens == 6
    s.running.reverse()  # y (prefilling) now looks oldest
    x_start = x.num_computed_tokens
    out, rows = step(s)
    assert rows == [(1, 41, 1, True), (0, x_start, 1, True), (2, 6, 6, False)] and out.preempted == []


def test_decodes_beyond_the_budget_wait_in_running_order_and_block_admission():
    s = make(8, budget=2)
    a, b, c = add(s, 0, 1), add(s, 1, 1), add(s, 2, 1)
    _, rows = step(s)
    assert rows == [(0, 0, 1, True), (1, 0, 1, True)]
    _, rows = step(s)
    assert rows == [(0, 1, 1, True), (1, 1, 1, True)]
    assert c.status is WAITING and ids(s.waiting) == [2]
    s.finish(a)
    _, rows = step(s)
    assert rows == [(1, 2, 1, True), (2, 0, 1, True)]
    assert b.num_output_tokens == 3


def test_max_num_seqs_caps_running():
    s = make(16, max_seqs=2)
    a, _, c = add(s, 0, 3), add(s, 1, 3), add(s, 2, 3)
    _, rows = step(s, finish={a: 2})
    assert rows == [(0, 0, 3, True), (1, 0, 3, True)]
    assert ids(s.running) == [0, 1] and ids(s.waiting) == [2]
    _, rows = step(s, finish={a: 2})
    assert rows == [(0, 3, 1, True), (1, 3, 1, True)]
    assert a.status is FINISHED and ids(s.running) == [1]
    _, rows = step(s)
    assert rows == [(1, 4, 1, True), (2, 0, 3, True)]
    assert ids(s.running) == [1, 2] and c.status is RUNNING


def test_admission_is_fcfs_and_stops_at_a_head_that_does_not_fit():
    s = make(3, block_size=4)
    a = add(s, 0, 8)  # 2 blocks
    step(s)
    b = add(s, 1, 12)  # needs 3 blocks, 1 free
    c = add(s, 2, 2)  # would fit, but waits behind b
    _, rows = step(s)
    assert rows == [(0, 8, 1, True)]
    assert ids(s.waiting) == [1, 2]
    s.finish(a)
    assert free_queue(s) == [2, 1, 0]
    _, rows = step(s)
    assert rows == [(1, 0, 12, True)]  # b takes all three blocks; c still waits
    assert b.block_ids == [2, 1, 0] and ids(s.waiting) == [2]
    assert c.status is WAITING


def test_admission_with_a_prefix_hit_skips_the_cached_tokens():
    s = make(8, block_size=4)
    a = add(s, 0, 10)
    step(s)
    b = add(s, 1, 0, tokens=list(a.token_ids[:10]) + [7, 8])
    _, rows = step(s)
    assert rows == [(0, 10, 1, True), (1, 8, 4, True)]  # b computes only t8..t11
    assert b.block_ids == [0, 1, 3] and b.num_cached_tokens == 8
    assert [blk.ref_count for blk in s.block_manager.pool.blocks[:4]] == [2, 2, 1, 1]
    # a prompt entirely cached still computes its last token
    c = add(s, 2, 0, tokens=list(a.token_ids[:8]))
    _, rows = step(s)
    assert rows == [(0, 11, 1, True), (1, 12, 1, True), (2, 4, 4, True)]  # b's position 12 took block 4
    assert c.block_ids == [0, 5] and c.num_cached_tokens == 4


def test_prefix_hit_after_the_owner_finished_with_a_chunked_remainder():
    s = make(8, block_size=4, budget=3)
    a = add(s, 0, 9)
    for _ in range(3):
        step(s, finish={a: 1})
    assert a.status is FINISHED and s.block_manager.num_free_blocks == 8
    assert free_queue(s) == [3, 4, 5, 6, 7, 2, 1, 0]
    b = add(s, 1, 0, tokens=list(a.token_ids[:9]) + [5, 6, 7, 8])
    _, rows = step(s)
    assert rows == [(1, 8, 3, False)] and b.block_ids == [0, 1, 3] and b.num_cached_tokens == 8
    _, rows = step(s)
    assert rows == [(1, 11, 2, True)] and b.block_ids == [0, 1, 3, 4]


def test_prefix_caching_disabled_recomputes_everything():
    s = make(8, block_size=4, enable_prefix_caching=False)
    a = add(s, 0, 10)
    step(s)
    b = add(s, 1, 0, tokens=list(a.token_ids[:10]))
    _, rows = step(s)
    assert rows == [(0, 10, 1, True), (1, 0, 10, True)]
    assert b.block_ids == [3, 4, 5] and b.num_cached_tokens == 0


def test_a_sequence_needing_prompt_logprobs_skips_prefix_hits():
    s = make(8, block_size=4)
    a = add(s, 0, 10)
    step(s)
    b = add(s, 1, 0, tokens=list(a.token_ids[:10]))
    b.needs_prompt_logprobs = True  # every prompt position must run through the model
    _, rows = step(s)
    assert rows == [(0, 10, 1, True), (1, 0, 10, True)]
    assert b.block_ids == [3, 4, 5] and b.num_cached_tokens == 0
    # b's blocks duplicate a's cached ones: the index keeps a's
    c = add(s, 2, 0, tokens=list(a.token_ids[:10]))
    step(s)
    assert c.block_ids[:2] == [0, 1] and c.num_cached_tokens == 8


# -- preemption -------------------------------------------------------------------------------


def test_preempts_the_newest_and_admits_nothing_in_that_step():
    s = make(6)
    a, b, c = add(s, 0, 3), add(s, 1, 2), add(s, 2, 3)
    finish = {a: 4}
    _, rows = step(s, finish)
    assert rows == [(0, 0, 3, True), (1, 0, 2, True), (2, 0, 3, True)]
    assert (a.block_ids, b.block_ids, c.block_ids) == ([0, 1], [2], [3, 4])
    d = add(s, 3, 1)
    out, rows = step(s, finish)
    assert rows == [(0, 3, 1, True), (1, 2, 1, True), (2, 3, 1, True)] and out.preempted == []
    assert b.block_ids == [2, 5] and s.block_manager.num_free_blocks == 0
    # a needs a block for position 4: c, the newest, goes
    out, rows = step(s, finish)
    assert rows == [(0, 4, 1, True), (1, 3, 1, True)]
    assert ids(out.preempted) == [2] and s.num_preemptions == 1 and c.num_preemptions == 1
    assert c.status is WAITING and c.block_ids == [] and c.num_computed_tokens == 0
    assert ids(s.waiting) == [2, 3]
    assert a.block_ids == [0, 1, 4]
    assert free_queue(s) == [3]  # d would fit, but no admission in a step that preempted
    assert d.status is WAITING
    _, rows = step(s, finish)  # a finishes with its 4th token; b takes block 3 (c's head)
    assert rows == [(0, 5, 1, True), (1, 4, 1, True)]
    assert a.status is FINISHED and b.block_ids == [2, 5, 3]
    assert free_queue(s) == [4, 1, 0]
    # c (evicted prefix: no hit) is recomputed in full before d
    _, rows = step(s)
    assert rows == [(1, 5, 1, True), (2, 0, 5, True)]
    assert c.block_ids == [4, 1, 0] and c.num_cached_tokens == 0 and c.status is RUNNING
    assert ids(s.waiting) == [3]


def test_two_preemptions_in_one_step_readmit_in_original_order():
    s = make(4)
    a, b, c, d = (add(s, i, 2) for i in range(4))
    finish = {a: 2, b: 3}
    _, rows = step(s, finish)
    assert rows == [(i, 0, 2, True) for i in range(4)]
    out, rows = step(s, finish)
    assert rows == [(0, 2, 1, True), (1, 2, 1, True)]
    assert ids(out.preempted) == [3, 2]  # newest first
    assert ids(s.waiting) == [2, 3]  # each to the front: c ahead of d again
    assert a.status is FINISHED and (b.block_ids, c.block_ids, d.block_ids) == ([1, 2], [], [])
    assert free_queue(s) == [3, 0]
    out, rows = step(s, finish)
    assert rows == [(1, 3, 1, True), (2, 0, 3, True)]
    assert c.block_ids == [3, 0] and ids(s.waiting) == [3]
    assert b.status is FINISHED
    _, rows = step(s)
    assert rows == [(2, 3, 1, True), (3, 0, 3, True)]
    assert d.block_ids == [2, 1] and s.num_preemptions == 2


def test_a_sequence_that_is_itself_the_newest_preempts_itself():
    s = make(2)
    z, a = add(s, 0, 1), add(s, 1, 2)
    step(s)
    out, rows = step(s)
    assert rows == [(0, 1, 1, True)]
    assert ids(out.preempted) == [1] and a.block_ids == [] and ids(s.waiting) == [1]
    assert z.block_ids == [0] and free_queue(s) == [1]


def test_preempted_sequence_gets_its_surviving_prefix_back():
    s = make(7)
    z, a = add(s, 0, 2), add(s, 1, 5)
    finish = {z: 6}
    for _ in range(4):
        out, _ = step(s, finish)
        assert out.preempted == []
    assert (z.block_ids, a.block_ids, a.num_computed_tokens) == ([0, 4, 6], [1, 2, 3, 5], 8)
    assert s.block_manager.num_free_blocks == 0
    # a, the newest, needs a block for position 8: it preempts itself; its 4 full blocks stay cached
    out, rows = step(s, finish)
    assert rows == [(0, 5, 1, True)] and ids(out.preempted) == [1]
    assert a.block_ids == [] and free_queue(s) == [5, 3, 2, 1]
    out, rows = step(s, finish)  # no admission after a preemption... and z takes a's tail block
    assert rows == [(0, 6, 1, True)] and out.preempted == []
    assert z.status is FINISHED and free_queue(s) == [3, 2, 1, 5, 6, 4, 0]
    _, rows = step(s)
    # a: 9 tokens; t0..t5 still cached in its own blocks 1, 2, 3 (t6, t7 were evicted with block 5)
    assert rows == [(1, 6, 3, True)]
    assert a.block_ids == [1, 2, 3, 5, 6] and a.num_computed_tokens == 9 and a.num_preemptions == 1
    assert s.block_manager.pool.blocks[1].block_hash == a.block_hashes[0]


def test_refund_when_a_scheduled_decode_is_preempted_for_an_older_prefill():
    """Defensive path (the natural order never schedules a newer decode before an older prefill
    that then lacks blocks): the victim's token goes back to the budget."""
    s = make(6, budget=5)
    bm = s.block_manager
    p = Sequence.from_prompt(0, list(range(10)))
    q = Sequence.from_prompt(1, list(range(100, 110)))
    d = Sequence.from_prompt(2, [200, 201, 202])
    for seq, n in ((p, 4), (q, 2), (d, 2)):
        assert bm.allocate(seq, n)
        seq.num_computed_tokens = n
        seq.status = RUNNING
    s.running = [p, q, d]
    assert (p.block_ids, q.block_ids, d.block_ids) == ([0, 1], [2], [3])
    out = s.schedule()
    assert [(it.seq.seq_id, it.start, it.num_new_tokens) for it in out.scheduled] == [(0, 4, 4), (1, 2, 1)]
    assert ids(out.preempted) == [2] and out.num_batched_tokens == 5
    assert p.block_ids == [0, 1, 5, 4] and q.block_ids == [2, 3]
    s.check_integrity()


def test_num_cached_tokens_never_exceeds_the_prompt_after_preemption():
    s = make(6)
    z, a = add(s, 0, 2), add(s, 1, 2)
    finish = {z: 6}
    preempted = []
    while s.has_unfinished() and a.num_output_tokens < 8:
        out, _ = step(s, finish)
        preempted += out.preempted
    assert ids(preempted) == [1] and a.num_preemptions == 1
    assert a.num_cached_tokens <= a.num_prompt_tokens


# -- leaving ------------------------------------------------------------------------------------


def test_abort_from_waiting_running_and_preempted_frees_every_block():
    s = make(4)
    a, b, c = add(s, 0, 3), add(s, 1, 2), add(s, 2, 3)
    step(s)
    assert (a.block_ids, b.block_ids, c.block_ids) == ([0, 1], [2], [])
    assert ids(s.waiting) == [2]
    s.abort(c)  # from waiting
    assert c.status is FINISHED and ids(s.waiting) == []
    s.abort(b)  # from running
    assert b.status is FINISHED and b.block_ids == [] and ids(s.running) == [0]
    assert free_queue(s) == [3, 2]
    s.check_integrity()
    s.abort(b)  # twice: a no-op
    assert s.block_manager.num_free_blocks == 2
    s.abort(a)
    assert s.block_manager.num_free_blocks == 4 and not s.has_unfinished()
    assert free_queue(s) == [3, 2, 1, 0]
    s.check_integrity()


def test_abort_a_preempted_sequence():
    s = make(4)
    a, b, c, d = (add(s, i, 2) for i in range(4))
    step(s)
    out, _ = step(s)
    assert ids(out.preempted) == [3, 2] and ids(s.waiting) == [2, 3]
    s.abort(d)
    assert ids(s.waiting) == [2] and d.status is FINISHED
    s.abort(c)
    s.abort(a)
    s.abort(b)
    assert not s.has_unfinished() and s.block_manager.num_free_blocks == 4
    s.check_integrity()


def test_abort_a_sharer_keeps_the_shared_prefix_with_the_other():
    s = make(8, block_size=4)
    a = add(s, 0, 10)
    step(s)
    b = add(s, 1, 0, tokens=list(a.token_ids[:10]))
    step(s)
    assert b.block_ids == [0, 1, 3]
    s.abort(a)
    assert [blk.ref_count for blk in s.block_manager.pool.blocks[:4]] == [1, 1, 0, 1]
    assert free_queue(s) == [4, 5, 6, 7, 2]
    s.check_integrity()
    s.abort(b)
    assert free_queue(s) == [4, 5, 6, 7, 2, 3, 1, 0]
    s.check_integrity()


def test_finish_releases_blocks_and_unknown_finish_raises():
    s = make(4)
    a = add(s, 0, 3)
    step(s)
    s.finish(a)
    assert a.status is FINISHED and a.block_ids == [] and s.block_manager.num_free_blocks == 4
    with pytest.raises(ValueError):
        s.finish(a)


def test_scheduler_output_properties():
    out = SchedulerOutput()
    assert out.is_empty and out.num_batched_tokens == 0


# -- randomized simulation ------------------------------------------------------------------------


def _load_sim():
    import importlib.util
    import sys
    from pathlib import Path

    name = "_swiftserve_scheduler_test_sim"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("sim.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


sim = _load_sim()


def _simulate(seed: int, enable_prefix_caching: bool = True, priorities: tuple[int, ...] = (0,)):
    import random

    rng = random.Random(seed)
    bs = rng.choice([1, 2, 4])
    max_prompt, max_output = 24, 10
    # tiny KV cache: enough for the longest sequence alone (so progress is guaranteed), little more
    num_blocks = -(-(max_prompt + max_output) // bs) + rng.randint(0, 6)
    cfg = SchedulerConfig(
        max_num_seqs=rng.randint(1, 6),
        max_num_batched_tokens=rng.randint(6, 20),
        max_model_len=max_prompt + max_output,
        block_size=bs,
        enable_prefix_caching=enable_prefix_caching,
    )
    engine = sim.FakeEngine(cfg, num_blocks)
    prefixes = [[rng.randrange(sim.VOCAB) for _ in range(16)] for _ in range(3)]
    work = sim.random_workload(rng, 40, max_prompt, max_output, prefixes)
    pending = list(enumerate(work))
    while pending or engine.scheduler.has_unfinished():
        for _ in range(rng.randint(0, 3)):  # arrivals
            if pending:
                seq_id, (prompt, max_tokens) = pending.pop(0)
                priority = rng.choice(priorities) if len(priorities) > 1 else priorities[0]
                engine.add(seq_id, prompt, max_tokens, priority)
        if rng.random() < 0.05 and engine.unfinished_ids():  # client disconnects
            engine.abort(rng.choice(engine.unfinished_ids()))
        engine.scheduler.check_integrity()
        assert engine.num_steps < 5000, "no progress"
        if engine.scheduler.has_unfinished():
            engine.step()
            engine.scheduler.check_integrity()
    bm = engine.scheduler.block_manager
    assert bm.num_free_blocks == bm.num_blocks == num_blocks
    assert all(b.ref_count == 0 for b in bm.pool.blocks)
    assert not engine.scheduler.running and not engine.scheduler.waiting
    for seq_id, req in engine.requests.items():
        prompt, max_tokens = work[seq_id]
        assert req.seq.status is SequenceStatus.FINISHED and req.seq.block_ids == []
        if req.aborted:
            assert not req.finished
            continue
        assert req.finished
        assert req.seq.token_ids[: len(prompt)] == prompt
        assert req.seq.num_tokens == len(prompt) + max_tokens
        assert req.seq.output_token_ids == sim.expected_outputs(prompt, max_tokens), "recompute diverged"
    return engine


@pytest.mark.parametrize("seed", range(40))
def test_random_simulation_keeps_every_invariant(seed):
    _simulate(seed)


def test_random_simulation_exercises_preemption_prefix_hits_and_aborts():
    engines = [_simulate(seed) for seed in range(40)]
    seqs = [r.seq for e in engines for r in e.requests.values()]
    assert sum(e.scheduler.num_preemptions for e in engines) > 100
    assert sum(s.num_cached_tokens > 0 for s in seqs) > 100
    assert sum(r.aborted for e in engines for r in e.requests.values()) > 20
    assert sum(s.num_preemptions > 0 and s.num_cached_tokens > 0 for s in seqs) > 10


@pytest.mark.parametrize("seed", range(10))
def test_random_simulation_without_prefix_caching(seed):
    engine = _simulate(seed, enable_prefix_caching=False)
    assert all(r.seq.num_cached_tokens == 0 for r in engine.requests.values())
    assert all(b.block_hash is None for b in engine.scheduler.block_manager.pool.blocks)


@pytest.mark.parametrize("seed", range(20))
def test_random_simulation_with_priorities_keeps_every_invariant(seed):
    """Mixed priorities: the same invariants and outputs, admission in queue order (sim.py)."""
    engine = _simulate(seed, priorities=(-1, 0, 0, 3))
    assert {r.seq.priority for r in engine.requests.values()} == {-1, 0, 3}


# -- no torch ---------------------------------------------------------------------------------------

_SCHEDULER_DIR = __import__("pathlib").Path(__file__).resolve().parents[2] / "scheduler"


def test_scheduler_sources_import_only_the_standard_library_and_themselves():
    import ast
    import sys

    files = sorted(_SCHEDULER_DIR.glob("*.py"))
    assert {"batch_scheduler.py", "block_manager.py", "block_pool.py", "sequence.py", "config.py"} <= {
        f.name for f in files
    }
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0 or node.module is None or not node.module.startswith("torch")
                names = [node.module or ""] if node.level == 0 else []
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                ok = name.startswith("swiftserve.scheduler") or top in sys.stdlib_module_names
                assert ok, f"{path.name} imports {name}: the scheduler must stay torch-free (stdlib only)"


def test_importing_and_running_the_scheduler_never_imports_torch():
    """In a fresh interpreter where `import torch` raises, with swiftserve's own __init__ stubbed
    out (it may import torch), load every scheduler module and run a few steps."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        f"""
        import importlib.abc, importlib.util, sys, types

        class NoTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "numpy", "triton"):
                    raise ImportError("the scheduler imported " + name)
                return None

        sys.meta_path.insert(0, NoTorch())
        pkg = types.ModuleType("swiftserve")
        pkg.__path__ = []
        sys.modules["swiftserve"] = pkg
        spec = importlib.util.spec_from_file_location(
            "swiftserve.scheduler", {str(_SCHEDULER_DIR / "__init__.py")!r},
            submodule_search_locations=[{str(_SCHEDULER_DIR)!r}])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["swiftserve.scheduler"] = mod
        spec.loader.exec_module(mod)
        from swiftserve.scheduler import batch_scheduler, block_manager, block_pool, config, sequence
        s = batch_scheduler.Scheduler(config.SchedulerConfig(block_size=2, max_num_batched_tokens=4), 4)
        s.add(sequence.Sequence.from_prompt(0, [1, 2, 3, 4, 5]))
        for _ in range(3):
            out = s.schedule()
            s.update(out)
        assert "torch" not in sys.modules and "numpy" not in sys.modules
        assert batch_scheduler.__file__.startswith({str(_SCHEDULER_DIR)!r})
        print("OK")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "OK", proc.stderr
