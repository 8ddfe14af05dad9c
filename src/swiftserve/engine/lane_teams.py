"""How many OpenMP threads each chat lane of an executor steps with, from which lanes are busy now.

Each chat lane reports, before each of its steps and before it waits idle, whether it has work;
it gets back the team size its next step should use (scheduler.lane_plan.split_threads over the
busy lanes). A lane alone gets every thread, so a lone model is as fast as on a single lane; two
busy lanes split the cores instead of oversubscribing them. A lane's step in progress keeps the team
it started with: a lane that turns busy mid-step of another oversubscribes for at most that step.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from swiftserve.scheduler.lane_plan import split_threads


class LaneTeams:
    """Busy flags and planned weights of `num_lanes` lanes sharing `num_threads` threads."""

    def __init__(self, num_threads: int, num_lanes: int) -> None:
        if num_threads < 1 or num_lanes < 1:
            raise ValueError(f"need >= 1 thread and lane, got {num_threads} and {num_lanes}")
        self.num_threads = num_threads
        self._weights = [0] * num_lanes
        self._busy = [False] * num_lanes
        self._lock = threading.Lock()  # lanes report from their own threads

    def set_weights(self, weights: Sequence[int]) -> None:
        """The weight bytes planned on each lane: busy lanes split the threads in proportion."""
        if len(weights) != len(self._weights):
            raise ValueError(f"need {len(self._weights)} lane weights, got {len(weights)}")
        with self._lock:
            self._weights = list(weights)

    def report(self, lane: int, is_busy: bool) -> int | None:
        """Lane `lane` is about to step (is_busy) or to wait idle: the team size its step should
        use; None when idle (its team does not matter then)."""
        with self._lock:
            self._busy[lane] = is_busy
            if not is_busy:
                return None
            busy = [i for i, b in enumerate(self._busy) if b]
            threads = split_threads(self.num_threads, [self._weights[i] for i in busy])
            return threads[busy.index(lane)]
