"""The pool's parallel-loads limit on fake models: loads past the limit wait, then go oldest
request first and one request's in the order it asked (a pipeline's pre-warm: need order); a
failed or cancelled load gives its slot on."""

from __future__ import annotations

import asyncio

import pytest
from swiftserve.router import errors
from swiftserve.router.load_gate import LoadGate
from swiftserve.router.router_config import RouterConfig
from swiftserve.router.runtime import RouterRuntime

from swiftserve.cli_parser import build_parser
from tests.router.test_model_pool import MB, FakeModel, _pool


class LoggedModel(FakeModel):
    def __init__(self, *args, log: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.log = log

    async def load(self):
        self.log.append(f"+{self.name}")
        try:
            await super().load()
        finally:
            self.log.append(f"-{self.name}")


def _logged_pool(names, parallel_loads, log, fail=()):
    pool, models, memory = _pool([], parallel_loads=parallel_loads)
    for name in names:
        model = LoggedModel(name, 10 * MB, memory, load_s=0.02, fail=int(name in fail), log=log)
        pool.add(model, "on-demand", idle_timeout_s=10.0)
    return pool


async def _start_all(pool, asks):
    """start_load for each (model, ticket) in turn, as a pre-warm does; then every load's end."""
    tasks = []
    for name, ticket in asks:
        task, started = await pool.start_load(name, ticket)
        assert started
        tasks.append(task)
    return await asyncio.gather(*tasks, return_exceptions=True)


def test_one_at_a_time_the_loads_run_in_the_order_asked():
    log: list[str] = []

    async def main():
        pool = _logged_pool(["embed", "small", "merge"], 1, log)
        ticket = pool.new_ticket()
        await _start_all(pool, [("embed", ticket), ("small", ticket), ("merge", ticket)])

    asyncio.run(main())
    assert log == ["+embed", "-embed", "+small", "-small", "+merge", "-merge"]


def test_with_room_for_all_every_load_starts_at_once():
    log: list[str] = []

    async def main():
        pool = _logged_pool(["embed", "small", "merge"], 3, log)
        ticket = pool.new_ticket()
        await _start_all(pool, [("embed", ticket), ("small", ticket), ("merge", ticket)])

    asyncio.run(main())
    assert log[:3] == ["+embed", "+small", "+merge"]


def test_an_older_requests_waiting_load_goes_before_a_newer_ones():
    log: list[str] = []

    async def main():
        pool = _logged_pool(["a", "b", "c"], 1, log)
        older, newer = pool.new_ticket(), pool.new_ticket()
        await _start_all(pool, [("a", newer), ("b", newer), ("c", older)])

    asyncio.run(main())
    assert log == ["+a", "-a", "+c", "-c", "+b", "-b"]


def test_a_failed_load_gives_its_slot_to_the_next():
    log: list[str] = []

    async def main():
        pool = _logged_pool(["a", "b"], 1, log, fail=("a",))
        ticket = pool.new_ticket()
        return pool, await _start_all(pool, [("a", ticket), ("b", ticket)])

    pool, (a, b) = asyncio.run(main())
    assert isinstance(a, errors.ModelLoadError) and b is None
    assert log == ["+a", "-a", "+b", "-b"]
    assert pool.loads.gate.slots.running == set() and pool.loads.gate.slots.waiting == []


@pytest.mark.parametrize("cancel", ["waiting", "running"])
def test_a_cancelled_load_leaves_no_slot_behind(cancel):
    async def main():
        gate = LoadGate(1)
        running, done = asyncio.Event(), asyncio.Event()

        async def hold(name):
            async with gate.slot(name, ticket=1):
                running.set()
                await done.wait()

        first = asyncio.create_task(hold("a"))
        await running.wait()
        second = asyncio.create_task(hold("b"))
        await asyncio.sleep(0)
        assert gate.slots.waiting == ["b"]
        victim = second if cancel == "waiting" else first
        victim.cancel()
        await asyncio.gather(victim, return_exceptions=True)
        if cancel == "running":
            await asyncio.sleep(0)
            assert gate.slots.running == {"b"}
        done.set()
        await asyncio.gather(first, second, return_exceptions=True)
        return gate

    gate = asyncio.run(main())
    assert gate.slots.running == set() and gate.slots.waiting == []


def test_the_limit_comes_from_the_settings_and_the_flag_and_is_checked():
    model = ("a=smollm2-135m-instruct",)
    assert RouterRuntime(RouterConfig.build(model)).router.pool.loads.gate.slots.limit is None  # no limit
    assert RouterRuntime(RouterConfig.build(model, parallel_loads=3)).router.pool.loads.gate.slots.limit == 3
    with pytest.raises(ValueError, match="parallel_loads must be >= 1"):
        RouterConfig.build(model, parallel_loads=0)
    assert build_parser().parse_args(["launch", "--parallel-loads", "2"]).parallel_loads == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(["launch", "--parallel-loads", "0"])
