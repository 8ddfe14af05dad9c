"""Fake engines and helpers for the device executor's tests: steps cost fake-clock time, and
lanes running side by side are shown by events, not by elapsed time."""

from __future__ import annotations

import threading
import time


class FakeClock:
    """Device time that moves only when a fake engine steps: each step advances it by its cost."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeEngine:
    """`work` steps to do, each producing one output and costing `cost` seconds of `clock`."""

    def __init__(
        self,
        name: str,
        work: int = 0,
        cost: float = 0.0,
        urgent: bool = False,
        rows: int = 1,
        clock: FakeClock | None = None,
        priority: int = 0,
    ) -> None:
        self.name, self.work, self.cost, self.urgent, self.rows = name, work, cost, urgent, rows
        self.request_priority = priority
        self.clock = clock
        self.threads: set[str] = set()
        self.log: list[str] | None = None

    def has_work(self) -> bool:
        return self.work > 0

    def is_urgent(self) -> bool:
        return self.urgent

    def demand(self) -> int:
        return self.rows

    def priority(self) -> int:
        return self.request_priority

    def step(self) -> list:
        self.threads.add(threading.current_thread().name)
        if self.log is not None:
            self.log.append(self.name)
        if self.clock is not None:
            self.clock.advance(self.cost)
        self.work -= 1
        return [f"{self.name}:{self.work}"]


def attach(executor, engine, weight=1.0):
    delivered, errors = [], []
    executor.attach(engine.name, engine, delivered.extend, errors.append, weight).result(timeout=5)
    return delivered, errors


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def steps_until_done(executor, lane: int, busy: FakeEngine, finishing: FakeEngine) -> str:
    """Both engines attached at once to chat `lane` of `executor` (paused meanwhile), run until
    `finishing` has no work; the order of steps up to `finishing`'s last one, as initials."""
    log: list[str] = []
    busy.log = finishing.log = log
    executor.start()
    try:
        gate = threading.Event()
        executor.chat[lane].call(gate.wait)  # hold the lane until both are attached
        executor.attach(busy.name, busy, lambda o: None, lambda e: None)
        executor.attach(finishing.name, finishing, lambda o: None, lambda e: None)
        gate.set()
        wait_until(lambda: finishing.work == 0)
    finally:
        executor.stop()
    steps = log[: len(log) - log[::-1].index(finishing.name)]
    return "".join(step[0] for step in steps)


class StepUntil(FakeEngine):
    """One main-lane step that lasts until `release` is set (a long decode step)."""

    def __init__(self, name: str, release: threading.Event) -> None:
        super().__init__(name, 1)
        self.release, self.started = release, threading.Event()
        self.was_released = False

    def step(self) -> list:
        self.started.set()
        self.was_released = self.release.wait(timeout=10)
        return super().step()
