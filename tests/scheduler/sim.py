"""A tiny fake engine that drives the torch-free scheduler, for randomized tests.

It does what the real engine does with a SchedulerOutput (schedule, run, update, append a token
for each sampling sequence, finish at a length), but the "model" is a dict: every KV slot holds
the exact token prefix that produced it. Before a chunk runs, the sim checks that the slots of
every earlier position of the sequence hold exactly that sequence's prefix, so a wrong prefix-cache
hit, a block reused while still in use, or a lost block is caught at the step where it happens.
The token a sequence samples depends only on its own tokens, as with greedy decoding, so a
sequence recomputed after preemption must end with the same outputs as one never preempted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from swiftserve.scheduler.batch_scheduler import Scheduler, SchedulerOutput
from swiftserve.scheduler.config import SchedulerConfig
from swiftserve.scheduler.sequence import Sequence, SequenceStatus

VOCAB = 1000


def fake_next_token(token_ids: list[int]) -> int:
    """Deterministic 'greedy' sample: a function of the whole context only."""
    return (sum((i + 1) * t for i, t in enumerate(token_ids)) * 2654435761 + len(token_ids)) % VOCAB


def expected_outputs(prompt: list[int], max_tokens: int) -> list[int]:
    tokens = list(prompt)
    for _ in range(max_tokens):
        tokens.append(fake_next_token(tokens))
    return tokens[len(prompt) :]


@dataclass
class Request:
    seq: Sequence
    max_tokens: int
    aborted: bool = False
    finished: bool = False


@dataclass
class StepRecord:
    out: SchedulerOutput
    items: list[tuple[int, int, int, bool]]  # (seq_id, start, num_new_tokens, is_sampling) at schedule time
    decoding_before: list[int]  # running seq ids with exactly one uncomputed token before schedule()
    running_before: list[int]


@dataclass
class FakeEngine:
    config: SchedulerConfig
    num_blocks: int
    scheduler: Scheduler = field(init=False)
    requests: dict[int, Request] = field(default_factory=dict)
    kv: dict[tuple[int, int], tuple[int, ...]] = field(default_factory=dict)  # (block, slot) -> prefix
    num_steps: int = 0
    history: list[StepRecord] = field(default_factory=list)
    keep_history: bool = False

    def __post_init__(self) -> None:
        self.scheduler = Scheduler(self.config, self.num_blocks)

    # -- requests --------------------------------------------------------------------------
    def add(self, seq_id: int, prompt: list[int], max_tokens: int, priority: int = 0) -> Sequence:
        seq = Sequence.from_prompt(seq_id, prompt, priority)
        self.requests[seq_id] = Request(seq, max_tokens)
        self.scheduler.add(seq)
        return seq

    def abort(self, seq_id: int) -> None:
        req = self.requests[seq_id]
        req.aborted = True
        self.scheduler.abort(req.seq)

    def unfinished_ids(self) -> list[int]:
        return [i for i, r in self.requests.items() if not (r.aborted or r.finished)]

    # -- one step --------------------------------------------------------------------------
    def step(self) -> SchedulerOutput:
        sched = self.scheduler
        bs = self.config.block_size
        decoding_before = [s.seq_id for s in sched.running if s.num_uncomputed_tokens == 1]
        running_before = [s.seq_id for s in sched.running]
        out = sched.schedule()
        items = [(it.seq.seq_id, it.start, it.num_new_tokens, it.is_sampling) for it in out.scheduled]
        self._check_output(out, decoding_before, running_before)

        # "Run the model": read the context from the blocks, then write the new positions.
        sampling = []
        for item in out.scheduled:
            seq, start, n = item.seq, item.start, item.num_new_tokens
            assert seq.status is SequenceStatus.RUNNING
            assert n >= 1, f"seq {seq.seq_id} scheduled with {n} tokens"
            assert start + n <= seq.num_tokens
            assert len(seq.block_ids) * bs >= start + n, f"seq {seq.seq_id}: no room for its chunk"
            assert len(seq.block_ids) == -(-(start + n) // bs), f"seq {seq.seq_id}: holds spare blocks"
            for pos in range(start):  # attention reads every earlier position's KV
                slot = (seq.block_ids[pos // bs], pos % bs)
                assert self.kv.get(slot) == tuple(seq.token_ids[: pos + 1]), (
                    f"step {self.num_steps}: seq {seq.seq_id} reads wrong KV at position {pos}"
                )
            for pos in range(start, start + n):
                self.kv[(seq.block_ids[pos // bs], pos % bs)] = tuple(seq.token_ids[: pos + 1])
            if item.is_sampling:
                sampling.append(seq)
        sched.update(out)
        for seq in sampling:
            req = self.requests[seq.seq_id]
            seq.append_token(fake_next_token(seq.token_ids))
            if seq.num_output_tokens == req.max_tokens:
                req.finished = True
                sched.finish(seq)
        if self.keep_history:
            self.history.append(StepRecord(out, items, decoding_before, running_before))
        self.num_steps += 1
        return out

    def _check_output(self, out: SchedulerOutput, decoding_before: list[int], running_before: list[int]):
        cfg, sched = self.config, self.scheduler
        ids = [it.seq.seq_id for it in out.scheduled]
        assert len(ids) == len(set(ids)), "a sequence scheduled twice in one step"
        assert out.num_batched_tokens <= cfg.max_num_batched_tokens
        assert len(sched.running) <= cfg.max_num_seqs
        preempted = {s.seq_id for s in out.preempted}
        assert not preempted & set(ids), "a preempted sequence is still scheduled"
        for seq in out.preempted:
            assert seq.status is SequenceStatus.WAITING and not seq.block_ids and seq.num_computed_tokens == 0
        if out.preempted:  # no admission in a step that preempted
            assert set(ids) <= set(running_before), "admitted a waiting sequence in a step that preempted"
        # Admission in queue order: everything admitted comes before everything still waiting.
        admitted = [it.seq for it in out.scheduled if it.seq.seq_id not in running_before]
        if admitted and sched.waiting:
            last = max((s.priority, s.arrival) for s in admitted)
            assert last < (sched.waiting.head.priority, sched.waiting.head.arrival), "admitted out of order"
        # Decodes first: if any prefill got tokens, every surviving decode got its token.
        prefill_tokens = sum(
            it.num_new_tokens for it in out.scheduled if it.seq.seq_id not in decoding_before
        )
        if prefill_tokens:
            for sid in decoding_before:
                assert sid in ids or sid in preempted, f"decode of seq {sid} stalled by a prefill"
        # Scheduled order: decodes, then running prefills, then admissions.
        kinds = [0 if i in decoding_before else 1 for i in ids]
        assert kinds == sorted(kinds), "a prefill was scheduled before a decode"

    def run(self, max_steps: int, check: bool = True, on_step=None) -> None:
        while self.scheduler.has_unfinished():
            assert self.num_steps < max_steps, "the scheduler made no progress (livelock?)"
            out = self.step()
            if check:
                self.scheduler.check_integrity()
            if on_step is not None:
                on_step(self, out)


def random_workload(
    rng: random.Random,
    num_requests: int,
    max_prompt: int,
    max_output: int,
    shared_prefixes: list[list[int]],
) -> list[tuple[list[int], int]]:
    """Prompts of random lengths, many starting with one of a few shared prefixes."""
    work = []
    for _ in range(num_requests):
        prompt: list[int] = []
        if shared_prefixes and rng.random() < 0.6:
            prefix = rng.choice(shared_prefixes)
            prompt = list(prefix[: rng.randint(1, len(prefix))])
        tail = rng.randint(0 if prompt else 1, max(0, max_prompt - len(prompt)))
        prompt += [rng.randrange(VOCAB) for _ in range(tail)]
        prompt = prompt[:max_prompt]
        work.append((prompt, rng.randint(1, max_output)))
    return work
