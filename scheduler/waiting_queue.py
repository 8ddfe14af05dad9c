"""The scheduler's queue of waiting sequences: by priority, first come first served within one. No torch.

A sequence's priority is vLLM's: lower runs earlier (0 by default, negative allowed). The queue
numbers sequences as they arrive, and orders them by (priority, arrival number). A preempted
sequence comes back with the number it arrived with, so it takes its old place: ahead of every
later arrival of its priority (what FCFS did by putting it at the front), behind every waiting
sequence of a more urgent priority.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator

from swiftserve.scheduler.sequence import Sequence


def _order(seq: Sequence) -> tuple[int, int]:
    return seq.priority, seq.arrival


class WaitingQueue:
    """Sequences in the order they are admitted in; iteration yields that order."""

    def __init__(self) -> None:
        self._seqs: list[Sequence] = []  # sorted by _order; a few hundred at most, so a list
        self._arrivals = itertools.count()

    def add(self, seq: Sequence) -> None:
        """A new arrival: numbered after every earlier one."""
        seq.arrival = next(self._arrivals)
        self.requeue(seq)

    def requeue(self, seq: Sequence) -> None:
        """A preempted sequence: back at the place its arrival number gives it."""
        bisect.insort(self._seqs, seq, key=_order)

    @property
    def head(self) -> Sequence:
        return self._seqs[0]

    def pop_head(self) -> Sequence:
        return self._seqs.pop(0)

    def remove(self, seq: Sequence) -> None:
        self._seqs.remove(seq)

    def __contains__(self, seq: object) -> bool:
        return seq in self._seqs

    def __len__(self) -> int:
        return len(self._seqs)

    def __bool__(self) -> bool:
        return bool(self._seqs)

    def __iter__(self) -> Iterator[Sequence]:
        return iter(self._seqs)
