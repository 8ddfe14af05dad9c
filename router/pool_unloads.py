"""The model pool's unloads: where each goes (host memory or disk), carrying it out, telling the
ledger what really happened, and the idle unloads of scale to zero.

The ledger (scheduler/residency.py) has already marked a model UNLOADING when `start` is called;
an unload parks the weights in host memory when the model's `unload_to` and the host tier allow,
which may first drop the least recently parked models to disk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from swiftserve.router.pool_entry import PoolEntry, is_parked, parkable
from swiftserve.scheduler.residency import ResidencyManager
from swiftserve.scheduler.residency_types import Tier

from swiftserve.engine.errors import ModelInUseError

logger = logging.getLogger("swiftserve.router")


class PoolUnloads:
    """Unloads of the pool's models; `notify` wakes the loads that wait for memory."""

    def __init__(
        self, entries: dict[str, PoolEntry], ledger: ResidencyManager, notify: Callable[[], None]
    ) -> None:
        self._entries = entries
        self.ledger = ledger
        self._notify = notify

    def start(self, name: str, may_park: bool = True, force: bool = False) -> asyncio.Task:
        task = asyncio.create_task(self._unload_now(name, may_park, force), name=f"unload-{name}")
        self._entries[name].unload_task = task
        return task

    async def reap(self) -> list[str]:
        """Unloads the on-demand models idle past their timeout; the names unloaded."""
        done = []
        for name in self.ledger.expired():
            if not self.ledger.begin_unload(name):
                continue
            try:
                await self.start(name)
            except ModelInUseError:  # still resident; the next tick tries again
                logger.info("%s is idle but still has requests in flight; not unloading it yet", name)
                continue
            done.append(name)
        return done

    def drop(self, name: str) -> None:
        """A parked model's weights go (to disk): the ledger first, then the memory."""
        self.ledger.drop(name)
        self._free_parked(name)

    async def _unload_now(self, name: str, may_park: bool, force: bool = False) -> None:
        """Free the model's memory (all of it, or all but the weights when the host tier takes
        them), then tell the ledger what really happened."""
        entry = self._entries[name]
        # The ledger sends only a model that can park to the host tier (pool_entry.unload_target).
        host = parkable(entry.model) if may_park and self._choose_tier(name) is Tier.HOST else None
        try:
            await (host.park() if host is not None else entry.model.unload(force=force))
        except BaseException:
            self._did_not_finish(name)
            raise
        else:
            parked = host is not None and host.is_parked
            self.ledger.unloaded(name, parked=parked)
        finally:
            self._notify()
        entry.num_unloads += 1
        entry.num_parks += parked
        logger.info("unloaded %s to %s", name, "host memory" if parked else "disk")

    def _did_not_finish(self, name: str) -> None:
        """The ledger follows the model: still resident (refused: requests in flight), or gone
        (its engine was taken before the failure: nothing of it can serve or be freed later)."""
        model = self._entries[name].model
        if model.is_resident:
            self.ledger.unload_failed(name)
        else:
            self.ledger.unloaded(name, parked=is_parked(model))

    def _choose_tier(self, name: str) -> Tier:
        """Where the ledger sends `name`'s weights; the parked models it drops for them are freed
        first (no await in between: nothing can start reloading them meanwhile)."""
        decision = self.ledger.choose_tier(name)
        for victim in decision.drop:
            self._free_parked(victim)
        logger.info("unloading %s to %s: %s", name, decision.tier.value, decision.reason)
        return decision.tier

    def _free_parked(self, name: str) -> None:
        entry = self._entries[name]
        model = parkable(entry.model)
        if model is not None:  # the ledger parks no other model
            model.drop_parked()
        entry.num_drops += 1
        logger.info("dropped %s from host memory to disk", name)
