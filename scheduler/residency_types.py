"""What crosses the residency ledger's boundary: model budgets, decisions, snapshots, errors. No torch.

The ledger itself is `scheduler/residency.py`; the victim choice is `scheduler/eviction.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum


class Policy(str, Enum):
    """How a model stays resident. The values are the config file's spelling."""

    PINNED = "pinned"  # dedicated: loaded at start, never evicted
    ON_DEMAND = "on-demand"  # serverless: loaded on first request, evictable, may scale to zero


class State(str, Enum):
    """cold -> loading -> resident -> unloading -> cold, or -> parked (weights in host memory) ->
    loading. Only cold and parked models cost no bytes of the device budget."""

    COLD = "cold"
    LOADING = "loading"
    RESIDENT = "resident"
    UNLOADING = "unloading"
    PARKED = "parked"


class UnloadTo(str, Enum):
    """Where a model's weights go when it is unloaded. The values are the config file's spelling."""

    AUTO = "auto"  # host memory when the host tier has room, else nothing (back to the disk)
    HOST = "host"  # as auto, and never dropped from the host tier to make room for an auto model
    DISK = "disk"  # never parked: an unload returns all of its memory


class Tier(str, Enum):
    """Where a load reads the weights from, or where an unload leaves them."""

    HOST = "host"
    DISK = "disk"


class ResidencyError(Exception):
    """Base of the ledger's typed errors."""


class BudgetError(ResidencyError, ValueError):
    """A model (or the pinned set) can never fit the budget: a config-time error."""


class DuplicateModelError(ResidencyError, ValueError):
    """A model name added twice."""


class UnknownModelError(ResidencyError, KeyError):
    """A name the ledger does not know."""

    def __str__(self) -> str:  # KeyError's str() is the repr of its argument; keep the sentence
        return str(self.args[0]) if self.args else ""


class ResidencyStateError(ResidencyError, RuntimeError):
    """A transition that the model's current state does not allow."""


class PinnedModelError(ResidencyError, RuntimeError):
    """An unload of a pinned model without force."""


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_seconds(name: str, value: object) -> None:
    message = f"{name} must be a finite number of seconds >= 0, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(message)
    if not math.isfinite(value) or value < 0:
        raise ValueError(message)


def _as_enum(enum: type[Enum], key: str, value: object) -> Enum:
    try:
        return enum(value)
    except ValueError:
        raise ValueError(f"{key} must be one of {[e.value for e in enum]}, got {value!r}") from None


@dataclass(frozen=True)
class ModelBudget:
    """The memory one model needs, and how it stays resident.

    kv_block_bytes is one KV block across all layers, K and V; kv_floor_blocks is enough blocks for
    one max_model_len sequence (0 for a model without a KV cache, such as an embedder). Extra KV
    blocks beyond the floor follow demand (`ResidencyManager.grow_kv`). idle_timeout_s applies to
    on-demand models only (None: never scale to zero). reload_cost_s is the estimated load time
    from disk, host_reload_cost_s from host memory (both until a load of that kind was measured).
    priority breaks ties in the eviction order: lower priority goes first. unload_to says where
    the weights go when it unloads (scheduler/host_tier.py).
    """

    name: str
    weight_bytes: int
    kv_block_bytes: int
    kv_floor_blocks: int
    policy: Policy
    idle_timeout_s: float | None = None
    reload_cost_s: float = 0.0
    priority: int = 0
    unload_to: UnloadTo = UnloadTo.AUTO
    host_reload_cost_s: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        for key in ("weight_bytes", "kv_block_bytes", "kv_floor_blocks"):
            _check_int(key, getattr(self, key), 0)
        # Accept the config file's strings ("pinned", "on-demand", "auto") as well as the enums.
        object.__setattr__(self, "policy", _as_enum(Policy, "policy", self.policy))
        object.__setattr__(self, "unload_to", _as_enum(UnloadTo, "unload_to", self.unload_to))
        if self.idle_timeout_s is not None:
            _check_seconds("idle_timeout_s", self.idle_timeout_s)
            if self.policy is Policy.PINNED:
                raise ValueError(f"idle_timeout_s: {self.name!r} is pinned and never unloaded; use None")
        _check_seconds("reload_cost_s", self.reload_cost_s)
        _check_seconds("host_reload_cost_s", self.host_reload_cost_s)
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise ValueError(f"priority must be an integer, got {self.priority!r}")

    @property
    def footprint(self) -> int:
        """Bytes the model holds whenever it is not cold: weights plus the KV floor."""
        return self.weight_bytes + self.kv_floor_blocks * self.kv_block_bytes


