"""Chat lanes on fake engines: planned placement, steps side by side, OpenMP teams split by the
busy lanes, and the step policy still ordering each lane (engine/device_executor.py)."""

import threading

import pytest
import torch
from swiftserve.scheduler.step_policy import StepPolicy

from swiftserve.engine.device_executor import DeviceExecutor, default_chat_lanes
from swiftserve.engine.lane_teams import LaneTeams

from .fake_engines import FakeClock, FakeEngine, StepUntil, attach, steps_until_done, wait_until

TICK = 1 / 256  # step costs exact in binary floating point (as in test_device_executor.py)
COMPOUND = {"big": 2_470_000_000, "smollm2": 270_000_000, "gemma": 536_000_000}


@pytest.mark.parametrize(("cores", "lanes"), [(1, 1), (2, 2), (3, 2), (16, 2)])
def test_two_chat_lanes_from_two_cores_on(cores, lanes):
    assert default_chat_lanes(cores) == lanes


def test_a_bad_lane_count_is_refused():
    with pytest.raises(ValueError, match="chat_lanes"):
        DeviceExecutor("bad", chat_lanes=0)


def _thread() -> str:
    return threading.current_thread().name


def test_planned_engines_step_on_their_lanes_and_their_commands_follow_them():
    executor = DeviceExecutor("plan", urgent_lane_threads=0, chat_lanes=2)
    assert executor.plan_lanes(COMPOUND) == {"big": 0, "gemma": 1, "smollm2": 1}
    executor.start()
    try:
        engines = {name: FakeEngine(name, 2) for name in (*COMPOUND, "unplanned")}
        outputs = {name: attach(executor, engine)[0] for name, engine in engines.items()}
        wait_until(lambda: all(len(out) == 2 for out in outputs.values()))
        lanes = {name: engine.threads for name, engine in engines.items()}
        owners = {name: executor.call(_thread, owner=name).result(timeout=5) for name in engines}
    finally:
        executor.stop()
    assert lanes == {
        "big": {"executor-plan"},
        "gemma": {"executor-plan-chat1"},
        "smollm2": {"executor-plan-chat1"},
        "unplanned": {"executor-plan"},  # not in the plan: lane 0, as with one lane
    }
    assert owners == {name: threads.pop() for name, threads in lanes.items()}


def test_engines_on_two_chat_lanes_step_at_the_same_time():
    executor = DeviceExecutor("overlap", urgent_lane_threads=0, chat_lanes=2)
    executor.plan_lanes({"big": 10, "small": 1})
    small_stepped = threading.Event()
    # big's step ends only once small's step has delivered: one lane could never do both.
    big, small = StepUntil("big", small_stepped), FakeEngine("small", 1)
    executor.start()
    try:
        attach(executor, big)
        assert big.started.wait(timeout=5)
        executor.attach("small", small, lambda o: small_stepped.set(), lambda e: None)
        assert small_stepped.wait(timeout=5), "small waited for big's step"
    finally:
        small_stepped.set()  # never leave big's step hanging
        executor.stop()
    assert big.was_released
    assert big.threads == {"executor-overlap"} and small.threads == {"executor-overlap-chat1"}


class CountsThreads(StepUntil):
    """Records the OpenMP team its step runs with."""

    def __init__(self, name: str, release: threading.Event) -> None:
        super().__init__(name, release)
        self.teams: list[int] = []

    def step(self) -> list:
        self.teams.append(torch.get_num_threads())
        return super().step()


def test_a_lane_alone_gets_every_thread_and_two_busy_lanes_split_them():
    executor = DeviceExecutor("teams", urgent_lane_threads=0, chat_lanes=2, num_threads=2)
    executor.plan_lanes({"big": 10, "small": 1})
    small_done = threading.Event()
    big, small = CountsThreads("big", small_done), CountsThreads("small", threading.Event())
    small.release.set()  # small's step does not wait
    executor.start()
    try:
        attach(executor, big)
        assert big.started.wait(timeout=5)  # big steps alone...
        executor.attach("small", small, lambda o: small_done.set(), lambda e: None)
        assert small_done.wait(timeout=5)  # ...then small steps beside big's step
    finally:
        small_done.set()
        executor.stop()
    assert big.teams == [2] and small.teams == [1]
    assert executor.chat[0].team_sizes == [2] and executor.chat[1].team_sizes == [1]


def test_team_sizes_follow_which_lanes_are_busy():
    teams = LaneTeams(16, 2)
    teams.set_weights([2_470, 806])
    assert teams.report(0, True) == 16  # alone
    assert teams.report(1, True) == 4  # beside lane 0: by planned weight
    assert teams.report(0, True) == 12
    assert teams.report(1, False) is None
    assert teams.report(0, True) == 16  # alone again: work-conserving
    with pytest.raises(ValueError, match="lane weights"):
        teams.set_weights([1])


def _lane1_order(busy: FakeEngine, finishing: FakeEngine, clock: FakeClock) -> tuple[str, set[str]]:
    """Both engines planned on chat lane 1 (a heavier one has lane 0) and attached to a paused
    lane at once; the order of steps up to `finishing`'s last one, as initials, and their threads."""
    executor = DeviceExecutor("lane1", StepPolicy(), urgent_lane_threads=0, clock=clock, chat_lanes=2)
    executor.plan_lanes({"heavy": 100, busy.name: 1, finishing.name: 1})
    return steps_until_done(executor, 1, busy, finishing), busy.threads | finishing.threads


def test_device_time_is_shared_fairly_within_a_lane():
    clock = FakeClock()
    slow = FakeEngine("slow", 4, cost=3 * TICK, clock=clock)
    fast = FakeEngine("fast", 100, cost=TICK, clock=clock)
    # As on a single lane (test_device_executor.py): three fast steps per slow one once level.
    assert _lane1_order(fast, slow, clock) == ("fs" + "ffs" + "fffs" + "fffs", {"executor-lane1-chat1"})


def test_request_priority_holds_within_a_lane():
    clock = FakeClock()
    low = FakeEngine("low", 100, cost=TICK, clock=clock, priority=1)
    high = FakeEngine("high", 3, cost=TICK, clock=clock, priority=0)
    assert _lane1_order(low, high, clock) == ("hhh", {"executor-lane1-chat1"})
