"""Bounded queues on the router's side: a request past the bound is refused at arrival (429).

A resident chat model's engine bounds its own queue of waiting sequences (SchedulerConfig
.max_num_waiting, the model's max_queue). Two waits happen before a request reaches an engine,
and each gets a `Gate` with the same kind of bound:
- a cold model's requests wait for its load: at most max_queue sequences wait so, then the next
  is refused at once instead of after the load;
- a pipeline's max_queue bounds its requests in flight: one is refused at arrival, before a stage
  runs or a model is held, never midway through its stages.
Plain counting on the event loop, so no locks; `use_bounded` applies a load queue's gate around
the pool's use of a model.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from swiftserve.router.errors import ModelQueueFullError
from swiftserve.router.model_pool import ModelPool
from swiftserve.scheduler.residency_types import State

from swiftserve.engine.served_model import ServedModel


class Gate:
    """At most `bound` units (requests, or sequences) inside at once; None: no bound."""

    def __init__(self, bound: int | None) -> None:
        if bound is not None and bound < 0:
            raise ValueError(f"a gate's bound must be >= 0, got {bound}")
        self.bound = bound
        self.num_inside = 0

    def try_enter(self, num: int = 1) -> bool:
        """Lets `num` units in when they fit under the bound; False (and nothing counted) if not."""
        if self.bound is not None and self.num_inside + num > self.bound:
            return False
        self.num_inside += num
        return True

    def leave(self, num: int = 1) -> None:
        if num > self.num_inside:
            raise ValueError(f"{num} leaving a gate holding {self.num_inside}")
        self.num_inside -= num


@contextlib.asynccontextmanager
async def use_bounded(
    pool: ModelPool, name: str, load_queue: Gate, num_seqs: int
) -> AsyncIterator[tuple[ServedModel, bool]]:
    """pool.use(name), with the wait for a load bounded by `load_queue`: a request that finds the
    model cold and num_seqs more sequences would not fit is refused at once (ModelQueueFullError).
    Once resident, the engine's own queue bound takes over."""
    waiting = pool.state(name) is not State.RESIDENT
    if waiting and not load_queue.try_enter(num_seqs):
        raise ModelQueueFullError(name)
    try:
        async with pool.use(name) as used:
            if waiting:
                load_queue.leave(num_seqs)
                waiting = False
            yield used
    finally:
        if waiting:
            load_queue.leave(num_seqs)