@dataclass(frozen=True)
class LoadDecision:
    """The answer of `ResidencyManager.admit`: what the driver must do before the load.

    If admitted, the driver applies `shrink` (extra KV blocks to take back from each model, all
    unused), unloads `evict` (now UNLOADING) and waits for `wait_for` (already unloading), calling
    `unloaded()` for each, and then loads the model. If not admitted nothing changed; `blocked_by`
    names the models whose in-flight requests or holds keep their memory, and the driver retries
    after a release, an unhold, a load or an unload.
    """

    admitted: bool
    evict: tuple[str, ...] = ()
    shrink: dict[str, int] = field(default_factory=dict)
    reason: str = ""
    wait_for: tuple[str, ...] = ()
    blocked_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelResidency:
    """One model as metrics and the HTTP layer see it.

    resident_bytes is what the model counts against the budget now (they sum to committed_bytes).
    waiting_on names the unloading models whose memory a LOADING model still waits for.
    """

    name: str
    state: State
    policy: Policy
    resident_bytes: int
    kv_blocks: int
    in_flight: int
    holds: int
    last_used: float | None
    loads: int
    unloads: int
    last_error: str | None
    waiting_on: tuple[str, ...] = ()
    parked_bytes: int = 0  # weights held in the host tier (PARKED, or LOADING from it)


COUNTED_STATES = (State.LOADING, State.RESIDENT, State.UNLOADING)


@dataclass(eq=False)
class ModelEntry:
    """The ledger's mutable record of one model (internal to the ledger and its admission plan)."""

    spec: ModelBudget
    state: State = State.COLD
    extra_blocks: int = 0
    used_blocks: int = 0  # as last reported by the engine
    in_flight: int = 0
    hold_tickets: list[int] = field(default_factory=list)  # the arrival ticket of each lease
    last_used: float | None = None
    loads: int = 0
    unloads: int = 0
    last_error: str | None = None
    owed: int = 0  # LOADING: bytes still held by the unloading models it waits for
    lent_to: str | None = None  # UNLOADING: the load that gets these bytes once unloaded
    can_park: bool = False  # its policy and size let the host tier take it (known when added)
    loading_from: Tier = Tier.DISK  # LOADING: where its weights come from
    measured_reload_s: dict[Tier, float] = field(default_factory=dict)  # the last load from each tier

    def idle_s(self, now: float) -> float:
        """Seconds since its last use; infinite if it was never used (eviction.py counts it so)."""
        return math.inf if self.last_used is None else now - self.last_used

    @property
    def full_bytes(self) -> int:
        """Footprint plus the extra KV grant: what the model occupies once loaded."""
        return self.spec.footprint + self.extra_blocks * self.spec.kv_block_bytes

    @property
    def charged(self) -> int:
        """What the model counts against the budget now."""
        return self.full_bytes - self.owed if self.state in COUNTED_STATES else 0

    @property
    def reload_cost_s(self) -> float:
        """What evicting it now is expected to cost in reload time: from host memory when the
        host tier would take it, else from disk; the last measured load, else the estimate."""
        tier = Tier.HOST if self.can_park else Tier.DISK
        estimate = self.spec.host_reload_cost_s if self.can_park else self.spec.reload_cost_s
        return self.measured_reload_s.get(tier, estimate)

    @property
    def holds(self) -> int:
        return len(self.hold_tickets)

    @property
    def is_busy(self) -> bool:
        return self.in_flight > 0 or self.holds > 0

    def is_kept_from(self, ticket: int) -> bool:
        """Whether a load for the request with `ticket` must leave it alone: requests in flight,
        or a lease of that request or an older one. A newer lease never keeps an older waiter
        from the memory (the arrival order of scheduler/arrival_queue.py)."""
        return self.in_flight > 0 or any(held <= ticket for held in self.hold_tickets)

    @property
    def reclaimable_bytes(self) -> int:
        """Extra KV the engine does not use: only a resident model's can be taken back."""
        return self.reclaimable_blocks * self.spec.kv_block_bytes

    @property
    def reclaimable_blocks(self) -> int:
        if self.state is not State.RESIDENT:
            return 0
        return self.extra_blocks - max(0, self.used_blocks - self.spec.kv_floor_blocks)

    @property
    def is_evictable(self) -> bool:
        """Resident, on demand, no requests in flight and no holds (what an idle unload needs)."""
        return self.state is State.RESIDENT and self.spec.policy is Policy.ON_DEMAND and not self.is_busy

    def is_evictable_for(self, ticket: int | None) -> bool:
        """Evictable by the load of the request with `ticket` (None: newer than every lease)."""
        if self.state is not State.RESIDENT or self.spec.policy is not Policy.ON_DEMAND:
            return False
        return not self.is_busy if ticket is None else not self.is_kept_from(ticket)
