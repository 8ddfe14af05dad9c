"""How many model loads run at once, and which waiting load goes next. No torch.

A load from a snapshot in the page cache, or one that converts a checkpoint, is CPU work (memory
traffic, disk reads where the file is cold): loads that overlap share the cores, the disk and the
memory bandwidth with each other and with the models serving meanwhile. With a limit, the waiting
loads go in (ticket, asked) order: an older request's loads before a newer one's, and one
request's loads in the order it asked for them, which for a pipeline's pre-warm is the order of
first need. Without one (the default) every admitted load starts at once: measured on a 2-core
host (benchmarks/pipeline.py), loading one at a time in need order did not shorten a cold
pipeline, and made one with a long load later in it wait longer (that load must start at once).
"""

from __future__ import annotations

import heapq
import itertools


class LoadSlots:
    """At most `limit` running loads (None: no limit); the others wait, oldest (ticket, asked) first."""

    def __init__(self, limit: int | None = None) -> None:
        if limit is not None and limit < 1:
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
        if self._has_room():  # a free slot means nobody waits (release fills it)
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
        while self._waiting and self._has_room():
            _, _, next_name = heapq.heappop(self._waiting)
            self.running.add(next_name)
            granted.append(next_name)
        return granted

    def _has_room(self) -> bool:
        return self.limit is None or len(self.running) < self.limit

    @property
    def waiting(self) -> list[str]:
        """The waiting loads, next first."""
        return [entry[2] for entry in sorted(self._waiting)]
