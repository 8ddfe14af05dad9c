"""One stepping thread of the device executor: its engines, its command queue, its policy.

The loop:
1. run every queued command (waiting for one when no engine has work);
2. ask each attached engine whether it has work, whether that work is urgent, and how many
   sequences it would serve;
3. size this thread's OpenMP team for the step (when the lane has a `team` hook: chat lanes
   stepping side by side split the cores, engine/lane_teams.py);
4. step the engine the policy picks, time the step, charge it to that engine;
5. hand the step's outputs to the engine's `deliver` callback (which forwards them to asyncio).
A step that raises is reported to the engine's `on_error` callback; the loop goes on with the rest.
Everything that touches an engine's state runs on this lane's thread, so engines need no locks.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from swiftserve.engine.errors import ExecutorStoppedError
from swiftserve.engine.omp_threads import set_this_thread_num_threads
from swiftserve.scheduler.step_policy import Candidate, StepPolicy

logger = logging.getLogger("swiftserve.executor")

_STOP = object()
# A step that produced nothing this fast did no work.
_IDLE_STEP_S = 1e-4


class Steppable(Protocol):
    """What the executor needs of an engine."""

    def has_work(self) -> bool: ...

    def is_urgent(self) -> bool:
        """Its next step serves an embedding batch or a request waiting for its first token."""
        ...

    def demand(self) -> int:
        """Sequences (or inputs) its next step serves, >= 1: its fair share scales with it."""
        ...

    def priority(self) -> int:
        """The most urgent (lowest) request priority among its work; the policy lets only the
        most urgent engines share the device, the others step at its floor rate."""
        ...

    def step(self) -> list[Any]: ...


@dataclass
class AttachedEngine:
    engine: Steppable
    deliver: Callable[[list[Any]], None]
    on_error: Callable[[BaseException], None]
    num_steps: int = 0
    busy_seconds: float = 0.0


class ExecutorLane:
    """One thread stepping its engines in its policy's order (see the module docstring).
    on_start runs first on the new thread (e.g. to size its OpenMP team). clock times the steps
    (seconds); tests pass one that their fake engines advance, so the order of steps is exact.
    team: called with whether the lane is about to step (True) or to wait idle (False); returns
    the OpenMP team size the step should use (None: leave it), set only when it changes."""

    def __init__(
        self,
        name: str,
        policy: StepPolicy | None = None,
        on_start: Callable[[], object] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        team: Callable[[bool], int | None] | None = None,
    ) -> None:
        self.name = name
        self.policy = policy or StepPolicy()
        self.on_start = on_start
        self.clock = clock
        self.team = team
        self.team_sizes: list[int] = []  # each change of this thread's team, in order (tests, stats)
        self._engines: dict[str, AttachedEngine] = {}
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._main, name=f"executor-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, wait: bool = True) -> None:
        if self._thread is None:
            return
        self._commands.put(_STOP)
        if wait:
            self._thread.join()
        self._thread = None

    @property
    def is_running(self) -> bool:
        return self._thread is not None

    @property
    def on_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def call(self, fn: Callable[[], Any]) -> Future:
        if self._thread is None:
            raise ExecutorStoppedError(f"the {self.name} executor is not running")
        future: Future = Future()
        self._commands.put((fn, future))
        return future

    def attach(self, name: str, attached: AttachedEngine, weight: float) -> Future:
        def add() -> None:
            self.policy.register(name, weight)
            self._engines[name] = attached

        return self.call(add)

    def detach(self, name: str) -> Future:
        def remove() -> None:
            self._engines.pop(name, None)
            self.policy.remove(name)

        return self.call(remove)

    def stats(self) -> dict[str, tuple[int, float]]:
        return {name: (a.num_steps, a.busy_seconds) for name, a in list(self._engines.items())}

    def _main(self) -> None:
        if self.on_start is not None:
            try:
                self.on_start()
            except Exception:  # noqa: BLE001 - a lane that could not tune itself still steps
                logger.exception("setting up executor lane %s failed", self.name)
        try:
            self._loop()
        finally:
            self._fit_team(False)  # a stopped lane leaves the cores to the others

    def _loop(self) -> None:
        while True:
            candidates = self._candidates()
            if not candidates:
                self._fit_team(False)
            if not self._run_commands(block=not candidates):
                return
            if self._commands.empty():
                self._step(self._candidates())

    def _fit_team(self, is_busy: bool) -> None:
        """Reports busy or idle to the team hook and takes on the team size it hands back."""
        size = self.team(is_busy) if self.team is not None else None
        if size is None or (self.team_sizes and self.team_sizes[-1] == size):
            return
        set_this_thread_num_threads(size)
        self.team_sizes.append(size)

    def _run_commands(self, block: bool) -> bool:
        """Runs the queued commands (waiting for one if block); False once asked to stop."""
        try:
            command = self._commands.get(block=block)
        except queue.Empty:
            return True
        while True:
            if command is _STOP:
                return False
            _run(*command)
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return True

    def _candidates(self) -> list[Candidate]:
        ready = []
        for name, attached in self._engines.items():
            try:
                engine = attached.engine
                if engine.has_work():
                    ready.append(Candidate(name, engine.is_urgent(), engine.demand(), engine.priority()))
            except Exception as exc:  # noqa: BLE001 - a broken engine must not stop the others
                self._fail(name, attached, exc)
        return ready

    def _step(self, candidates: list[Candidate]) -> None:
        name = self.policy.pick(candidates, self.clock())
        if name is None:
            return
        attached = self._engines[name]
        self._fit_team(True)
        start = self.clock()
        try:
            outputs = attached.engine.step()
        except Exception as exc:  # noqa: BLE001 - reported to the engine's owner; others go on
            self._fail(name, attached, exc)
            return
        finally:
            end = self.clock()
            elapsed = end - start
            self.policy.charge(name, elapsed, end)
            attached.num_steps += 1
            attached.busy_seconds += elapsed
        if outputs:
            attached.deliver(outputs)
        elif elapsed < _IDLE_STEP_S:
            time.sleep(0.001)  # nothing was schedulable (e.g. waiting for KV blocks): don't spin

    def _fail(self, name: str, attached: AttachedEngine, exc: BaseException) -> None:
        logger.error("engine %s failed a step: %r", name, exc)
        try:
            attached.on_error(exc)
        except Exception:  # noqa: BLE001
            logger.exception("on_error of %s raised", name)


def _run(fn: Callable[[], Any], future: Future) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(fn())
    except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
        future.set_exception(exc)
