"""What the model pool keeps per model: its registration (how it stays resident), its entry
(tasks, counters, last error) and the budget the residency ledger counts it by."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from swiftserve.router import errors
from swiftserve.scheduler.residency_types import ModelBudget, Policy, UnloadTo

from swiftserve.engine.served_model import ParkableModel, ServedModel

logger = logging.getLogger("swiftserve.router")

# Until a model has loaded once, its reload cost is estimated from its bytes at this rate.
ASSUMED_LOAD_BYTES_PER_S = 1e9
# The same for a reload from host memory: a host-to-device copy at PCIe rates on CUDA, less than
# that on a CPU (nothing is copied); measured reloads replace it.
ASSUMED_HOST_RELOAD_BYTES_PER_S = 1e10


@dataclass(frozen=True)
class Registration:
    """One model to serve and how it stays resident (what `add` takes). source: what was loaded
    (alias, folder, file), shown in /v1/models. priority orders evictions (lower goes first);
    request_priority and max_queue are the router's, for its requests (router/admission.py):
    the priority of those that set none (lower runs earlier), and how many may wait."""

    model: ServedModel
    policy: Policy | str
    idle_timeout_s: float | None = None
    priority: int = 0
    unload_to: UnloadTo | str = UnloadTo.AUTO
    source: str = ""
    request_priority: int = 0
    max_queue: int | None = None


@dataclass
class PoolEntry:
    model: ServedModel
    budget: ModelBudget
    load_task: asyncio.Task | None = None
    unload_task: asyncio.Task | None = None
    last_error: str | None = None
    cold_waits: int = 0
    load_seconds: list[float] = field(default_factory=list)
    num_unloads: int = 0
    num_parks: int = 0  # unloads that kept the weights in host memory
    num_drops: int = 0  # parked weights dropped to disk (freed)
    loads_by_tier: dict[str, int] = field(default_factory=lambda: {"disk": 0, "host": 0})

    async def settle(self) -> None:
        """Waits for a load or an unload of the model in progress, whatever its outcome."""
        for task in (self.load_task, self.unload_task):
            if task is not None and not task.done():
                with contextlib.suppress(Exception):
                    await asyncio.shield(task)


def entry_of(entries: dict[str, PoolEntry], name: str) -> PoolEntry:
    """The entry of model `name`; ModelNotFoundError when the pool has none."""
    entry = entries.get(name)
    if entry is None:
        raise errors.ModelNotFoundError(name)
    return entry


def budget_of(registration: Registration) -> ModelBudget:
    model, fp = registration.model, registration.model.footprint()
    on_demand = Policy(registration.policy) is Policy.ON_DEMAND
    return ModelBudget(
        name=model.name,
        weight_bytes=fp.weight_bytes,
        kv_block_bytes=fp.kv_block_bytes,
        kv_floor_blocks=fp.kv_floor_blocks,
        policy=Policy(registration.policy),
        idle_timeout_s=registration.idle_timeout_s if on_demand else None,
        reload_cost_s=fp.weight_bytes / ASSUMED_LOAD_BYTES_PER_S,
        priority=registration.priority,
        unload_to=unload_target(model, UnloadTo(registration.unload_to)),
        host_reload_cost_s=fp.weight_bytes / ASSUMED_HOST_RELOAD_BYTES_PER_S,
    )


def parkable(model: ServedModel) -> ParkableModel | None:
    """The model as one that can be unloaded to host memory, or None (embedding models, for now)."""
    return model if isinstance(model, ParkableModel) and model.can_park else None


def is_parked(model: ServedModel) -> bool:
    return isinstance(model, ParkableModel) and model.is_parked


def unload_target(model: ServedModel, wanted: UnloadTo) -> UnloadTo:
    """`wanted`, or DISK for a model that cannot be parked (embedding models, for now)."""
    if wanted is UnloadTo.DISK or parkable(model) is not None:
        return wanted
    if wanted is UnloadTo.HOST:
        logger.warning(
            "%s (%s) cannot be parked in host memory: its unloads go to disk", model.name, model.kind
        )
    return UnloadTo.DISK
