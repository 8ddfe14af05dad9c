"""The models of one process under one memory budget: loads, evictions and scale to zero.

The residency ledger (scheduler/residency.py) decides; this pool carries the decisions out on the
event loop:
1. `use(name)` wraps a request: the model is acquired first (so it cannot be evicted once it is
   loaded for this request), then made resident, and released when the request ends.
2. `ensure_resident` admits a cold model into the budget; the ledger names the victims to evict
   and the unloads to wait for. One task per model loads it; every request for that model waits
   on the same task. When the memory is held by models with requests in flight or leases, the
   request waits until a release or an unload changes that (queued, not refused), up to
   `load_timeout_s`, in arrival order: each request has a ticket (`new_ticket`, or the one of the
   pipeline being `serving`), the ledger admits the oldest waiting load first (scheduler/
   arrival_queue.py), a lease (`hold`) keeps its model only from newer requests' loads, and `use`
   makes a newer request wait before it starts on a model an older load waits for (the loads
   themselves: router/pool_loads.py). Admitted loads then run at most `parallel_loads` at a time
   where that is set (router/load_gate.py; no limit by default), the waiting ones in the same
   (ticket, asked) order.
3. A failed load puts the model back to cold with the error kept in its state and logged; the
   next request tries again.
4. A reaper unloads on-demand models idle past their timeout (scale to zero; router/pool_unloads.py).
   An unload (idle, evicted or admin) parks the weights in host memory when the model's
   `unload_to` and the host tier allow (scheduler/host_tier.py); parking may first drop the least
   recently parked models to disk. A parked model's next load is a reload from host memory.
5. Each chat model's KV cache follows demand (router/kv_controller.py): it gets a first step at
   load, grows or shrinks on the reaper's tick, and gives blocks back before a load that the
   ledger planned to take them for proceeds.
Everything runs on one asyncio loop, so the ledger is never touched from two threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from swiftserve.router import errors, pool_serving
from swiftserve.router.kv_controller import KvController
from swiftserve.router.pool_changes import PoolChanges
from swiftserve.router.pool_entry import PoolEntry, Registration, budget_of, entry_of, is_parked
from swiftserve.router.pool_loads import PoolLoads
from swiftserve.router.pool_unloads import PoolUnloads
from swiftserve.scheduler import residency_types as rt
from swiftserve.scheduler.residency import ResidencyManager
from swiftserve.scheduler.residency_types import Policy, State, UnloadTo

from swiftserve.engine.errors import ModelInUseError
from swiftserve.engine.served_model import ServedModel

logger = logging.getLogger("swiftserve.router")

DEFAULT_LOAD_TIMEOUT_S = 300.0
REAP_INTERVAL_S = 0.5


class ModelPool:
    """See the module docstring."""

    def __init__(
        self,
        budget_bytes: int,
        *,
        host_budget_bytes: int = 0,
        clock: Callable[[], float] = time.monotonic,
        load_timeout_s: float = DEFAULT_LOAD_TIMEOUT_S,
        reap_interval_s: float = REAP_INTERVAL_S,
        parallel_loads: int | None = None,
    ) -> None:
        self.ledger = ResidencyManager(budget_bytes, clock, host_budget_bytes)
        self.kv = KvController(self.ledger)
        self.reap_interval_s = reap_interval_s
        self._entries: dict[str, PoolEntry] = {}
        self._reaper: asyncio.Task | None = None
        self.changes = PoolChanges(load_timeout_s)
        self.unloads = PoolUnloads(self._entries, self.ledger, self.changes.notify)
        self.loads = PoolLoads(
            self._entries, self.ledger, self.kv, self.unloads, self.changes, parallel_loads
        )

    # -- configuration ----------------------------------------------------------------------------
    def add(
        self,
        model: ServedModel,
        policy: Policy | str,
        idle_timeout_s: float | None = None,
        priority: int = 0,
        unload_to: UnloadTo | str = UnloadTo.AUTO,
    ) -> None:
        """Registers a cold model; BudgetError now if it could never fit beside the pinned ones
        (or the host tier, for unload_to host)."""
        self.add_all([Registration(model, policy, idle_timeout_s, priority, unload_to)])

    def add_all(self, registrations: list[Registration]) -> None:
        """Registers several cold models, all or none (BudgetError: none of them)."""
        budgets = [budget_of(r) for r in registrations]
        self.ledger.add_all(budgets)
        for registration, budget in zip(registrations, budgets, strict=True):
            self._entries[budget.name] = PoolEntry(registration.model, budget)

    async def remove(self, name: str) -> None:
        """Unloads a model completely (pinned or not; nothing kept in host memory) and forgets
        it. ModelBusyError while requests of it are in flight."""
        await self._entry(name).settle()
        if self.ledger.state(name) is State.PARKED:
            self.unloads.drop(name)
        if self.ledger.state(name) is State.RESIDENT:
            if not self.ledger.begin_unload(name, force=True):
                raise errors.ModelBusyError(name)
            await self.unloads.start(name, may_park=False)
        self.ledger.remove(name)
        del self._entries[name]
        self.changes.notify()

    def get(self, name: str) -> ServedModel:
        return self._entry(name).model

    def names(self) -> list[str]:
        return list(self._entries)

    def entry(self, name: str) -> PoolEntry:
        return self._entry(name)

    def state(self, name: str) -> State:
        return self.ledger.state(self._entry(name).model.name)

    def disagreements(self) -> list[str]:
        """Where the ledger and the models it counts differ (empty when they agree): a model is
        resident in the ledger exactly when it holds an engine, parked exactly when it holds
        parked weights. Models loading or unloading right now are skipped. Tests check this
        after every load and unload they cause."""
        found = []
        for name, entry in self._entries.items():
            state = self.ledger.state(name)
            if state in (State.LOADING, State.UNLOADING):
                continue
            resident, parked = entry.model.is_resident, is_parked(entry.model)
            if (state is State.RESIDENT) != resident or (state is State.PARKED) != parked:
                found.append(f"{name}: ledger says {state.value}, model resident={resident} parked={parked}")
        return found

    def _entry(self, name: str) -> PoolEntry:
        return entry_of(self._entries, name)

    # -- start and stop ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Loads the pinned models (one after the other) and starts the idle reaper."""
        for name, entry in self._entries.items():
            if entry.budget.policy is Policy.PINNED:
                await self.ensure_resident(name)
        self._reaper = asyncio.create_task(self._reap_forever(), name="model-reaper")

    async def shutdown(self) -> None:
        """Stops the reaper and unloads every model, aborting what is still in flight; errors
        of one don't stop the rest."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for name in self._entries:
            await self._entry(name).settle()
            if self.ledger.state(name) is State.PARKED:
                self.unloads.drop(name)
            if self.ledger.state(name) is not State.RESIDENT:
                continue
            self.ledger.begin_unload(name, force=True, abort=True)
            try:
                await self.unloads.start(name, may_park=False, force=True)
            except Exception:  # noqa: BLE001 - the next models still unload
                logger.exception("unloading %s at shutdown failed", name)

    # -- the request path -------------------------------------------------------------------------
    def new_ticket(self) -> int:
        """An arrival ticket for a request (scheduler/arrival_queue.py): later than every other."""
        return self.ledger.new_ticket()

    def serving(self, ticket: int) -> contextlib.AbstractContextManager[None]:
        """Model calls made in this context, and in the tasks started from it, are the request
        with `ticket`'s (a pipeline's stages): they wait for memory in its place, not as new."""
        return pool_serving.serving(self, ticket)

    def _ticket(self, ticket: int | None) -> int:
        """`ticket`, else the one of the request being served (`serving`), else a new one."""
        if ticket is None:
            ticket = pool_serving.served_ticket(self)
        return self.new_ticket() if ticket is None else ticket

    async def reap(self) -> list[str]:
        """Unloads the on-demand models idle past their timeout; the names unloaded."""
        return await self.unloads.reap()

    @contextlib.asynccontextmanager
    async def use(self, name: str, ticket: int | None = None) -> AsyncIterator[tuple[ServedModel, bool]]:
        """The resident model for one request, and whether the request found it cold. `ticket`:
        the request's place in the arrival order (None: the one being served, else it arrives now)."""
        entry = self._entry(name)
        ticket = self._ticket(ticket)
        await self._wait_turn(name, ticket)
        self.ledger.acquire(name)
        try:
            was_cold = self.ledger.state(name) is not State.RESIDENT
            await self.ensure_resident(name, ticket)
            if was_cold:
                entry.cold_waits += 1
            yield entry.model, was_cold
        finally:
            self.ledger.release(name)
            self.changes.notify()

    async def _wait_turn(self, name: str, ticket: int) -> None:
        """A request does not start on a resident model whose memory an older request's load waits
        for: a stream of newer requests would keep it busy, and the older load waiting, forever."""
        deadline = self.changes.deadline()
        while self.ledger.state(name) is State.RESIDENT and not self.ledger.may_start(name, ticket):
            await self.changes.wait(name, deadline, f"an older request's load waits for {name!r}")

    async def ensure_resident(self, name: str, ticket: int | None = None) -> None:
        """Returns once the model is resident; loads it (evicting others if needed) when cold."""
        ticket = self._ticket(ticket)
        while True:
            loading, _ = await self.start_load(name, ticket)
            if loading is None:
                return
            await asyncio.shield(loading)

    async def start_load(self, name: str, ticket: int | None = None) -> tuple[asyncio.Task | None, bool]:
        """Returns as soon as `name` is resident (None) or loading (its load task): admitted now, or
        once memory allows (queued in arrival order, by `ticket`, up to load_timeout_s). The flag
        says whether this call started the load. A pipeline's pre-warm starts its models' loads this
        way, one after another in order of need, so that loads overlap where the budget allows and
        keep that order where not."""
        return await self.loads.start(name, self._ticket(ticket))

    def start_load_if_free(self, name: str) -> bool:
        """Starts `name`'s load only if it fits free memory now, taking nothing from anyone
        (a learned follower's pre-warm); whether it started."""
        return self.loads.start_if_free(name)

    def hold(self, name: str, ticket: int | None = None) -> int:
        """Keeps `name` from idle unloads, and from eviction by the loads of requests newer than
        `ticket` (a pipeline request's lease; None: a new ticket), until unhold; allowed while cold.
        A newer lease never keeps an older request's load waiting. Returns the ticket."""
        return self.ledger.hold(self._entry(name).model.name, ticket)

    def unhold(self, name: str, ticket: int | None = None) -> None:
        self.ledger.unhold(name, ticket)
        self.changes.notify()  # a load that waited for this model's memory may go now

    # -- unloading --------------------------------------------------------------------------------
    async def unload(self, name: str) -> bool:
        """An admin unload: False when already cold; ModelPinnedError, ModelBusyError as they say.
        A resident model goes where its unload_to says (maybe host memory); a parked one is
        dropped to disk, so unloading twice always returns all of its memory."""
        await self._entry(name).settle()
        if self.ledger.state(name) is State.PARKED:
            self.unloads.drop(name)
            self.changes.notify()
            return True
        if self.ledger.state(name) is not State.RESIDENT:
            return False
        try:
            started = self.ledger.begin_unload(name)
        except rt.PinnedModelError:
            raise errors.ModelPinnedError(name) from None
        if not started:
            raise errors.ModelBusyError(name)
        try:
            await asyncio.shield(self.unloads.start(name))
        except ModelInUseError:  # a request the ledger no longer counted (still aborting)
            raise errors.ModelBusyError(name) from None
        return True

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reap_interval_s)
            try:
                await self.reap()
            except Exception:  # noqa: BLE001 - keep reaping
                logger.exception("idle unload failed")
            await self.follow_kv_demand()

    # -- KV that follows demand -------------------------------------------------------------------
    async def follow_kv_demand(self) -> None:
        """One controller tick for every resident chat model; wakes waiting loads if memory freed."""
        free_before = self.ledger.free_bytes()
        for name in list(self._entries):
            await self.kv.step(self._entries[name].model, self.kv.tick)
        if self.ledger.free_bytes() > free_before:
            self.changes.notify()
