"""The model pool on fake models: loads, evictions, waits, failures and scale to zero."""

import asyncio

import pytest
from swiftserve.router import errors
from swiftserve.router.model_pool import ModelPool
from swiftserve.scheduler.residency_types import BudgetError, State

from swiftserve.engine.errors import ModelInUseError
from swiftserve.engine.served_model import Footprint

MB = 1_000_000


class FakeModel:
    """Holds `size` bytes in `memory` while resident; loads take `load_s` seconds."""

    kind = "chat"

    def __init__(self, name, size, memory, load_s=0.01, fail=0):
        self.name, self.size, self.memory, self.load_s, self.fail = name, size, memory, load_s, fail
        self.loads = self.unloads = 0
        self.engine_requests = 0

    @property
    def is_resident(self):
        return self.name in self.memory

    def footprint(self):
        return Footprint(weight_bytes=self.size, kv_block_bytes=0, kv_floor_blocks=0)

    async def load(self):
        await asyncio.sleep(self.load_s)
        if self.fail:
            self.fail -= 1
            raise OSError("disk on fire")
        assert sum(self.memory.values()) + self.size <= 100 * MB, "over the budget"
        self.memory[self.name] = self.size
        self.loads += 1

    async def unload(self, *, force: bool = False):
        await asyncio.sleep(0.001)
        if self.engine_requests and not force:  # requests the ledger does not count
            raise ModelInUseError(self.name, self.engine_requests)
        del self.memory[self.name]
        self.unloads += 1


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _pool(specs, budget=100 * MB, clock=None, **kwargs):
    memory = {}
    pool = ModelPool(budget, clock=clock or Clock(), reap_interval_s=3600, **kwargs)
    models = {}
    for name, size, policy, *rest in specs:
        models[name] = FakeModel(name, size, memory, **(rest[0] if rest else {}))
        pool.add(models[name], policy, idle_timeout_s=10.0)
    return pool, models, memory


async def _use(pool, name, hold: asyncio.Event | None = None):
    async with pool.use(name) as (model, was_cold):
        if hold is not None:
            await hold.wait()
    assert pool.disagreements() == []
    return model.name, was_cold


def test_pinned_load_at_start_and_on_demand_on_first_use():
    async def main():
        pool, models, memory = _pool([("chat", 40 * MB, "pinned"), ("embed", 10 * MB, "on-demand")])
        await pool.start()
        assert pool.state("chat") is State.RESIDENT and pool.state("embed") is State.COLD
        assert await _use(pool, "embed") == ("embed", True)
        assert await _use(pool, "embed") == ("embed", False)
        assert memory == {"chat": 40 * MB, "embed": 10 * MB}
        await pool.shutdown()
        assert memory == {}

    asyncio.run(main())


def test_a_model_that_does_not_fit_evicts_the_idle_on_demand_one_never_the_pinned():
    async def main():
        clock = Clock()
        specs = [("pin", 40 * MB, "pinned"), ("a", 50 * MB, "on-demand"), ("b", 50 * MB, "on-demand")]
        pool, models, memory = _pool(specs, clock=clock)
        await pool.start()
        await _use(pool, "a")
        clock.now = 5.0
        assert await _use(pool, "b") == ("b", True)
        assert pool.state("a") is State.COLD and pool.state("pin") is State.RESIDENT
        assert set(memory) == {"pin", "b"}
        clock.now = 6.0
        await _use(pool, "a")  # and back: b goes
        assert set(memory) == {"pin", "a"} and models["b"].unloads == 1 and models["a"].loads == 2

    asyncio.run(main())


def test_no_eviction_while_a_request_is_in_flight_the_other_waits():
    async def main():
        pool, models, memory = _pool([("a", 60 * MB, "on-demand"), ("b", 60 * MB, "on-demand")])
        await pool.start()
        gate = asyncio.Event()
        first = asyncio.create_task(_use(pool, "a", gate))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(_use(pool, "b"))
        await asyncio.sleep(0.05)
        assert not second.done() and set(memory) == {"a"}  # queued, not refused
        gate.set()
        assert await first == ("a", True)
        assert await second == ("b", True)
        assert set(memory) == {"b"}

    asyncio.run(main())


def test_a_wait_past_the_load_timeout_is_a_typed_error():
    async def main():
        pool, models, memory = _pool(
            [("a", 60 * MB, "on-demand"), ("b", 60 * MB, "on-demand")], load_timeout_s=0.1
        )
        gate = asyncio.Event()
        first = asyncio.create_task(_use(pool, "a", gate))
        await asyncio.sleep(0.05)
        with pytest.raises(errors.LoadTimeoutError, match="'b' could not be loaded within 0.1 s"):
            await _use(pool, "b")
        gate.set()
        await first

    asyncio.run(main())


def test_concurrent_requests_for_a_cold_model_share_one_load():
    async def main():
        pool, models, memory = _pool([("a", 10 * MB, "on-demand", {"load_s": 0.05})])
        results = await asyncio.gather(*(_use(pool, "a") for _ in range(5)))
        assert models["a"].loads == 1
        assert all(cold for _, cold in results)
        assert pool.entry("a").cold_waits == 5

    asyncio.run(main())


