"""One executor per device: it owns the device and decides which resident engine steps when.

Engines (chat and embedding alike) have no worker threads of their own, so models never fight
over the cores or the GPU: every engine step runs on one of the executor's lanes
(engine/executor_lane.py), in the order `scheduler.step_policy.StepPolicy` picks
(work-conserving, fair per request by measured step time, latency-sensitive work first).

- The chat lanes step chat engines: long decode runs, batched, weighted fair within a lane.
  There are two where the process has two cores or more (one on a single core), so a small
  model's steps run beside a big model's instead of waiting out each of them (issue #13).
  Which lane an engine steps on comes from `plan_lanes` (the router calls it with every chat
  model's weight bytes: the heaviest gets a lane of its own, the others share the rest,
  scheduler/lane_plan.py); an engine the plan does not name steps on chat lane 0, as with one
  lane. Busy chat lanes split the OpenMP threads by the weights planned on them; a lane alone
  gets them all (engine/lane_teams.py), so one busy model is as fast as with a single lane.
- The urgent lane steps engines whose every step is short and gates a caller (embedding
  batches: a pipeline's next stage waits on them). It runs beside the chat lanes' steps, with a
  small OpenMP team of its own (a quarter of the cores, at least one), so an embedding never
  waits out a 100 ms decode step of another model; the chat steps slow only by what the
  embedding takes. On a single core it is off and every engine shares chat lane 0.
Commands that touch an engine's state (adding or aborting a request, unloading) run on the lane
the engine is attached to, between two of its steps, so engines need no locks. An engine stays
on the lane it attached to until it detaches (a new plan applies from its next attach).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from functools import partial
from typing import Any

import torch

from swiftserve.engine.errors import ExecutorStoppedError
from swiftserve.engine.executor_lane import AttachedEngine, ExecutorLane, Steppable
from swiftserve.engine.lane_teams import LaneTeams
from swiftserve.engine.omp_threads import set_this_thread_num_threads
from swiftserve.scheduler.lane_plan import assign_lanes, lane_weights
from swiftserve.scheduler.step_policy import StepPolicy

__all__ = [
    "DeviceExecutor",
    "ExecutorStoppedError",
    "Steppable",
    "default_chat_lanes",
    "default_urgent_lane_threads",
]


def default_chat_lanes(num_cores: int | None = None) -> int:
    """Two chat lanes where this process may run on two cores or more, else one."""
    cores = num_cores if num_cores is not None else len(os.sched_getaffinity(0))
    return 1 if cores < 2 else 2


def default_urgent_lane_threads(num_cores: int | None = None) -> int:
    """A quarter of the cores this process may run on, at least 1; 0 (no urgent lane) on one core."""
    cores = num_cores if num_cores is not None else len(os.sched_getaffinity(0))
    return 0 if cores < 2 else max(1, cores // 4)


class DeviceExecutor:
    """The stepping lanes of one device (see the module docstring). policy: the chat lanes'
    step policy (each lane gets its own copy of its settings). urgent_lane_threads: the urgent
    lane's OpenMP team (None: default_urgent_lane_threads(); 0: no urgent lane). chat_lanes: how
    many (None: default_chat_lanes()). num_threads: the OpenMP threads busy chat lanes share (None:
    torch's count for this process, what a lone lane always had). clock: what the lanes time steps
    with (seconds; a test's fake clock makes the order exact)."""

    def __init__(
        self,
        name: str = "cpu",
        policy: StepPolicy | None = None,
        urgent_lane_threads: int | None = None,
        clock: Callable[[], float] = time.perf_counter,
        chat_lanes: int | None = None,
        num_threads: int | None = None,
    ) -> None:
        self.name = name
        count = default_chat_lanes() if chat_lanes is None else chat_lanes
        if count < 1:
            raise ValueError(f"chat_lanes must be >= 1, got {count}")
        # One lane needs no teams: its thread keeps the process's count, as before lanes.
        threads_to_share = torch.get_num_threads() if num_threads is None else num_threads
        self._teams = LaneTeams(threads_to_share, count) if count > 1 else None
        self.chat = _chat_lanes(name, policy or StepPolicy(), count, self._teams, clock)
        self.main = self.chat[0]
        threads = default_urgent_lane_threads() if urgent_lane_threads is None else urgent_lane_threads
        if threads < 0:
            raise ValueError(f"urgent_lane_threads must be >= 0, got {threads}")
        on_start = partial(set_this_thread_num_threads, threads)
        self.urgent = ExecutorLane(f"{name}-urgent", StepPolicy(), on_start, clock) if threads else None
        self._lane_of: dict[str, ExecutorLane] = {}
        self._plan: dict[str, int] = {}

    @property
    def policy(self) -> StepPolicy:
        return self.main.policy

    def plan_lanes(self, weight_bytes: Mapping[str, int]) -> dict[str, int]:
        """Which chat lane each of these chat models steps on from its next attach (see the
        module docstring); busy lanes split the threads by the weights planned on them."""
        plan = assign_lanes(weight_bytes, len(self.chat))
        self._plan = plan
        if self._teams is not None:
            self._teams.set_weights(lane_weights(plan, weight_bytes, len(self.chat)))
        return dict(plan)

    def lane_of(self, name: str) -> str | None:
        """The name of the lane `name` is attached to (None: not attached)."""
        lane = self._lane_of.get(name)
        return lane.name if lane is not None else None

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
        if urgent_lane and self.urgent is not None:
            lane = self.urgent
        else:
            lane = self.chat[self._plan.get(name, 0)]
        self._lane_of[name] = lane
        return lane.attach(name, AttachedEngine(engine, deliver, on_error), weight)

    def detach(self, name: str) -> Future:
        """Stops stepping `name` (after its step in progress); unknown names are ignored."""
        return self._lane_of.pop(name, self.main).detach(name)

    def stats(self) -> dict[str, tuple[int, float]]:
        """name -> (steps run, seconds spent stepping), a snapshot."""
        return {name: s for lane in self._lanes() for name, s in lane.stats().items()}

    def _lanes(self) -> list[ExecutorLane]:
        return self.chat if self.urgent is None else [*self.chat, self.urgent]


def _chat_lanes(
    name: str, policy: StepPolicy, count: int, teams: LaneTeams | None, clock: Callable[[], float]
) -> list[ExecutorLane]:
    """Lane 0 is named after the executor (its thread: executor-<name>), the others <name>-chat<i>;
    each lane has its own policy with `policy`'s settings (lane 0 has `policy` itself)."""
    lanes = [ExecutorLane(name, policy, clock=clock, team=_team_hook(teams, 0))]
    for i in range(1, count):
        copy = StepPolicy(policy.urgent_slack_s, policy.max_step_gap_s)
        lanes.append(ExecutorLane(f"{name}-chat{i}", copy, clock=clock, team=_team_hook(teams, i)))
    return lanes


def _team_hook(teams: LaneTeams | None, lane: int) -> Callable[[bool], int | None] | None:
    return partial(teams.report, lane) if teams is not None else None
