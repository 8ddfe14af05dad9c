"""One executor per device: it owns the device and decides which resident engine steps when.

Engines (chat and embedding alike) have no worker threads of their own, so models never fight
over the cores or the GPU: every engine step runs on one of the executor's two lanes
(engine/executor_lane.py), in the order `scheduler.step_policy.StepPolicy` picks
(work-conserving, fair per request by measured step time, latency-sensitive work first).

- The main lane steps chat engines: long decode runs, batched, weighted fair.
- The urgent lane steps engines whose every step is short and gates a caller (embedding
  batches: a pipeline's next stage waits on them). It runs beside the main lane's step, with a
  small OpenMP team of its own (a quarter of the cores, at least one), so an embedding never
  waits out a 100 ms decode step of another model; the main lane's step slows only by what the
  embedding takes. On a single core it is off and every engine shares the main lane.
Commands that touch an engine's state (adding or aborting a request, unloading) run on the lane
the engine is attached to, between two of its steps, so engines need no locks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any

from swiftserve.engine.errors import ExecutorStoppedError
from swiftserve.engine.executor_lane import AttachedEngine, ExecutorLane, Steppable
from swiftserve.engine.omp_threads import set_this_thread_num_threads
from swiftserve.scheduler.step_policy import StepPolicy

__all__ = ["DeviceExecutor", "ExecutorStoppedError", "Steppable", "default_urgent_lane_threads"]


def default_urgent_lane_threads(num_cores: int | None = None) -> int:
    """A quarter of the cores this process may run on, at least 1; 0 (no urgent lane) on one core."""
    cores = num_cores if num_cores is not None else len(os.sched_getaffinity(0))
    return 0 if cores < 2 else max(1, cores // 4)


class DeviceExecutor:
    """The stepping lanes of one device (see the module docstring). urgent_lane_threads: the
    urgent lane's OpenMP team (None: default_urgent_lane_threads(); 0: no urgent lane).
    clock: what the lanes time steps with (seconds; a test's fake clock makes the order exact)."""

    def __init__(
        self,
        name: str = "cpu",
        policy: StepPolicy | None = None,
        urgent_lane_threads: int | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.name = name
        self.main = ExecutorLane(name, policy, clock=clock)
        threads = default_urgent_lane_threads() if urgent_lane_threads is None else urgent_lane_threads
        if threads < 0:
            raise ValueError(f"urgent_lane_threads must be >= 0, got {threads}")
        on_start = partial(set_this_thread_num_threads, threads)
        self.urgent = ExecutorLane(f"{name}-urgent", StepPolicy(), on_start, clock) if threads else None
        self._lane_of: dict[str, ExecutorLane] = {}

    @property
    def policy(self) -> StepPolicy:
        return self.main.policy

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        for lane in self._lanes():
            lane.start()

    def stop(self, wait: bool = True) -> None:
        """Stops after the steps in progress; commands queued before are run first. wait=False
        returns at once (the threads end on their own), for callers that must not wait on a step."""
        for lane in self._lanes():
            lane.stop(wait)

    @property
    def is_running(self) -> bool:
        return self.main.is_running

    @property
    def on_executor_thread(self) -> bool:
        return any(lane.on_thread for lane in self._lanes())

    # -- commands (any thread) --------------------------------------------------------------------
    def call(self, fn: Callable[[], Any], owner: str | None = None) -> Future:
        """Runs fn between two steps on the lane of engine `owner` (main lane when None or not
        attached); its result or exception lands in the future."""
        lane = self._lane_of.get(owner, self.main) if owner is not None else self.main
        return lane.call(fn)

    def attach(
        self,
        name: str,
        engine: Steppable,
        deliver: Callable[[list[Any]], None],
        on_error: Callable[[BaseException], None],
        weight: float = 1.0,
        urgent_lane: bool = False,
    ) -> Future:
        """Starts stepping `engine` under `name`; weight scales its fair share of device time.
        urgent_lane: its steps are short and latency-sensitive (see the module docstring)."""
        lane = self.urgent if urgent_lane and self.urgent is not None else self.main
        self._lane_of[name] = lane
        return lane.attach(name, AttachedEngine(engine, deliver, on_error), weight)

    def detach(self, name: str) -> Future:
        """Stops stepping `name` (after its step in progress); unknown names are ignored."""
        return self._lane_of.pop(name, self.main).detach(name)

    def stats(self) -> dict[str, tuple[int, float]]:
        """name -> (steps run, seconds spent stepping), a snapshot."""
        return {name: s for lane in self._lanes() for name, s in lane.stats().items()}

    def _lanes(self) -> list[ExecutorLane]:
        return [self.main] if self.urgent is None else [self.main, self.urgent]
