"""How many model loads run at once, and which waiting load goes next. No torch.

A load from a snapshot in the page cache, or one that converts a checkpoint, is CPU work: loads
that overlap share the cores with each other and with the models serving meanwhile, so five loads
at once each take about five times as long, the one needed first included. With a limit, the
waiting loads go in (ticket, asked) order: an older request's loads before a newer one's, and one
request's loads in the order it asked for them, which for a pipeline's pre-warm is the order of
first need. The first stage's model then loads alone, at full speed, while the later ones queue
behind it and load while the earlier stages run.
"""

from __future__ import annotations

import heapq
import itertools
import os


def default_parallel_loads(num_cores: int | None = None) -> int:
    """One load per four cores, at least one: a load keeps one or two cores busy (a snapshot's
    read and mapping one, a checkpoint's conversion about 1.6: benchmarks/pipeline.py reports
    each load's CPU seconds) and the models serving meanwhile need the rest."""
    cores = len(os.sched_getaffinity(0)) if num_cores is None else num_cores
    return max(1, cores // 4)


class LoadSlots:
    """At most `limit` running loads; the others wait, oldest (ticket, asked) first."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the parallel loads limit must be >= 1, got {limit}")
        self.limit = limit
        self.running: set[str] = set()
        self._waiting: list[tuple[int, int, str]] = []  # heap of (ticket, asked, name)
        self._asked = itertools.count()

    def ask(self, name: str, ticket: int) -> bool:
        """The load of `name` (for the request holding `ticket`) wants a slot: True if it runs
        now; else it waits until `release` grants it one."""
        if name in self.running or any(entry[2] == name for entry in self._waiting):
            raise ValueError(f"the load of {name!r} already asked for a slot")
        if len(self.running) < self.limit:  # a free slot means nobody waits (release fills it)
            self.running.add(name)
            return True
        heapq.heappush(self._waiting, (ticket, next(self._asked), name))
        return False

    def release(self, name: str) -> list[str]:
        """The load of `name` ended (done, failed, or gave up waiting): the loads that run now."""
        if name in self.running:
            self.running.discard(name)
        else:
            self._waiting = [entry for entry in self._waiting if entry[2] != name]
            heapq.heapify(self._waiting)
        granted = []
        while self._waiting and len(self.running) < self.limit:
            _, _, next_name = heapq.heappop(self._waiting)
            self.running.add(next_name)
            granted.append(next_name)
        return granted

    @property
    def waiting(self) -> list[str]:
        """The waiting loads, next first."""
        return [entry[2] for entry in sorted(self._waiting)]
