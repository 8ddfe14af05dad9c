"""Which replica gets a request: residency-aware routing as a pure function on ids and counts.

The rule, for a request naming model m (a pipeline names every model of its stages):
1. Tier 0: replicas where m is resident (or loading: its load is paid for already, and a second
   copy elsewhere would cost memory); the least loaded first.
2. Tier 1: replicas where m is parked in host memory (a reload is one copy, milliseconds); the
   least loaded first.
3. Tier 2: replicas that must load m from disk; the one with the most free budget first (its load
   evicts the least), then the least loaded.
A pipeline's tier on a replica is the sum of its models' tiers. Load is the larger of what the
replica reported (every ingress's requests) and what this router has in flight on it (fresh).
Session affinity: a request with a session id goes to the replica that rendezvous hashing picks
among tier 0, so that the session's prefix stays cached there, unless that replica is
`max_imbalance` requests busier than the least loaded of the tier.

Reports arrive every fraction of a second; between two of them the router records where it sent
a model that was not resident (`expect_loading`), so a burst for a cold model follows the first
request instead of starting one load per replica.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

RESIDENT, PARKED, COLD = 0, 1, 2
# A model state (scheduler/residency_types.State values) -> its tier.
TIER_OF_STATE = {"resident": RESIDENT, "loading": RESIDENT, "parked": PARKED}
DEFAULT_MAX_IMBALANCE = 8


@dataclass(frozen=True)
class ReplicaReport:
    """What one replica says of itself (replica.py's record_routing_stats): each model's state,
    its requests in flight, its free memory budget, its replica group, and a sequence number that
    grows with every report (so the router knows which of its expectations a report covers)."""

    replica_id: str
    models: Mapping[str, str] = field(default_factory=dict)
    queue_depth: int = 0
    free_budget_bytes: int = 0
    group: str | None = None
    seq: int = 0


@dataclass(frozen=True)
class RouteRequest:
    """What routing needs of a request: the models it will run on, and its session (or None)."""

    models: tuple[str, ...]
    session_id: str | None = None


def tier(report: ReplicaReport, model: str) -> int:
    return TIER_OF_STATE.get(report.models.get(model, "cold"), COLD)


def load_of(report: ReplicaReport, in_flight: Mapping[str, int]) -> int:
    return max(report.queue_depth, in_flight.get(report.replica_id, 0))


def rank(
    request: RouteRequest,
    reports: Sequence[ReplicaReport],
    in_flight: Mapping[str, int] | None = None,
    max_imbalance: int = DEFAULT_MAX_IMBALANCE,
) -> list[str]:
    """Every replica id, best first (see the module docstring)."""
    in_flight = in_flight or {}

    def key(report: ReplicaReport) -> tuple:
        tiers = sum(tier(report, m) for m in request.models)
        if tiers == 0 or tiers < COLD * len(request.models):
            return (tiers, load_of(report, in_flight), 0, report.replica_id)
        return (tiers, -report.free_budget_bytes, load_of(report, in_flight), report.replica_id)

    ordered = sorted(reports, key=key)
    sticky = _affinity(request, ordered, in_flight, max_imbalance)
    ids = [r.replica_id for r in ordered]
    if sticky is not None:
        ids.remove(sticky)
        ids.insert(0, sticky)
    return ids


def _affinity(
    request: RouteRequest, ordered: list[ReplicaReport], in_flight: Mapping[str, int], max_imbalance: int
) -> str | None:
    """The session's replica among tier 0 (all models resident), or None."""
    if request.session_id is None:
        return None
    warm = [r for r in ordered if all(tier(r, m) == RESIDENT for m in request.models)]
    if not warm:
        return None
    chosen = max(warm, key=lambda r: rendezvous_weight(request.session_id or "", r.replica_id))
    least = min(load_of(r, in_flight) for r in warm)
    return chosen.replica_id if load_of(chosen, in_flight) - least <= max_imbalance else None


def rendezvous_weight(session_id: str, replica_id: str) -> int:
    """Highest random weight hashing: stable across processes (unlike hash()), and a replica
    that leaves moves only its own sessions."""
    digest = hashlib.blake2b(f"{session_id}\0{replica_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def expect_loading(report: ReplicaReport, model: str) -> ReplicaReport:
    """`report` once a request for `model` was sent to it: a cold or parked model starts loading
    there, so the next requests for it follow this one."""
    if tier(report, model) == RESIDENT:
        return report
    return ReplicaReport(
        report.replica_id,
        {**report.models, model: "loading"},
        report.queue_depth,
        report.free_budget_bytes,
        report.group,
        report.seq,
    )
