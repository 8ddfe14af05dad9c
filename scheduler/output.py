"""What the scheduler hands the model runner each step: the boundary dataclasses. No torch.

This is the one scheduler module that model_runner/ may import (tests/test_layering.py): the
runner consumes a step's plan but never reaches into the Scheduler, its queues or its block
manager. Like vLLM v1's SchedulerOutput, it is the only message from scheduler to worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swiftserve.scheduler.sequence import Sequence


@dataclass
class ScheduledSeq:
    """num_new_tokens tokens of seq, starting at seq.num_computed_tokens, run in this step."""

    seq: Sequence
    num_new_tokens: int

    @property
    def start(self) -> int:
        return self.seq.num_computed_tokens

    @property
    def is_sampling(self) -> bool:
        """Whether this chunk reaches the sequence's end, so its last position yields a token."""
        return self.seq.num_computed_tokens + self.num_new_tokens == self.seq.num_tokens


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledSeq] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_batched_tokens(self) -> int:
        return sum(item.num_new_tokens for item in self.scheduled)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled
