"""The device executor on fake engines: one thread steps them all, in the policy's order.

Step time is a fake clock that the engines advance by their step's cost, so the order the policy
picks is exact, and lanes running side by side are shown by events, not by elapsed time."""

import threading

import pytest
import torch
from swiftserve.scheduler.step_policy import StepPolicy

from swiftserve.engine.device_executor import (
    DeviceExecutor,
    ExecutorStoppedError,
    default_urgent_lane_threads,
)

from .fake_engines import FakeClock, FakeEngine, StepUntil, attach, steps_until_done, wait_until


@pytest.fixture
def executor():
    ex = DeviceExecutor("test")
    ex.start()
    yield ex
    ex.stop()


def test_every_step_runs_on_the_one_executor_thread(executor):
    a, b = FakeEngine("a", 3), FakeEngine("b", 3)
    out_a, _ = attach(executor, a)
    out_b, _ = attach(executor, b)
    executor.call(lambda: None).result(timeout=5)
    wait_until(lambda: len(out_a) == 3 and len(out_b) == 3)
    assert out_a == ["a:2", "a:1", "a:0"]
    assert a.threads == b.threads == {"executor-test"}
    assert executor.stats()["a"][0] == 3


def test_work_added_by_a_command_is_stepped(executor):
    engine = FakeEngine("a")
    out, _ = attach(executor, engine)

    def add_work():
        engine.work = 2

    executor.call(add_work).result(timeout=5)
    wait_until(lambda: len(out) == 2)
    assert engine.work == 0


# Step costs in 1/256 s: sums of them are exact in binary floating point, so ties between virtual
# times are real ties (broken by who waited longest), and each wait stays far below the 0.2 s
# step-gap floor, which therefore never steps in.
TICK = 1 / 256


def _steps_until_done(name: str, busy: FakeEngine, finishing: FakeEngine, clock: FakeClock) -> str:
    """Both engines attached to a paused executor at once, run until `finishing` has no work;
    the order of steps up to `finishing`'s last one, as the engines' initials."""
    return steps_until_done(DeviceExecutor(name, StepPolicy(), clock=clock), 0, busy, finishing)


def test_device_time_is_shared_fairly_between_busy_engines():
    clock = FakeClock()
    slow = FakeEngine("slow", 4, cost=3 * TICK, clock=clock)
    fast = FakeEngine("fast", 100, cost=TICK, clock=clock)
    # Three fast steps per slow one once they are level (fast first by name, then it catches up):
    # the executor charges each step's measured time, not one unit per step (that would alternate).
    assert _steps_until_done("fair", fast, slow, clock) == "fs" + "ffs" + "fffs" + "fffs"


def test_device_time_follows_the_requests_each_engine_serves():
    # Same step cost, but `big` serves 4 sequences per step and `small` 1: 4 big steps per small
    # one once they are level; charged per engine instead of per request, they would alternate.
    clock = FakeClock()
    big = FakeEngine("big", 100, cost=TICK, rows=4, clock=clock)
    small = FakeEngine("small", 5, cost=TICK, clock=clock)
    assert _steps_until_done("per-request", big, small, clock) == "bs" + "bbbs" + "bbbbs" * 3


def test_a_failing_step_is_reported_and_the_others_go_on(executor):
    class Broken(FakeEngine):
        def step(self):
            raise RuntimeError("boom")

    broken, healthy = Broken("broken", 1), FakeEngine("healthy", 2)
    errors: list = []

    def on_error(exc):
        errors.append(exc)
        broken.work = 0

    executor.attach("broken", broken, lambda o: None, on_error).result(timeout=5)
    out, _ = attach(executor, healthy)
    wait_until(lambda: len(out) == 2 and errors)
    assert str(errors[0]) == "boom"


def test_command_results_and_exceptions_come_back(executor):
    assert executor.call(lambda: 42).result(timeout=5) == 42

    def fail():
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        executor.call(fail).result(timeout=5)


