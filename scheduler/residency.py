"""The residency ledger: which models are in device memory, under one byte budget. No torch.

The engine's driver does the real loading and unloading; this ledger decides and keeps count:
    cold --admit--> loading --loaded--> resident --begin_unload / eviction--> unloading --unloaded--> cold
                ^      '--load_failed--> cold                                          |
    parked --admit                                                                     |
       ^  '--drop / dropped for another park--> cold                                   |
       '------------------------------ unloaded(parked=True) --------------------------'
A parked model's weights are in host memory (scheduler/host_tier.py, its own budget): it costs
no bytes of this budget, and its reload is cheap, so the eviction order prefers models that
would be parked (`ModelEntry.reload_cost_s`). `choose_tier` decides where an unloading model goes.
A model counts its footprint (weights + KV floor) plus its extra KV grant against the budget
whenever it is not cold, so `committed_bytes() <= budget` always holds.

A load that needs memory other models hold waits for it: `admit` marks the victims UNLOADING and
links them to the load; an unloading model keeps counting its bytes until `unloaded()`, and then
hands them to the load it was evicted for. A LOADING model therefore counts only the bytes it has
(`owed` is the rest), and `loaded()` is refused while it still waits; the budget is never
promised twice, even while loads and unloads overlap. Where the memory comes from, in order:
free bytes; unused extra KV blocks of resident models; models already unloading; evictions
(`scheduler/eviction.py` chooses them). Loads that wait for memory go in arrival order
(scheduler/load_admission.py).

Not thread-safe, by design: the asyncio router drives it from one thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from swiftserve.scheduler.arrival_queue import ArrivalQueue
from swiftserve.scheduler.host_tier import HostTier, ParkDecision
from swiftserve.scheduler.load_admission import LoadAdmission
from swiftserve.scheduler.memory_budget import check_fits
from swiftserve.scheduler.residency_types import (
    COUNTED_STATES,
    DuplicateModelError,
    LoadDecision,
    ModelBudget,
    ModelEntry,
    ModelResidency,
    PinnedModelError,
    Policy,
    ResidencyStateError,
    State,
    Tier,
    UnknownModelError,
)


class ResidencyManager:
    """The ledger of one process's models under `budget_bytes`, with `host_budget_bytes` of host
    memory for parked weights (0: nothing is parked); see the module docstring."""

    def __init__(
        self, budget_bytes: int, clock: Callable[[], float] = time.monotonic, host_budget_bytes: int = 0
    ) -> None:
        if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int) or budget_bytes < 1:
            raise ValueError(f"budget_bytes must be a positive integer, got {budget_bytes!r}")
        self.budget_bytes = budget_bytes
        self._clock = clock
        self._models: dict[str, ModelEntry] = {}
        self.host = HostTier(host_budget_bytes, clock)
        self.queue = ArrivalQueue()
        self.admission = LoadAdmission(
            self._models, budget_bytes, self.free_bytes, clock, self.host, self.queue
        )

    # -- configuration ----------------------------------------------------------------------------

    def add(self, spec: ModelBudget) -> None:
        """Register a cold model. BudgetError if it could never be resident: its footprint alone,
        the pinned footprints together, or the largest on-demand one beside them exceed the budget;
        or its unload_to is host and the host tier can never hold it."""
        self.add_all([spec])

    def add_all(self, specs: Sequence[ModelBudget]) -> None:
        """Register several cold models, all or none: every check of `add` runs on them together
        before any is registered."""
        names = [spec.name for spec in specs]
        for name in names:
            if name in self._models or names.count(name) > 1:
                raise DuplicateModelError(f"model {name!r} is already registered")
        check_fits(self.budget_bytes, [e.spec for e in self._models.values()] + list(specs))
        for spec in specs:
            self.host.check(spec.name, spec.weight_bytes, spec.unload_to)
        for spec in specs:
            can_park = self.host.can_hold(spec.weight_bytes, spec.unload_to)
            self._models[spec.name] = ModelEntry(spec, can_park=can_park)

    def remove(self, name: str) -> None:
        """Forget a cold model."""
        self._expect(name, State.COLD, "remove")
        del self._models[name]

    # -- requests and holds -----------------------------------------------------------------------

    def acquire(self, name: str) -> None:
        """A request of the model starts: it is not evicted nor unloaded until released."""
        entry = self._get(name)
        entry.in_flight += 1
        entry.last_used = self._clock()

    def release(self, name: str) -> None:
        """A request of the model ended."""
        entry = self._get(name)
        if entry.in_flight == 0:
            raise ResidencyStateError(f"{name!r} released with no request in flight")
        entry.in_flight -= 1
        entry.last_used = self._clock()

    def new_ticket(self) -> int:
        """An arrival ticket for a request (scheduler/arrival_queue.py): later than all before."""
        return self.queue.new_ticket()

    def hold(self, name: str, ticket: int | None = None) -> int:
        """Keep the model from eviction (a pipeline's lease) by the loads of requests that arrived
        after `ticket`'s (None: a new ticket, after every other), and from idle unloads; counted,
        allowed while cold. Returns the ticket, which `unhold` takes."""
        ticket = self.new_ticket() if ticket is None else ticket
        self._get(name).hold_tickets.append(ticket)
        return ticket

    def unhold(self, name: str, ticket: int | None = None) -> None:
        """Ends one lease on the model: the one of `ticket` (None: the latest taken)."""
        tickets = self._get(name).hold_tickets
        if not tickets or (ticket is not None and ticket not in tickets):
            raise ResidencyStateError(f"{name!r} unheld more often than held")
        tickets.remove(tickets[-1] if ticket is None else ticket)

    def may_start(self, name: str, ticket: int) -> bool:
        """Whether a request with `ticket` may start on `name` now: not while a load queued by an
        older request waits for `name`'s memory (a newer request would keep it from it)."""
        return not self.queue.is_wanted(name, ticket)

    def withdraw(self, name: str, ticket: int) -> None:
        """The request with `ticket` no longer waits for the load of `name` (it gave up)."""
        self.queue.withdraw(ticket, name)

    # -- admission --------------------------------------------------------------------------------

    def admit(self, name: str, ticket: int | None = None) -> LoadDecision:
        """Reserve the model's footprint so that it can load; LoadDecision says what to do first.

        A cold or parked model that fits in free memory becomes LOADING at once. Otherwise the memory comes
        from unused extra KV, then models already unloading, then victims chosen by
        `eviction.choose_victims` among resident on-demand models with no requests and no leases of
        requests older than `ticket`'s or its own (bytes, idle time and reload cost decide; see
        scheduler/eviction.py). If all of that cannot cover it, nothing changes.

        Arrival order: loads that wait for memory are admitted oldest ticket first (`_turn`). With a
        ticket, a refused load waits in `queue` under it until admitted or withdrawn; None: a request
        newer than all others that does not queue (an admin load). Idempotent for a loading or
        resident model."""
        return self.admission.admit(self._get(name), ticket)

    # -- transitions ------------------------------------------------------------------------------

    def loaded(self, name: str, seconds: float | None = None) -> None:
        """LOADING -> RESIDENT; refused while the memory it waits for is still held. `seconds`,
        the measured load time, becomes the reload cost from the tier it loaded from."""
        entry = self._expect(name, State.LOADING, "mark loaded")
        if entry.owed:
            raise ResidencyStateError(f"{name!r} cannot be loaded yet: waiting on {self._waiting_on(name)}")
        self._unlink(name)  # models still unloading for it owe it nothing more
        if entry.loading_from is Tier.HOST:
            self.host.unpark(name)  # its weights are the resident ones now
        if seconds is not None:
            entry.measured_reload_s[entry.loading_from] = seconds
        entry.state, entry.loads, entry.last_used = State.RESIDENT, entry.loads + 1, self._clock()
        entry.last_error = None  # the failure it reported is over

    def load_failed(self, name: str, error: str) -> None:
        """LOADING -> COLD: its bytes are freed (a failed reload from host memory drops the weights
        parked there too); models unloading for it simply finish unloading."""
        entry = self._expect(name, State.LOADING, "fail loading")
        self._unlink(name)
        if self.host.is_parked(name):
            self.host.unpark(name)
        entry.state, entry.owed, entry.last_error = State.COLD, 0, error

    def _unlink(self, name: str) -> None:
        for other in self._models.values():
            if other.lent_to == name:
                other.lent_to = None

    def begin_unload(self, name: str, *, force: bool = False, abort: bool = False) -> bool:
        """RESIDENT -> UNLOADING (an admin unload or an idle timeout); False, changing nothing,
        while requests are in flight or holds exist, unless abort (a shutdown: the driver aborts
        them). A pinned model needs force."""
        entry = self._expect(name, State.RESIDENT, "unload")
        if entry.spec.policy is Policy.PINNED and not force:
            raise PinnedModelError(f"{name!r} is pinned; unloading it needs force")
        if entry.is_busy and not abort:
            return False
        entry.state = State.UNLOADING
        return True

    def choose_tier(self, name: str) -> ParkDecision:
        """Where an UNLOADING model's weights go (scheduler/host_tier.py). For HOST the tier counts
        them from now on; the parked models in `drop` are COLD now: the driver frees their weights."""
        entry = self._expect(name, State.UNLOADING, "choose the tier of")
        decision = self.host.park(name, entry.spec.weight_bytes, entry.spec.unload_to)
        for victim in decision.drop:
            self._models[victim].state = State.COLD
        return decision

    def unloaded(self, name: str, parked: bool = False) -> None:
        """UNLOADING -> COLD, or PARKED when its weights went to host memory (after choose_tier
        said HOST); its bytes go to the load it was evicted for, if any, else are free."""
        entry = self._expect(name, State.UNLOADING, "mark unloaded")
        if parked and not self.host.is_parked(name):
            raise ResidencyStateError(f"{name!r} was parked without a place in the host tier")
        if not parked and self.host.is_parked(name):
            self.host.unpark(name)  # the tier said host, but the weights were freed after all
        if entry.lent_to is not None:
            target = self._models[entry.lent_to]
            target.owed -= min(target.owed, entry.full_bytes)
        entry.state = State.PARKED if parked else State.COLD
        entry.unloads, entry.lent_to = entry.unloads + 1, None
        entry.extra_blocks = entry.used_blocks = 0

    def unload_failed(self, name: str) -> None:
        """UNLOADING -> RESIDENT: the unload did not happen (its weights are still held); a place
        the host tier had counted for them is given back. A load it was evicted for fails."""
        entry = self._expect(name, State.UNLOADING, "mark the unload failed of")
        if self.host.is_parked(name):
            self.host.unpark(name)
        entry.state, entry.last_used = State.RESIDENT, self._clock()

    def drop(self, name: str) -> None:
        """PARKED -> COLD: the driver frees the parked weights (an admin unload, a shutdown)."""
        self._expect(name, State.PARKED, "drop")
        self.host.unpark(name)
        self._models[name].state = State.COLD

    def expired(self) -> list[str]:
        """Resident on-demand models idle past their idle_timeout_s with no requests nor holds,
        longest idle first (then by name)."""
        now = self._clock()
        found = [
            e
            for e in self._models.values()
            if e.is_evictable and e.spec.idle_timeout_s is not None
            if e.idle_s(now) > e.spec.idle_timeout_s
        ]
        return [e.spec.name for e in sorted(found, key=lambda e: (-e.idle_s(now), e.spec.name))]

    # -- KV that follows demand -------------------------------------------------------------------

    def grow_kv(self, name: str, blocks: int) -> int:
        """Grant up to `blocks` extra KV blocks from free memory (never by evicting); the number granted."""
        entry = self._expect(name, State.RESIDENT, "grow the KV cache of")
        _check_blocks(blocks)
        size = entry.spec.kv_block_bytes
        granted = blocks if size == 0 else min(blocks, self.free_bytes() // size)
        entry.extra_blocks += granted
        return granted

    def shrink_kv(self, name: str, blocks: int) -> None:
        """The engine gives back `blocks` extra KV blocks (none of them in use)."""
        entry = self._expect(name, State.RESIDENT, "shrink the KV cache of")
        _check_blocks(blocks)
        if blocks > entry.extra_blocks or self.kv_blocks(name) - blocks < entry.used_blocks:
            raise ValueError(
                f"{name!r} cannot give back {blocks} KV blocks: {entry.extra_blocks} extra,"
                f" {entry.used_blocks} of {self.kv_blocks(name)} in use"
            )
        entry.extra_blocks -= blocks

    def report_kv_usage(self, name: str, used_blocks: int) -> None:
        """How many of its KV blocks the engine uses now. Only extra blocks unused at the last report
        are taken back for a load, so the driver reports every engine's usage before `admit`."""
        entry = self._expect(name, State.RESIDENT, "report KV usage of")
        _check_blocks(used_blocks)
        if used_blocks > self.kv_blocks(name):
            raise ValueError(f"{name!r} uses {used_blocks} KV blocks but has {self.kv_blocks(name)}")
        entry.used_blocks = used_blocks

    def kv_blocks(self, name: str) -> int:
        """The model's KV blocks: floor + extra while it holds memory, 0 when cold."""
        entry = self._get(name)
        return entry.spec.kv_floor_blocks + entry.extra_blocks if entry.state in COUNTED_STATES else 0

    # -- introspection ----------------------------------------------------------------------------

    def committed_bytes(self) -> int:
        return sum(e.charged for e in self._models.values())

    def free_bytes(self) -> int:
        return self.budget_bytes - self.committed_bytes()

    def fits_free(self, name: str) -> bool:
        """Whether the cold or parked `name` would load now into free memory alone: no eviction, no
        KV taken back, no load waiting for memory ahead of it (a speculative load's condition)."""
        entry = self._get(name)
        if entry.state not in (State.COLD, State.PARKED) or self.queue.waiting():
            return False
        return entry.spec.footprint <= self.free_bytes()

    def state(self, name: str) -> State:
        return self._get(name).state

    def models(self) -> list[ModelResidency]:
        """One snapshot per model, in the order they were added."""
        return [self._snapshot(e) for e in self._models.values()]

    def _snapshot(self, e: ModelEntry) -> ModelResidency:
        name = e.spec.name
        return ModelResidency(
            name,
            e.state,
            e.spec.policy,
            e.charged,
            self.kv_blocks(name),
            e.in_flight,
            e.holds,
            e.last_used,
            e.loads,
            e.unloads,
            e.last_error,
            self._waiting_on(name),
            self.host.parked_bytes(name),
        )

    def _waiting_on(self, name: str) -> tuple[str, ...]:
        if not self._models[name].owed:
            return ()
        return tuple(n for n, e in self._models.items() if e.lent_to == name)

    def _get(self, name: str) -> ModelEntry:
        entry = self._models.get(name)
        if entry is None:
            raise UnknownModelError(f"unknown model {name!r}")
        return entry

    def _expect(self, name: str, state: State, action: str) -> ModelEntry:
        entry = self._get(name)
        if entry.state is not state:
            raise ResidencyStateError(
                f"cannot {action} {name!r}: it is {entry.state.value}, not {state.value}"
            )
        return entry


def _check_blocks(blocks: int) -> None:
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0:
        raise ValueError(f"a number of KV blocks must be an integer >= 0, got {blocks!r}")
