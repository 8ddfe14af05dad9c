"""The scheduler under a resized KV pool: the short-of-blocks signal, and waiting sequences
admitted once the pool grows. Block size 2, exact block ids."""

from __future__ import annotations

from swiftserve.scheduler.batch_scheduler import Scheduler
from swiftserve.scheduler.config import SchedulerConfig
from swiftserve.scheduler.sequence import Sequence


def make(num_blocks: int) -> Scheduler:
    cfg = SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=100, max_model_len=64, block_size=2)
    return Scheduler(cfg, num_blocks)


def add(s: Scheduler, seq_id: int, prompt_len: int) -> Sequence:
    seq = Sequence.from_prompt(seq_id, [seq_id * 1000 + i for i in range(prompt_len)])
    s.add(seq)
    return seq


def test_a_sequence_left_waiting_for_blocks_raises_the_signal_and_runs_after_growth():
    s = make(3)
    a, b = add(s, 0, 6), add(s, 1, 4)  # a takes all three blocks, b needs two more
    out = s.schedule()
    assert [i.seq.seq_id for i in out.scheduled] == [0] and s.is_short_of_blocks
    s.update(out)
    assert s.resize(5) == 5
    b_out = s.schedule()
    assert s.is_short_of_blocks is False
    assert [(i.seq.seq_id, i.num_new_tokens) for i in b_out.scheduled] == [(1, 4)]
    assert a.block_ids == [0, 1, 2] and b.block_ids == [3, 4]
    s.check_integrity()


def test_a_preemption_raises_the_signal_and_a_quiet_step_clears_it():
    s = make(3)
    a, b = add(s, 0, 3), add(s, 1, 2)
    s.update(s.schedule())  # a: blocks 0, 1; b: block 2
    for seq in (a, b):
        seq.append_token(7)
    s.update(s.schedule())  # a's 4th token fits block 1; b's 3rd needs a block: b is preempted
    assert s.is_short_of_blocks and s.num_preemptions == 1
    s.finish(a)
    s.update(s.schedule())
    assert not s.is_short_of_blocks
    s.check_integrity()


def test_a_shrink_never_takes_blocks_from_running_sequences():
    s = make(6)
    a = add(s, 0, 6)
    s.update(s.schedule())
    assert a.block_ids == [0, 1, 2]
    assert s.resize(2) == 3  # a holds ids up to 2: only 3..5 go
    assert s.block_manager.num_blocks == 2 and s.block_manager.num_free_blocks == 0
    s.finish(a)
    assert s.resize(2) == 2
    s.check_integrity()
