"""How the residency ledger (residency.py) admits a load: where the memory comes from, and in
which order the loads that wait for it go.

Arrival order (`scheduler/arrival_queue.py`): requests carry tickets. Loads that wait are admitted
oldest ticket first, a newer one ahead only by non-blocking backfill (`_turn`); a lease (`hold`)
keeps its model from the loads of its own and newer requests only, so a newer lease never starves
an older waiter, and every wait points at an older request or the request's own earlier stage:
no cycle, no deadlock.
"""

from __future__ import annotations

from collections.abc import Callable

from swiftserve.scheduler.arrival_queue import ArrivalQueue
from swiftserve.scheduler.eviction import AdmissionPlan, obtainable_bytes, plan_admission
from swiftserve.scheduler.host_tier import HostTier
from swiftserve.scheduler.memory_budget import format_bytes
from swiftserve.scheduler.residency_types import LoadDecision, ModelBudget, ModelEntry, Policy, State, Tier


class LoadAdmission:
    """The admissions of the ledger's `models` (its own dict, shared) under `budget_bytes`."""

    def __init__(
        self,
        models: dict[str, ModelEntry],
        budget_bytes: int,
        free_bytes: Callable[[], int],
        clock: Callable[[], float],
        host: HostTier,
        queue: ArrivalQueue,
    ) -> None:
        self._models = models
        self.budget_bytes = budget_bytes
        self.free_bytes = free_bytes
        self._clock = clock
        self.host = host
        self.queue = queue

    def admit(self, entry: ModelEntry, ticket: int | None) -> LoadDecision:
        """ResidencyManager.admit, for the model of `entry`."""
        name = entry.spec.name
        if entry.state in (State.LOADING, State.RESIDENT):
            return LoadDecision(True, reason=f"{name!r} is already {entry.state.value}")
        if entry.state is State.UNLOADING:
            return LoadDecision(False, reason=f"{name!r} is unloading; admit it again once unloaded")
        turn = self._turn(entry.spec, self.queue.new_ticket() if ticket is None else ticket)
        if turn is not None:
            return self._queued(name, ticket, LoadDecision(False, reason=turn))
        plan = self._plan(entry.spec.footprint, ticket)
        if plan is None:
            return self._queued(name, ticket, self._refusal(entry.spec, ticket))
        entry.loading_from = Tier.HOST if entry.state is State.PARKED else Tier.DISK
        if entry.loading_from is Tier.HOST:
            self.host.begin_reload(name)  # its weights stay counted there until it is loaded
        self._apply(entry, plan)
        self.queue.admitted(name)
        return LoadDecision(True, plan.evict, plan.shrink, self._admitted_reason(plan), plan.wait_for)

    def _queued(self, name: str, ticket: int | None, decision: LoadDecision) -> LoadDecision:
        if ticket is not None:
            self.queue.wait(ticket, name, decision.blocked_by)
        return decision

    def _turn(self, spec: ModelBudget, ticket: int) -> str | None:
        """None when the load of `spec` with `ticket` may go now, else why it waits. FIFO with
        non-blocking backfill: behind older waiters it may go only if none of them could load now,
        it fits in free memory and unused KV (evicting nothing), and once every busy model is free
        the memory left without it still covers them all, so it never becomes why they wait."""
        ahead = self.queue.ahead_of(ticket, spec.name)
        if not ahead:
            return None
        ready = [m for t, m in ahead if self._could_admit(m, t)]
        if ready:
            return f"{ready[0]!r} was queued earlier and loads first"
        if self._can_backfill(spec.footprint, [m for _, m in ahead]):
            return None
        return f"queued behind {', '.join(m for _, m in ahead)}, asked for earlier"

    def _could_admit(self, name: str, ticket: int) -> bool:
        entry = self._models[name]
        if entry.state not in (State.COLD, State.PARKED):
            return False
        return self._plan(entry.spec.footprint, ticket) is not None

    def _plan(self, footprint: int, ticket: int | None) -> AdmissionPlan | None:
        return plan_admission(self._models, footprint, self.free_bytes(), self._clock(), ticket)

    def _can_backfill(self, footprint: int, ahead: list[str]) -> bool:
        reclaimable = sum(e.reclaimable_bytes for e in self._models.values())
        owed_ahead = sum(self._models[m].spec.footprint for m in ahead)
        fits_now = footprint <= self.free_bytes() + reclaimable
        return fits_now and self._eventual_bytes() - footprint >= owed_ahead

    def _eventual_bytes(self) -> int:
        """What waiting loads could get once no model is busy: all but the bytes of pinned models,
        of loads in progress and of unloads promised to them."""
        kept = [e for e in self._models.values() if e.state is State.LOADING or e.lent_to is not None]
        kept += [e for e in self._models.values() if e.spec.policy is Policy.PINNED and e not in kept]
        return self.budget_bytes - sum(e.charged for e in kept)

    def _apply(self, entry: ModelEntry, plan: AdmissionPlan) -> None:
        for name, blocks in plan.shrink.items():
            self._models[name].extra_blocks -= blocks
        for name in plan.evict:
            self._models[name].state = State.UNLOADING
        for name in plan.wait_for + plan.evict:
            self._models[name].lent_to = entry.spec.name
        entry.owed = max(0, entry.spec.footprint - self.free_bytes())
        entry.state = State.LOADING

    def _admitted_reason(self, plan: AdmissionPlan) -> str:
        steps = [f"taking back KV blocks of {', '.join(plan.shrink)}"] if plan.shrink else []
        steps += [f"waiting for {', '.join(plan.wait_for)} to unload"] if plan.wait_for else []
        steps += [f"evicting {', '.join(plan.evict)}"] if plan.evict else []
        return "fits after " + "; ".join(steps) if steps else "fits in free memory"

    def _refusal(self, spec: ModelBudget, ticket: int | None) -> LoadDecision:
        busy = [(n, e) for n, e in self._models.items() if e.state is State.RESIDENT]
        busy = [(n, e) for n, e in busy if e.spec.policy is Policy.ON_DEMAND]  # pinned ones stay anyway
        busy = [(n, e) for n, e in busy if not e.is_evictable_for(ticket)]
        detail = [f"{n} ({e.in_flight} in flight, {e.holds} held)" for n, e in busy]
        obtainable = obtainable_bytes(self._models, self.free_bytes(), ticket)
        reason = (
            f"{spec.name!r} needs {format_bytes(spec.footprint)} but only"
            f" {format_bytes(obtainable)} can be freed now"
            + (f"; kept by {', '.join(detail)}" if detail else "; the rest is pinned, loading or promised")
        )
        return LoadDecision(False, reason=reason, blocked_by=tuple(n for n, _ in busy))
