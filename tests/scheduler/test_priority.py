"""Request priority in the scheduler (vLLM's sense: lower runs earlier): admission in priority
order, first come first served within a priority, a head that does not fit blocking the less
urgent ones behind it, the lowest priority preempted first and requeued at its old place.

Every expectation is exact: which sequences run, with how many tokens, which one is preempted.
"""

from __future__ import annotations

from swiftserve.scheduler.batch_scheduler import Scheduler
from swiftserve.scheduler.config import SchedulerConfig
from swiftserve.scheduler.sequence import Sequence, SequenceStatus
from swiftserve.scheduler.waiting_queue import WaitingQueue

RUNNING = SequenceStatus.RUNNING


def make(num_blocks: int, block_size: int = 2, budget: int = 100, max_seqs: int = 8) -> Scheduler:
    cfg = SchedulerConfig(
        max_num_seqs=max_seqs, max_num_batched_tokens=budget, max_model_len=4096, block_size=block_size
    )
    return Scheduler(cfg, num_blocks)


def add(s: Scheduler, seq_id: int, prompt_len: int, priority: int) -> Sequence:
    seq = Sequence.from_prompt(seq_id, [seq_id * 1000 + i for i in range(prompt_len)], priority)
    s.add(seq)
    return seq


def step(s: Scheduler, finish_after: int | None = None):
    """Schedule, 'run', append a token to each sampling seq (finishing those with finish_after
    outputs). Returns the output and [(seq_id, start, num_new_tokens, is_sampling)]."""
    out = s.schedule()
    rows = [(it.seq.seq_id, it.start, it.num_new_tokens, it.is_sampling) for it in out.scheduled]
    sampling = [it.seq for it in out.scheduled if it.is_sampling]
    s.update(out)
    for seq in sampling:
        seq.append_token(7)
        if finish_after is not None and seq.num_output_tokens >= finish_after:
            s.finish(seq)
    s.check_integrity()
    return out, rows


def ids(seqs) -> list[int]:
    return [q.seq_id for q in seqs]


def test_the_waiting_queue_orders_by_priority_then_arrival_and_requeues_at_the_old_place():
    q = WaitingQueue()
    a, b, c, d = (Sequence.from_prompt(i, [1], p) for i, p in enumerate((5, 0, 5, -1)))
    for seq in (a, b, c, d):
        q.add(seq)
    assert ids(q) == [3, 1, 0, 2] and [s.arrival for s in (a, b, c, d)] == [0, 1, 2, 3]
    assert q.pop_head() is d and q.head is b and len(q) == 3
    q.remove(a)
    assert ids(q) == [1, 2] and a not in q and c in q
    q.requeue(a)  # preempted: back ahead of c, its later equal
    assert ids(q) == [1, 0, 2]
    e = Sequence.from_prompt(4, [1], 5)
    q.add(e)
    assert ids(q) == [1, 0, 2, 4] and e.arrival == 4


def test_admission_follows_priority_and_is_fcfs_within_one():
    s = make(16, max_seqs=1)
    for seq_id, priority in enumerate((5, 0, 5, 0, -1)):
        add(s, seq_id, 2, priority)
    assert ids(s.waiting) == [4, 1, 3, 0, 2]
    order = []
    while s.has_unfinished():
        _, rows = step(s, finish_after=1)
        assert len(rows) == 1 and rows[0][1:] == (0, 2, True)
        order.append(rows[0][0])
    assert order == [4, 1, 3, 0, 2]


def test_an_urgent_arrival_overtakes_the_waiting_but_not_the_running():
    s = make(16, max_seqs=1)
    a = add(s, 0, 2, 0)
    step(s)
    add(s, 1, 2, 0)
    add(s, 2, 2, 0)
    add(s, 3, 2, -1)
    assert ids(s.waiting) == [3, 1, 2]
    _, rows = step(s, finish_after=2)
    assert rows == [(0, 2, 1, True)] and a.status is SequenceStatus.FINISHED
    _, rows = step(s, finish_after=2)
    assert rows == [(3, 0, 2, True)]