def test_a_failed_load_goes_back_to_cold_with_the_error_and_the_next_request_retries():
    async def main():
        pool, models, memory = _pool([("a", 10 * MB, "on-demand", {"fail": 1}), ("ok", 10 * MB, "pinned")])
        await pool.start()
        with pytest.raises(errors.ModelLoadError, match="disk on fire"):
            await _use(pool, "a")
        assert pool.state("a") is State.COLD
        assert pool.entry("a").last_error == "OSError: disk on fire"
        assert pool.ledger.free_bytes() == 90 * MB  # nothing leaked in the ledger
        assert await _use(pool, "ok") == ("ok", False)  # the others keep serving
        assert await _use(pool, "a") == ("a", True)

    asyncio.run(main())


def test_idle_on_demand_models_scale_to_zero():
    async def main():
        clock = Clock()
        pool, models, memory = _pool([("pin", 10 * MB, "pinned"), ("a", 10 * MB, "on-demand")], clock=clock)
        await pool.start()
        await _use(pool, "a")
        clock.now = 9.0
        assert await pool.reap() == []
        clock.now = 10.5
        assert await pool.reap() == ["a"]
        assert set(memory) == {"pin"} and pool.state("a") is State.COLD
        assert await _use(pool, "a") == ("a", True)

    asyncio.run(main())


def test_admin_unload():
    async def main():
        pool, models, memory = _pool([("pin", 10 * MB, "pinned"), ("a", 10 * MB, "on-demand")])
        await pool.start()
        assert await pool.unload("a") is False  # cold already
        with pytest.raises(errors.ModelPinnedError):
            await pool.unload("pin")
        gate = asyncio.Event()
        busy = asyncio.create_task(_use(pool, "a", gate))
        await asyncio.sleep(0.05)
        with pytest.raises(errors.ModelBusyError):
            await pool.unload("a")
        gate.set()
        await busy
        assert await pool.unload("a") is True
        assert "a" not in memory
        with pytest.raises(errors.ModelNotFoundError):
            await pool.unload("nope")

    asyncio.run(main())


def test_a_model_that_can_never_fit_is_refused_when_added():
    pool = ModelPool(100 * MB)
    with pytest.raises(BudgetError):
        pool.add(FakeModel("huge", 200 * MB, {}), "on-demand")
    pool.add(FakeModel("pin", 70 * MB, {}), "pinned")
    with pytest.raises(BudgetError):
        pool.add(FakeModel("pin2", 40 * MB, {}), "pinned")


def test_an_unload_the_model_refuses_keeps_it_resident_in_the_ledger():
    """The engine still holds a request the ledger no longer counts (a client gone, its abort
    not yet done): the admin unload is ModelBusyError, the reaper tries again on a later tick,
    and the ledger never says cold while the memory is held."""

    async def main():
        clock = Clock()
        pool, models, memory = _pool([("a", 40 * MB, "on-demand"), ("b", 40 * MB, "on-demand")], clock=clock)
        await pool.start()
        await _use(pool, "a")
        await _use(pool, "b")
        models["a"].engine_requests = 1
        with pytest.raises(errors.ModelBusyError):
            await pool.unload("a")
        assert (pool.state("a"), set(memory), pool.disagreements()) == (State.RESIDENT, {"a", "b"}, [])
        clock.now = 11.0  # both idle past their timeout
        assert await pool.reap() == ["b"]  # a refused, b still unloaded
        assert (pool.state("a"), set(memory), pool.disagreements()) == (State.RESIDENT, {"a"}, [])
        models["a"].engine_requests = 0
        assert await pool.reap() == []  # the refusal counts as a use: idle again from now on
        clock.now = 22.0
        assert await pool.reap() == ["a"]
        assert (pool.state("a"), memory, pool.ledger.committed_bytes()) == (State.COLD, {}, 0)

    asyncio.run(main())


def test_shutdown_unloads_a_model_with_requests_in_flight_and_the_next_ones():
    async def main():
        pool, models, memory = _pool([("a", 40 * MB, "pinned"), ("b", 40 * MB, "on-demand")])
        await pool.start()
        await _use(pool, "b")
        gate = asyncio.Event()
        request = asyncio.create_task(_use(pool, "a", gate))
        await asyncio.sleep(0.01)
        models["a"].engine_requests = 1
        await pool.shutdown()
        gate.set()
        await request
        return memory, pool.disagreements(), pool.ledger.committed_bytes()

    assert asyncio.run(main()) == ({}, [], 0)


def test_remove_unloads_completely_and_forgets_even_a_pinned_model():
    async def main():
        pool, models, memory = _pool([("p", 40 * MB, "pinned"), ("a", 40 * MB, "on-demand")])
        await pool.start()
        await _use(pool, "a")
        await pool.remove("p")
        await pool.remove("a")
        return memory, pool.names(), pool.ledger.committed_bytes(), models["p"].unloads

    assert asyncio.run(main()) == ({}, [], 0, 1)
