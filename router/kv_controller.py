"""Carries the residency ledger's KV decisions out on the engines: the cache follows demand.

The ledger (scheduler/residency.py) counts each resident chat model's KV blocks; this controller
keeps every engine's block pool within that count:
1. On load: the model starts at its floor; it asks the ledger for a first step
   (`kv_demand.initial_target`) and resizes the engine to what was granted.
2. On each pool tick: it reports the engine's use to the ledger, then grows a starved engine by
   what `grow_kv` grants, or shrinks a mostly idle one and hands the blocks back (`KvDemand`).
3. When a load's admission plan takes unused blocks back from a model, the ledger has already
   counted them as gone: the engine is shrunk to its new count before the load proceeds. A shrink
   waits for in-use tail blocks, so what is still backed is trimmed again on later ticks.
The engine never has more usable blocks than the ledger counts; the memory behind retired tail
blocks may lag for as long as a sequence holds one. Steps on one model run one at a time (a lock
per model), so a tick's resize and a reclaim never interleave across their awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from swiftserve.scheduler.kv_demand import KvDemand, KvUsage, initial_target
from swiftserve.scheduler.residency import ResidencyManager
from swiftserve.scheduler.residency_types import State

from swiftserve.engine.errors import ModelNotLoadedError
from swiftserve.engine.served_model import ResizableKV, ServedModel

logger = logging.getLogger("swiftserve.router")


class KvController:
    """See the module docstring. Runs on the event loop, as the ledger does."""

    def __init__(self, ledger: ResidencyManager) -> None:
        self.ledger = ledger
        self._demand: dict[str, KvDemand] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def step(self, model: ServedModel, step: Callable[[ResizableKV], Awaitable[None]]) -> None:
        """Runs one of the steps below on `model` if it is resident with a resizable KV cache."""
        if self.ledger.state(model.name) is not State.RESIDENT or not isinstance(model, ResizableKV):
            return
        try:
            await step(model)
        except ModelNotLoadedError:  # it began unloading meanwhile: nothing left to resize
            pass
        except Exception:  # noqa: BLE001 - the KV size is an optimisation; serving goes on
            logger.exception("resizing the KV cache of %s failed", model.name)

    @contextlib.asynccontextmanager
    async def _exclusive(self, model: ResizableKV) -> AsyncIterator[None]:
        async with self._locks.setdefault(model.name, asyncio.Lock()):
            yield

    async def on_loaded(self, model: ResizableKV) -> None:
        """Give a model that just became resident its first step beyond the floor."""
        self._demand[model.name] = KvDemand()
        async with self._exclusive(model):
            usage = await model.kv_usage()
            if self._is_resident(model.name):
                await self._resize(model, usage, initial_target(usage))

    async def tick(self, model: ResizableKV) -> None:
        """Report use, then grow, shrink or finish a waiting shrink (the module docstring, step 2)."""
        async with self._exclusive(model):
            usage = await model.kv_usage()
            if not self._is_resident(model.name):
                return
            self._report(model.name, usage)
            target = self._demand.setdefault(model.name, KvDemand()).target(usage)
            # Out of step: a shrink still waits for its tail, or the count and the engine differ.
            kv_blocks = self.ledger.kv_blocks(model.name)
            in_step = usage.num_blocks == usage.num_backed_blocks == kv_blocks
            if target != usage.num_blocks or not in_step:
                await self._resize(model, usage, target)

    async def report(self, model: ResizableKV) -> None:
        """Tell the ledger the engine's use now (before an admission decides what to take back)."""
        async with self._exclusive(model):
            usage = await model.kv_usage()
            if self._is_resident(model.name):
                self._report(model.name, usage)

    async def reclaim(self, model: ResizableKV) -> None:
        """Shrink the engine to the count the ledger left it after taking blocks back (step 3)."""
        async with self._exclusive(model):
            target = self.ledger.kv_blocks(model.name)
            usage = await model.resize_kv(target)
        if usage.num_backed_blocks > target:
            logger.info(
                "%s: %d KV blocks still in use past its new size %d; they go as they are freed",
                model.name,
                usage.num_backed_blocks - target,
                target,
            )

    async def _resize(self, model: ResizableKV, usage: KvUsage, target: int) -> None:
        name = model.name
        granted = self.ledger.kv_blocks(name)
        if target > usage.num_blocks and target > granted:
            granted += self.ledger.grow_kv(name, target - granted)
        after = await model.resize_kv(min(target, granted))
        if not self._is_resident(name):
            return
        self._report(name, after)
        surplus = self.ledger.kv_blocks(name) - after.num_backed_blocks
        if surplus > 0:  # grown less than granted, or shrunk: the ledger takes the rest back
            self.ledger.shrink_kv(name, surplus)

    def _report(self, name: str, usage: KvUsage) -> None:
        # A cache that does not commit memory on use (CUDA) cannot hand any back: reporting all of
        # it in use keeps admission plans from counting on its unused blocks.
        used = usage.num_used_blocks if usage.commits_on_use else usage.num_backed_blocks
        self.ledger.report_kv_usage(name, min(used, self.ledger.kv_blocks(name)))

    def _is_resident(self, name: str) -> bool:
        # Every await above may see the model start unloading; the ledger then refuses KV changes.
        return self.ledger.state(name) is State.RESIDENT