def test_an_urgent_head_that_does_not_fit_blocks_the_less_urgent_behind_it():
    s = make(4, block_size=4)
    a = add(s, 0, 6, 0)  # two blocks
    step(s)
    b = add(s, 1, 2, 5)  # would fit in the two free blocks
    h = add(s, 2, 12, -1)  # needs three
    _, rows = step(s)
    assert rows == [(0, 6, 1, True)] and ids(s.waiting) == [2, 1]
    assert b.status is SequenceStatus.WAITING and s.block_manager.num_free_blocks == 2
    s.finish(a)
    _, rows = step(s)
    assert rows == [(2, 0, 12, True), (1, 0, 2, True)]
    assert len(h.block_ids) == 3 and len(b.block_ids) == 1


def test_the_lowest_priority_is_preempted_first_and_requeued_behind_the_more_urgent():
    s = make(4)
    lo, hi, mid = add(s, 0, 2, 5), add(s, 1, 2, 0), add(s, 2, 2, 1)
    _, rows = step(s)
    assert rows == [(1, 0, 2, True), (2, 0, 2, True), (0, 0, 2, True)]  # admitted hi, mid, lo
    assert ids(s.running) == [1, 2, 0] and s.block_manager.num_free_blocks == 1
    later = add(s, 3, 2, 5)  # lo's equal, arrived after it
    urgent = add(s, 4, 2, 2)  # more urgent than lo
    # Every decode needs a second block, one is free: hi takes it, mid preempts lo (the oldest
    # sequence, but the least urgent one), lo's decode never runs.
    out, rows = step(s)
    assert rows == [(1, 2, 1, True), (2, 2, 1, True)] and ids(out.preempted) == [0]
    assert lo.status is SequenceStatus.WAITING and lo.block_ids == [] and lo.num_preemptions == 1
    assert ids(s.waiting) == [4, 0, 3]  # urgent, then lo at its old place ahead of later
    assert hi.status is RUNNING and mid.status is RUNNING
    assert later.status is urgent.status is SequenceStatus.WAITING


def test_within_one_priority_the_newest_admitted_is_preempted():
    s = make(4)
    a, b, c = add(s, 0, 2, 3), add(s, 1, 2, 3), add(s, 2, 2, 0)
    step(s)
    assert ids(s.running) == [2, 0, 1]
    out, _ = step(s)  # c takes the one free block, a preempts b (newer than a, as urgent)
    assert ids(out.preempted) == [1] and ids(s.running) == [2, 0]
    assert a.status is RUNNING and b.status is SequenceStatus.WAITING and c.status is RUNNING


def test_a_more_urgent_prefill_preempts_a_decode_already_scheduled_in_the_step():
    s = make(4, budget=4)
    lo = add(s, 0, 1, 5)
    step(s)  # lo: block 0
    hi = add(s, 1, 8, 0)
    _, rows = step(s)
    assert rows == [(0, 1, 1, True), (1, 0, 3, False)]  # hi chunked to the budget left
    assert len(lo.block_ids) == 1 and len(hi.block_ids) == 2 and s.block_manager.num_free_blocks == 1
    # lo's decode takes the last block; hi's next chunk (positions 3..5) needs one more: lo, the
    # least urgent, is unscheduled and preempted (newest-first would have preempted hi itself).
    out, rows = step(s)
    assert rows == [(1, 3, 3, False)] and ids(out.preempted) == [0]
    assert out.num_batched_tokens == 3 and len(hi.block_ids) == 3 and lo.block_ids == []
    assert ids(s.waiting) == [0]


def test_decodes_beyond_the_budget_run_the_more_urgent_first():
    s = make(8, budget=2)
    p, q, r = (Sequence.from_prompt(i, [10 * i, 10 * i + 1], pr) for i, pr in enumerate((5, 0, 3)))
    for seq in (p, q, r):  # running, each with one token left to decode
        assert s.block_manager.allocate(seq, 1)
        seq.num_computed_tokens, seq.status = 1, RUNNING
    s.running = [p, q, r]
    out = s.schedule()
    assert [(it.seq.seq_id, it.start, it.num_new_tokens) for it in out.scheduled] == [(1, 1, 1), (2, 1, 1)]
    assert out.preempted == [] and p.status is RUNNING