def test_detach_stops_stepping(executor):
    engine = FakeEngine("a", 10**9)
    out, _ = attach(executor, engine)
    wait_until(lambda: len(out) > 0)
    executor.detach("a").result(timeout=5)
    count = len(out)
    # The loop goes on stepping another engine; were `a` still attached, it would get steps too.
    other = FakeEngine("b", 5)
    out_b, _ = attach(executor, other)
    wait_until(lambda: len(out_b) == 5)
    assert len(out) == count
    assert "a" not in executor.stats()


def test_commands_to_a_stopped_executor_are_refused():
    executor = DeviceExecutor("off")
    with pytest.raises(ExecutorStoppedError):
        executor.call(lambda: None)
    executor.start()
    executor.stop()
    with pytest.raises(ExecutorStoppedError):
        executor.call(lambda: None)


@pytest.mark.parametrize(("cores", "threads"), [(1, 0), (2, 1), (3, 1), (4, 1), (8, 2), (16, 4)])
def test_the_urgent_lane_gets_a_quarter_of_the_cores_and_none_on_one_core(cores, threads):
    assert default_urgent_lane_threads(cores) == threads


def test_an_urgent_lane_step_runs_beside_a_long_main_lane_step():
    executor = DeviceExecutor("lanes", urgent_lane_threads=1)
    embedded = threading.Event()
    # The decoder's step ends only once the embedding is delivered: one lane could never do both.
    decoder, embedder = StepUntil("decoder", embedded), FakeEngine("embedder", 1)
    decoder_work_seen: list[int] = []

    def deliver(outputs: list) -> None:
        decoder_work_seen.append(decoder.work)
        embedded.set()

    executor.start()
    try:
        attach(executor, decoder)
        assert decoder.started.wait(timeout=5)
        executor.attach("embedder", embedder, deliver, lambda e: None, urgent_lane=True)
        assert embedded.wait(timeout=5), "the embedding waited for the main lane's step"
    finally:
        embedded.set()  # never leave the decoder's step hanging
        executor.stop()
    assert decoder.was_released and decoder_work_seen == [1]  # delivered inside the decoder's step
    assert decoder.threads == {"executor-lanes"}
    assert embedder.threads == {"executor-lanes-urgent"}


def test_commands_run_on_the_lane_of_their_engine():
    executor = DeviceExecutor("owners", urgent_lane_threads=1)
    executor.start()
    try:
        attach(executor, FakeEngine("chat"))
        executor.attach("embed", FakeEngine("embed"), lambda o: None, lambda e: None, urgent_lane=True)
        thread = lambda: threading.current_thread().name  # noqa: E731
        assert executor.call(thread, owner="chat").result(timeout=5) == "executor-owners"
        assert executor.call(thread, owner="embed").result(timeout=5) == "executor-owners-urgent"
        assert executor.call(thread).result(timeout=5) == "executor-owners"
        executor.detach("embed").result(timeout=5)
        assert executor.call(thread, owner="embed").result(timeout=5) == "executor-owners"
    finally:
        executor.stop()


def test_the_urgent_lane_sizes_only_its_own_thread_team():
    executor = DeviceExecutor("omp", urgent_lane_threads=1)
    executor.start()
    try:
        executor.attach("embed", FakeEngine("embed"), lambda o: None, lambda e: None, urgent_lane=True)
        urgent = executor.call(torch.get_num_threads, owner="embed").result(timeout=5)
        main = executor.call(torch.get_num_threads).result(timeout=5)
    finally:
        executor.stop()
    assert urgent == 1
    assert main == torch.get_num_threads()  # the process's count, untouched by the urgent lane
    # A thread started afterwards still gets the process's count, not the urgent lane's.
    later: list[int] = []
    fresh = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    fresh.start()
    fresh.join()
    assert later == [torch.get_num_threads()]


def test_a_negative_urgent_lane_is_refused():
    with pytest.raises(ValueError, match="urgent_lane_threads"):
        DeviceExecutor("bad", urgent_lane_threads=-1)
