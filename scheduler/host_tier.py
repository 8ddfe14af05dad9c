"""The host tier: models unloaded to host memory instead of to nothing, under one byte budget. No torch.

vLLM's sleep mode level 1 is the reference: a parked model keeps its weights in host memory (on
CUDA in pinned pages, so its reload is one device copy; on a CPU they simply stay where they are)
and drops its KV cache; a reload rebuilds the engine around them instead of reading the weights
again. The weights of parked models share `budget_bytes`, a slice of host memory the user grants
(`host_memory`, 0 by default: then nothing is parked and scale to zero returns all memory).

`park(name, weight_bytes, unload_to)` decides where an unloading model goes:
1. unload_to DISK, or weights larger than the whole budget: to disk; nothing changes.
2. Its weights fit in the free host bytes: parked.
3. Else the least recently parked models are dropped to disk to make room, oldest first; an
   `auto` model may only drop other `auto` ones, a `host` model any. A model being reloaded from
   the tier (`begin_reload`) is never dropped. If all that cannot make room: to disk, nothing
   dropped.
The caller frees the dropped models' weights; `unpark` forgets a model whose reload finished or
failed, or that was dropped. Not thread-safe: the residency ledger drives it from one thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from swiftserve.scheduler.memory_budget import format_bytes
from swiftserve.scheduler.residency_types import (
    BudgetError,
    ResidencyStateError,
    Tier,
    UnknownModelError,
    UnloadTo,
)


@dataclass(frozen=True)
class ParkedModel:
    """One model whose weights the host tier holds."""

    name: str
    weight_bytes: int
    parked_at: float
    unload_to: UnloadTo
    is_reloading: bool = False  # its weights are being copied back: not droppable


@dataclass(frozen=True)
class ParkDecision:
    """Where an unloading model goes; `drop` names the parked models to free first (to disk)."""

    tier: Tier
    drop: tuple[str, ...] = ()
    reason: str = ""


class HostTier:
    """Parked models' weights under `budget_bytes`; see the module docstring."""

    def __init__(self, budget_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int) or budget_bytes < 0:
            raise ValueError(f"host budget_bytes must be an integer >= 0, got {budget_bytes!r}")
        self.budget_bytes = budget_bytes
        self._clock = clock
        self._parked: dict[str, ParkedModel] = {}  # in park order: the oldest first

    # -- what fits --------------------------------------------------------------------------------
    def can_hold(self, weight_bytes: int, unload_to: UnloadTo) -> bool:
        """Whether a model of this size and policy would ever be parked."""
        return unload_to is not UnloadTo.DISK and 0 < weight_bytes <= self.budget_bytes

    def check(self, name: str, weight_bytes: int, unload_to: UnloadTo) -> None:
        """BudgetError when unload_to is HOST but the tier can never hold the model."""
        if unload_to is UnloadTo.HOST and not self.can_hold(weight_bytes, unload_to):
            raise BudgetError(
                f"{name!r} has unload_to host but its weights ({format_bytes(weight_bytes)}) exceed"
                f" the host memory budget ({format_bytes(self.budget_bytes)})"
            )

    # -- transitions ------------------------------------------------------------------------------
    def park(self, name: str, weight_bytes: int, unload_to: UnloadTo) -> ParkDecision:
        """Parks the model if it can, forgetting the models dropped for it; see the docstring."""
        if name in self._parked:
            raise ResidencyStateError(f"{name!r} is parked already")
        if not self.can_hold(weight_bytes, unload_to):
            return ParkDecision(Tier.DISK, reason=self._why_disk(weight_bytes, unload_to))
        drop = self._victims(weight_bytes - self.free_bytes(), unload_to)
        if drop is None:
            return ParkDecision(Tier.DISK, reason="the host tier is full of models it may not drop")
        for victim in drop:
            del self._parked[victim]
        self._parked[name] = ParkedModel(name, weight_bytes, self._clock(), unload_to)
        return ParkDecision(Tier.HOST, drop, _park_reason(drop))

    def begin_reload(self, name: str) -> None:
        """The model's weights are being copied back: they still count, but are never dropped."""
        self._parked[name] = replace(self._get(name), is_reloading=True)

    def unpark(self, name: str) -> ParkedModel:
        """Forgets the model (reloaded, reload failed, or dropped to disk); its bytes are free."""
        model = self._get(name)
        del self._parked[name]
        return model

    def _victims(self, shortfall: int, unload_to: UnloadTo) -> tuple[str, ...] | None:
        """The least recently parked droppable models covering `shortfall` bytes, else None."""
        taken: list[str] = []
        for model in sorted(self._parked.values(), key=lambda m: (m.parked_at, m.name)):
            if shortfall <= 0:
                break
            if model.is_reloading or (unload_to is UnloadTo.AUTO and model.unload_to is UnloadTo.HOST):
                continue
            taken.append(model.name)
            shortfall -= model.weight_bytes
        return tuple(taken) if shortfall <= 0 else None

    def _why_disk(self, weight_bytes: int, unload_to: UnloadTo) -> str:
        if unload_to is UnloadTo.DISK:
            return "unload_to is disk"
        host = format_bytes(self.budget_bytes)
        return f"its weights ({format_bytes(weight_bytes)}) exceed the host memory budget ({host})"

    # -- introspection ----------------------------------------------------------------------------
    def is_parked(self, name: str) -> bool:
        return name in self._parked

    def parked(self) -> list[ParkedModel]:
        """The parked models, the least recently parked first."""
        return sorted(self._parked.values(), key=lambda m: (m.parked_at, m.name))

    def parked_bytes(self, name: str) -> int:
        model = self._parked.get(name)
        return 0 if model is None else model.weight_bytes

    def used_bytes(self) -> int:
        return sum(m.weight_bytes for m in self._parked.values())

    def free_bytes(self) -> int:
        return self.budget_bytes - self.used_bytes()

    def _get(self, name: str) -> ParkedModel:
        model = self._parked.get(name)
        if model is None:
            raise UnknownModelError(f"{name!r} is not parked")
        return model


def _park_reason(drop: tuple[str, ...]) -> str:
    return f"parked after dropping {', '.join(drop)} to disk" if drop else "parked in free host memory"
