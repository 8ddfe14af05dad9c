"""What /v1/models and the metrics show of one model, read from the pool."""

from __future__ import annotations

from dataclasses import dataclass

from swiftserve.router.model_pool import ModelPool
from swiftserve.scheduler.residency_types import Policy, State


@dataclass(frozen=True)
class ModelInfo:
    """What /v1/models and the metrics show of one model."""

    name: str
    kind: str
    policy: str
    state: str
    resident_bytes: int
    num_loads: int
    num_unloads: int
    last_error: str | None
    source: str = ""  # what was loaded (alias, folder, .gguf): part of the server's fingerprint
    parked_bytes: int = 0  # weights held in host memory (state "parked")
    num_parks: int = 0  # unloads that kept the weights in host memory
    num_drops: int = 0  # parked weights dropped to disk
    loads_by_tier: tuple[tuple[str, int], ...] = ()  # ("disk", n), ("host", n): where loads read from


def model_info(pool: ModelPool, name: str, source: str) -> ModelInfo:
    """Model `name` of `pool` as it stands; `source` is what was loaded for it."""
    entry = pool.entry(name)
    state = pool.state(name)
    fp = entry.model.footprint()
    resident = state in (State.RESIDENT, State.UNLOADING)
    kv_bytes = pool.ledger.kv_blocks(name) * fp.kv_block_bytes if resident else 0
    return ModelInfo(
        name=name,
        kind=entry.model.kind,
        policy=Policy(entry.budget.policy).value,
        state=state.value,
        resident_bytes=fp.weight_bytes + kv_bytes if resident else 0,
        num_loads=len(entry.load_seconds),
        num_unloads=entry.num_unloads,
        last_error=entry.last_error,
        source=source,
        parked_bytes=pool.ledger.host.parked_bytes(name),
        num_parks=entry.num_parks,
        num_drops=entry.num_drops,
        loads_by_tier=tuple(entry.loads_by_tier.items()),
    )
