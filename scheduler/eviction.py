"""Where the memory for a load comes from: unused KV blocks first, then idle models. No torch.

`plan_admission` takes, in order: free bytes; unused extra KV blocks of resident models (largest
first); models already unloading; evictions. An evictable model is credited only with the bytes
beyond its unused KV (those could be taken back without evicting it).

Victims (`choose_victims`) are chosen by bytes, idle time and reload cost, never by how many
models are resident:
1. Order: each candidate's cost is `reload_cost_s / (1 + idle_s)`, the reload time it would cost
   (from host memory for a model the host tier would take: `ModelEntry.reload_cost_s`),
   discounted by how long it has been idle (a model idle for long is unlikely to be needed soon).
   Cheapest first; ties by priority (lower first), then least recently used, then name.
2. Greedy: take candidates in that order until their bytes cover the shortfall.
3. Prune: walk the taken victims from the last to the first and drop each one that the others
   still cover the shortfall without, so no victim is evicted that is not needed.
4. One instead of several: if several victims remain and one candidate alone covers the
   shortfall at a cost not larger than their summed cost, take that one instead (the cheapest
   such candidate in the order of step 1).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from swiftserve.scheduler.residency_types import ModelEntry, State


@dataclass(frozen=True)
class EvictionCandidate:
    """A resident model that could be evicted now; num_bytes is what evicting it would free."""

    name: str
    num_bytes: int
    reload_cost_s: float
    last_used: float
    priority: int = 0


def eviction_cost(candidate: EvictionCandidate, now: float) -> float:
    """Reload time discounted by idle time: what evicting this candidate is expected to cost."""
    idle_s = max(0.0, now - candidate.last_used)
    return candidate.reload_cost_s / (1.0 + idle_s)


def eviction_order(candidates: Iterable[EvictionCandidate], now: float) -> list[EvictionCandidate]:
    """Candidates in the order they are evicted (step 1 of the module docstring)."""
    return sorted(candidates, key=lambda c: (eviction_cost(c, now), c.priority, c.last_used, c.name))


def choose_victims(
    candidates: Iterable[EvictionCandidate], shortfall: int, now: float
) -> tuple[str, ...] | None:
    """The names to evict to free at least `shortfall` bytes, in eviction order; None if even
    every candidate together cannot cover it."""
    if shortfall <= 0:
        return ()
    order = eviction_order(candidates, now)
    taken = _take_until(order, shortfall)
    if taken is None:
        return None
    victims = _drop_unneeded(taken, shortfall)
    single = next((c for c in order if c.num_bytes >= shortfall), None)
    if single is not None and len(victims) > 1:
        if eviction_cost(single, now) <= sum(eviction_cost(v, now) for v in victims):
            victims = [single]
    return tuple(v.name for v in victims)


def _take_until(order: list[EvictionCandidate], shortfall: int) -> list[EvictionCandidate] | None:
    taken, freed = [], 0
    for candidate in order:
        if freed >= shortfall:
            break
        taken.append(candidate)
        freed += candidate.num_bytes
    return taken if freed >= shortfall else None


def _drop_unneeded(taken: list[EvictionCandidate], shortfall: int) -> list[EvictionCandidate]:
    kept = list(taken)
    for candidate in reversed(taken):
        if sum(c.num_bytes for c in kept) - candidate.num_bytes >= shortfall:
            kept.remove(candidate)
    return kept


def plan_kv_reclaim(reclaimable: Mapping[str, tuple[int, int]], need: int) -> dict[str, int]:
    """Extra KV blocks to take back to free at least `need` bytes, or as many as there are.

    `reclaimable` maps a model to (unused extra blocks, bytes per block). The largest reclaimable
    bytes go first (so the fewest models shrink), ties by name; the last model gives only the whole
    blocks still needed.
    """
    plan: dict[str, int] = {}
    order = sorted(reclaimable.items(), key=lambda item: (-item[1][0] * item[1][1], item[0]))
    for name, (blocks, block_bytes) in order:
        if need <= 0:
            break
        if blocks <= 0 or block_bytes <= 0:
            continue
        take = min(blocks, -(-need // block_bytes))  # ceil: whole blocks only
        plan[name] = take
        need -= take * block_bytes
    return plan


# -- where the memory for one load comes from ------------------------------------------------------


@dataclass(frozen=True)
class AdmissionPlan:
    """Extra KV blocks to take back, unloading models to wait for, models to evict."""

    shrink: dict[str, int]
    wait_for: tuple[str, ...] = ()
    evict: tuple[str, ...] = ()


def plan_admission(
    entries: Mapping[str, ModelEntry], footprint: int, free_bytes: int, now: float, ticket: int | None = None
) -> AdmissionPlan | None:
    """How to find `footprint` bytes, in order: free memory; unused extra KV; models already
    unloading (and not promised to another load); evictions of models evictable for the request
    with `ticket` (None: no lease is newer). None if all of it is not enough."""
    need = footprint - free_bytes
    reclaim = {n: (e.reclaimable_blocks, e.spec.kv_block_bytes) for n, e in entries.items()}
    total_kv = sum(e.reclaimable_bytes for e in entries.values())
    if need <= total_kv:  # no need to wait for any unload
        return AdmissionPlan(plan_kv_reclaim(reclaim, need))
    gap = need - total_kv
    unloading = [_candidate(n, e, e.full_bytes, 0.0) for n, e in _unpromised_unloading(entries)]
    wait_for = choose_victims(unloading, gap, now) or tuple(c.name for c in unloading)
    gap -= sum(entries[n].full_bytes for n in wait_for)
    evict = choose_victims(eviction_candidates(entries, ticket), gap, now)
    if evict is None:
        return None
    for victim in evict:
        del reclaim[victim]  # it goes whole: no use shrinking it first
    covered = sum(entries[n].full_bytes for n in wait_for + evict)
    return AdmissionPlan(plan_kv_reclaim(reclaim, need - covered), wait_for, evict)


def eviction_candidates(
    entries: Mapping[str, ModelEntry], ticket: int | None = None
) -> list[EvictionCandidate]:
    """Every model evictable for the request with `ticket`, credited only with the bytes that
    taking back its unused KV (which a load tries first) would not free anyway."""
    return [
        _candidate(n, e, e.full_bytes - e.reclaimable_bytes, e.reload_cost_s)
        for n, e in entries.items()
        if e.is_evictable_for(ticket)
    ]


def obtainable_bytes(entries: Mapping[str, ModelEntry], free_bytes: int, ticket: int | None = None) -> int:
    """The most a load could get now: free, unused KV, unpromised unloading and evictable bytes."""
    evictable = sum(c.num_bytes for c in eviction_candidates(entries, ticket))
    unloading = sum(e.full_bytes for _, e in _unpromised_unloading(entries))
    return free_bytes + sum(e.reclaimable_bytes for e in entries.values()) + unloading + evictable


def _unpromised_unloading(entries: Mapping[str, ModelEntry]) -> list[tuple[str, ModelEntry]]:
    return [(n, e) for n, e in entries.items() if e.state is State.UNLOADING and e.lent_to is None]


def _candidate(name: str, entry: ModelEntry, num_bytes: int, cost_s: float) -> EvictionCandidate:
    last_used = entry.last_used if entry.last_used is not None else float("-inf")
    return EvictionCandidate(name, num_bytes, cost_s, last_used, entry.spec.priority)
