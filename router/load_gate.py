"""The model pool's loads under a limit (scheduler/load_slots.py) on the event loop: a load waits
here for its slot, after its memory is admitted and its evictions are done, so the slot is held
only while the model loads."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from swiftserve.scheduler.load_slots import LoadSlots


class LoadGate:
    """`async with gate.slot(name, ticket):` runs the block once the load of `name` has a slot."""

    def __init__(self, limit: int | None) -> None:
        self.slots = LoadSlots(limit)
        self._granted: dict[str, asyncio.Future[None]] = {}

    @contextlib.asynccontextmanager
    async def slot(self, name: str, ticket: int) -> AsyncIterator[None]:
        if not self.slots.ask(name, ticket):
            self._granted[name] = asyncio.get_running_loop().create_future()
            try:
                await self._granted[name]
            except BaseException:  # cancelled while waiting, or as the slot came
                self._release(name)
                raise
        try:
            yield
        finally:
            self._release(name)

    def _release(self, name: str) -> None:
        self._granted.pop(name, None)
        for granted in self.slots.release(name):
            future = self._granted.pop(granted)
            if not future.done():
                future.set_result(None)
