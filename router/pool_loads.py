"""The model pool's loads: a cold model admitted into the budget (queued in arrival order, by
ticket, while memory does not allow), one task per model that loads it, and what the ledger's plan
asks of that load first: KV blocks taken back from other models, evictions, unloads to wait for
(model_pool.py's module docstring, 2 and 3)."""

from __future__ import annotations

import asyncio
import logging
import time

from swiftserve.router import errors
from swiftserve.router.kv_controller import KvController
from swiftserve.router.load_gate import LoadGate
from swiftserve.router.pool_changes import PoolChanges
from swiftserve.router.pool_entry import PoolEntry, entry_of, is_parked
from swiftserve.router.pool_unloads import PoolUnloads
from swiftserve.scheduler.residency import ResidencyManager
from swiftserve.scheduler.residency_types import LoadDecision, State, Tier

logger = logging.getLogger("swiftserve.router")


class PoolLoads:
    """Loads of the pool's models; every request for a model waits on its one load task. Admitted
    loads run at most `parallel_loads` at a time where that is set (load_gate.py)."""

    def __init__(
        self,
        entries: dict[str, PoolEntry],
        ledger: ResidencyManager,
        kv: KvController,
        unloads: PoolUnloads,
        changes: PoolChanges,
        parallel_loads: int | None,
    ) -> None:
        self._entries = entries
        self.ledger = ledger
        self.kv = kv
        self.unloads = unloads
        self.changes = changes
        self.gate = LoadGate(parallel_loads)

    async def start(self, name: str, ticket: int) -> tuple[asyncio.Task | None, bool]:
        """As ModelPool.start_load, for a request with `ticket`."""
        try:
            return await self._start(name, ticket)
        except BaseException:
            self.ledger.withdraw(name, ticket)
            self.changes.notify()  # a load queued behind this one may go now
            raise

    def start_if_free(self, name: str) -> bool:
        """Starts `name`'s load if it is cold (or parked) and fits free memory alone (ledger.fits_free),
        with nothing to wait for, evict or take back; whether it started. A guess's load (a learned
        follower) must not cost anyone else their memory or their place."""
        if not self.ledger.fits_free(name):
            return False
        ticket = self.ledger.new_ticket()  # the newest: any request's load goes ahead of a guess's
        decision = self.ledger.admit(name, ticket)
        assert decision.admitted and not (decision.evict or decision.wait_for or decision.shrink)
        self._begin(name, decision, ticket)
        return True

    async def _start(self, name: str, ticket: int) -> tuple[asyncio.Task | None, bool]:
        entry = entry_of(self._entries, name)
        deadline = self.changes.deadline()
        while True:
            state = self.ledger.state(name)
            if state is State.RESIDENT:
                return None, False
            if state is State.LOADING:
                # admit() and the task that loads are made with no await between: it has its task.
                assert entry.load_task is not None
                return entry.load_task, False
            if state is State.UNLOADING:
                await entry_of(self._entries, name).settle()
                if self.ledger.state(name) is State.UNLOADING:  # evicted, its unload not started yet
                    await self.changes.wait(name, deadline, f"{name!r} is being evicted")
                continue
            await self._report_kv_usage()  # so the ledger takes back only blocks unused now
            # Another request got there first unless it is still cold or parked.
            if self.ledger.state(name) not in (State.COLD, State.PARKED):
                continue
            decision = self.ledger.admit(name, ticket)
            if decision.admitted:
                return self._begin(name, decision, ticket), True
            await self.changes.wait(name, deadline, decision.reason)

    def _begin(self, name: str, decision: LoadDecision, ticket: int) -> asyncio.Task:
        """The task that loads the admitted `name`. Its failure is logged and kept as the model's
        last_error, and whoever awaits the task gets it; a load nobody awaits (a pre-warm or a
        guess whose request ended first) must not also be reported as never retrieved."""
        entry = entry_of(self._entries, name)
        entry.load_task = asyncio.create_task(self._load(name, decision, ticket), name=f"load-{name}")
        entry.load_task.add_done_callback(_retrieve_exception)
        self.changes.notify()  # loads refused while this one went first may go now
        return entry.load_task

    async def _load(self, name: str, decision: LoadDecision, ticket: int) -> None:
        entry = self._entries[name]
        try:
            for other in decision.shrink:
                await self.kv.step(self._entries[other].model, self.kv.reclaim)
            evictions = [self.unloads.start(v) for v in decision.evict]
            await asyncio.gather(*evictions)
            for other in decision.wait_for:
                await entry_of(self._entries, other).settle()
            tier = Tier.HOST if is_parked(entry.model) else Tier.DISK
            async with self.gate.slot(name, ticket):
                start = time.perf_counter()
                await entry.model.load()
                seconds = time.perf_counter() - start
        except Exception as exc:  # noqa: BLE001 - the model goes back to cold; requests get the error
            entry.last_error = f"{type(exc).__name__}: {exc}"
            self.ledger.load_failed(name, entry.last_error)
            logger.error("loading %s failed: %s", name, entry.last_error)
            raise errors.ModelLoadError(name, entry.last_error) from exc
        finally:
            self.changes.notify()
        self.ledger.loaded(name, seconds)
        entry.last_error = None  # it loads now: an old failure would only mislead
        entry.load_seconds.append(seconds)
        entry.loads_by_tier[tier.value] += 1
        logger.info(
            "loaded %s from %s in %.3f s", name, "host memory" if tier is Tier.HOST else "disk", seconds
        )
        await self.kv.step(self._entries[name].model, self.kv.on_loaded)

    async def _report_kv_usage(self) -> None:
        for name in list(self._entries):
            await self.kv.step(self._entries[name].model, self.kv.report)


def _retrieve_exception(task: asyncio.Task) -> None:
    """Marks a failed load's error as seen (it is logged and kept as the model's last_error)."""
    if not task.cancelled():
        task.exception()
