"""The pool's KV controller on fake resizable models, observed through the ledger: a first step at
load, growth while starved, a shrink after a quiet window, and blocks taken back before a load."""

import asyncio

from swiftserve.router.kv_controller import ResizableKV
from swiftserve.router.model_pool import ModelPool
from swiftserve.scheduler.kv_demand import IDLE_TICKS, KvUsage

from swiftserve.engine.served_model import Footprint

MB = 1_000_000
FLOOR, MAX = 8, 100


class FakeKVModel:
    """A chat model whose cache of `num_blocks` (floor 8, max 100) the test fills by hand; a shrink
    stops at `pinned_tail`, the last in-use block id + 1, as the block pool's does."""

    kind = "chat"

    def __init__(self, name: str, events: list):
        self.name, self.events = name, events
        self.is_resident = False
        self.num_blocks = self.backed = MAX  # an engine starts at its maximum, the handle at the floor
        self.used, self.pinned_tail, self.waiting = 0, 0, False

    def footprint(self):
        return Footprint(weight_bytes=10 * MB, kv_block_bytes=MB, kv_floor_blocks=FLOOR)

    async def load(self):
        self.events.append(("load", self.name))
        self.num_blocks = self.backed = FLOOR
        self.is_resident = True

    async def unload(self, *, force: bool = False):
        self.is_resident = False

    async def kv_usage(self) -> KvUsage:
        return KvUsage(self.used, self.num_blocks, self.backed, FLOOR, MAX, self.waiting)

    async def resize_kv(self, num_blocks: int) -> KvUsage:
        self.events.append(("resize", self.name, num_blocks))
        self.num_blocks = min(MAX, max(FLOOR, num_blocks))
        self.backed = max(self.num_blocks, self.pinned_tail)
        return await self.kv_usage()


def _pool(names, budget=100 * MB):
    events: list = []
    pool = ModelPool(budget, reap_interval_s=3600)
    models = {name: FakeKVModel(name, events) for name in names}
    for model in models.values():
        pool.add(model, "on-demand", idle_timeout_s=None)
    return pool, models, events


def test_the_fake_is_what_the_controller_resizes():
    assert isinstance(FakeKVModel("a", []), ResizableKV)


def test_a_loaded_model_gets_its_floor_and_a_first_step():
    async def main():
        pool, models, _ = _pool(["a"])
        await pool.ensure_resident("a")
        assert pool.ledger.kv_blocks("a") == models["a"].num_blocks == FLOOR + 4
        assert pool.ledger.free_bytes() == 100 * MB - 10 * MB - 12 * MB

    asyncio.run(main())


def test_a_busy_model_grows_and_an_idle_one_shrinks_back_to_its_floor():
    async def main():
        pool, models, _ = _pool(["busy", "idle"])
        await pool.ensure_resident("busy")
        await pool.ensure_resident("idle")
        busy, idle = models["busy"], models["idle"]
        busy.used = 12  # all of its 12 blocks: starved
        await pool.follow_kv_demand()
        assert pool.ledger.kv_blocks("busy") == busy.num_blocks == 16
        busy.used, busy.waiting = 10, True  # a request waits for blocks
        await pool.follow_kv_demand()
        assert pool.ledger.kv_blocks("busy") == busy.num_blocks == 20
        busy.waiting = False
        assert pool.ledger.kv_blocks("idle") == 12
        for _ in range(IDLE_TICKS - 3):  # idle has been quiet since its load: 2 ticks so far
            await pool.follow_kv_demand()
        assert pool.ledger.kv_blocks("idle") == 12  # a quiet window is IDLE_TICKS long
        await pool.follow_kv_demand()
        assert pool.ledger.kv_blocks("idle") == idle.num_blocks == FLOOR
        assert pool.ledger.kv_blocks("busy") == 20  # its quiet window began two ticks later
        await pool.follow_kv_demand()
        await pool.follow_kv_demand()
        snapshot = {m.name: m.kv_blocks for m in pool.ledger.models()}
        assert snapshot == {"busy": 15, "idle": 8}  # 1.5 x its peak of 10

    asyncio.run(main())


def test_growth_stops_at_what_the_ledger_can_grant():
    async def main():
        pool, models, _ = _pool(["a"], budget=10 * MB + 20 * MB)  # room for 20 blocks in all
        await pool.ensure_resident("a")
        model = models["a"]
        for _ in range(5):
            model.used = model.num_blocks
            await pool.follow_kv_demand()
        assert pool.ledger.kv_blocks("a") == model.num_blocks == 20
        assert pool.ledger.free_bytes() == 0

    asyncio.run(main())


def test_a_load_takes_unused_blocks_back_and_the_engine_shrinks_before_the_load():
    async def main():
        pool, models, events = _pool(["a", "b"], budget=10 * MB + 40 * MB + 14 * MB)
        await pool.ensure_resident("a")
        a = models["a"]
        for _ in range(5):  # 12 -> 16 -> 20 -> 25 -> 32 -> 40
            a.used = a.num_blocks
            await pool.follow_kv_demand()
        assert pool.ledger.kv_blocks("a") == a.num_blocks == 40 and pool.ledger.free_bytes() == 14 * MB
        a.used = 20  # half of it idle now
        events.clear()
        await pool.ensure_resident("b")  # needs 18 MB: 14 free and 4 blocks of a's
        assert events[:2] == [("resize", "a", 36), ("load", "b")]
        assert pool.ledger.kv_blocks("a") == a.num_blocks == 36
        assert pool.ledger.kv_blocks("b") == FLOOR and pool.ledger.free_bytes() == 0  # no room for a step

    asyncio.run(main())


def test_a_shrink_held_up_by_the_tail_is_finished_on_later_ticks():
    async def main():
        pool, models, _ = _pool(["a"])
        await pool.ensure_resident("a")
        a = models["a"]
        for _ in range(4):
            a.used = a.num_blocks
            await pool.follow_kv_demand()
        assert pool.ledger.kv_blocks("a") == 32  # 12 -> 16 -> 20 -> 25 -> 32
        a.used, a.pinned_tail = 2, 25  # two blocks in use, one of them near the tail
        for _ in range(IDLE_TICKS):
            await pool.follow_kv_demand()
        # asked for the floor; the engine still backs 25 blocks, and so the ledger counts them
        assert a.num_blocks == FLOOR and a.backed == 25 and pool.ledger.kv_blocks("a") == 25
        a.pinned_tail = 0  # the sequence ended
        await pool.follow_kv_demand()
        assert a.backed == FLOOR and pool.ledger.kv_blocks("a") == FLOOR

    asyncio.run(main())
