"""Continuous batching: which sequences run in the next step, and how many tokens each. No torch.

There are no prefill and decode phases, only token counts: each step spends a token budget.
  1. Running sequences that decode (one token each) come first, so a long prompt never stalls them.
  2. Running sequences still in a chunked prefill take what budget is left.
  3. Waiting sequences are admitted in priority order (lower first; first come, first served
     within a priority: waiting_queue.py), after a prefix-cache lookup, their prompts chunked to
     the budget that remains. Admission stops at a head that does not fit, so a large urgent
     request is never overtaken by smaller, less urgent ones.
Within 1. and 2. the more urgent sequences go first too, should the budget run out.
When blocks run out, a running sequence of the lowest priority (the highest number) is preempted,
the newest admitted among those: its blocks are freed and it goes back to its place in the queue,
to be recomputed later (its cached prefix blocks often survive). With one priority everywhere
this is plain FCFS with newest-first preemption.
"""

from __future__ import annotations

from swiftserve.scheduler.block_manager import BlockManager
from swiftserve.scheduler.config import SchedulerConfig
from swiftserve.scheduler.output import ScheduledSeq, SchedulerOutput
from swiftserve.scheduler.sequence import Sequence, SequenceStatus
from swiftserve.scheduler.waiting_queue import WaitingQueue

# The boundary dataclasses live in output.py (model_runner imports only that); they stay
# importable from here for the scheduler's own callers.
__all__ = ["ScheduledSeq", "Scheduler", "SchedulerOutput"]


class Scheduler:
    def __init__(self, config: SchedulerConfig, num_blocks: int) -> None:
        self.config = config
        self.block_manager = BlockManager(num_blocks, config.block_size, config.enable_prefix_caching)
        self.waiting = WaitingQueue()
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        # The last step ran short of KV blocks (preempted, or left a sequence waiting for them):
        # the signal that the cache should grow.
        self.is_short_of_blocks = False

    def resize(self, num_blocks: int) -> int:
        """Grow or shrink the KV block pool at its tail; the number of block ids still backed."""
        return self.block_manager.resize(num_blocks)

    # -- queue ---------------------------------------------------------------------------------
    def can_accept(self, num_seqs: int = 1) -> bool:
        bound = self.config.max_num_waiting
        return bound is None or len(self.waiting) + num_seqs <= bound

    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        self.waiting.add(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    # -- one step ------------------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        self.is_short_of_blocks = False
        budget = self.config.max_num_batched_tokens
        # Stable sorts: admission order within a priority.
        decoding = sorted((s for s in self.running if s.num_uncomputed_tokens == 1), key=_priority)
        prefilling = sorted((s for s in self.running if s.num_uncomputed_tokens > 1), key=_priority)
        for seq in decoding + prefilling:
            if budget == 0:
                break
            if seq.status is SequenceStatus.RUNNING:  # not preempted earlier in this step
                budget -= self._schedule_running(seq, min(seq.num_uncomputed_tokens, budget), out)
        if not out.preempted:
            self._admit_waiting(budget, out)
        return out

    def _schedule_running(self, seq: Sequence, num_tokens: int, out: SchedulerOutput) -> int:
        """Schedule num_tokens of a running seq, preempting newer ones for blocks. Returns the
        budget used, net of what preempted sequences gave back."""
        refund = 0
        while not self.block_manager.allocate(seq, num_tokens):
            self.is_short_of_blocks = True
            victim = self._victim()
            refund += self._unschedule(victim, out)
            self._preempt(victim, out)
            if victim is seq:
                return -refund
        out.scheduled.append(ScheduledSeq(seq, num_tokens))
        return num_tokens - refund

    def _victim(self) -> Sequence:
        """The running sequence to preempt: of the lowest priority, the newest admitted."""
        return max(reversed(self.running), key=_priority)  # max keeps the first of equals

    def _unschedule(self, seq: Sequence, out: SchedulerOutput) -> int:
        for i, item in enumerate(out.scheduled):
            if item.seq is seq:
                del out.scheduled[i]
                return item.num_new_tokens
        return 0

    def _preempt(self, seq: Sequence, out: SchedulerOutput) -> None:
        self.running.remove(seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.requeue(seq)
        out.preempted.append(seq)

    def _admit_waiting(self, budget: int, out: SchedulerOutput) -> None:
        block_size = self.block_manager.block_size
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting.head
            # A hit would skip positions whose prompt logprobs are still wanted (sequence.py).
            cached = [] if seq.needs_prompt_logprobs else self.block_manager.find_cached_prefix(seq)
            num_tokens = min(seq.num_tokens - len(cached) * block_size, budget)
            if not self.block_manager.allocate(seq, num_tokens, cached):
                self.is_short_of_blocks = True
                break
            self.waiting.pop_head()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            out.scheduled.append(ScheduledSeq(seq, num_tokens))
            budget -= num_tokens

    def update(self, out: SchedulerOutput) -> None:
        """Record that the step ran: advance progress and index newly full blocks for reuse."""
        for item in out.scheduled:
            if item.seq.status is not SequenceStatus.RUNNING:  # aborted while the step ran
                continue
            before = item.seq.num_computed_tokens
            item.seq.num_computed_tokens += item.num_new_tokens
            self.block_manager.cache_computed_blocks(item.seq, before)

    # -- leaving -------------------------------------------------------------------------------
    def finish(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self._release(seq)

    def abort(self, seq: Sequence) -> None:
        """Drop seq wherever it is; its blocks go back to the pool."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self._release(seq)

    def _release(self, seq: Sequence) -> None:
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED

    def check_integrity(self) -> None:
        self.block_manager.check_integrity(self.running)
        assert all(not s.block_ids for s in self.waiting), "a waiting sequence holds blocks"


def _priority(seq: Sequence) -> int:
    return seq.priority
