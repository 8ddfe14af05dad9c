"""The load/unload life cycle shared by the local served models (chat_model.py, embedding_model.py).

A handle is cold until load(): then it builds its engine off the event loop (the weights load in
a worker thread), starts it on the device executor and is resident. unload() refuses while
requests are in flight, else stops the engine, drops it and returns its memory (engine/memory.py).
Both are idempotent; concurrent load() calls share one build.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from swiftserve.engine.errors import ModelInUseError, ModelNotLoadedError
from swiftserve.engine.memory import return_freed_memory

logger = logging.getLogger(__name__)


class ServedHandle:
    """Subclasses build, start, count and stop one engine; this class sequences those."""

    name: str

    def __init__(self) -> None:
        self._engine: Any = None
        self._loading: asyncio.Future | None = None

    # -- what subclasses provide ---------------------------------------------------------------
    def _build(self) -> Any:
        """Loads the weights and builds the engine (a worker thread: blocking is fine)."""
        raise NotImplementedError

    async def _stop(self, engine: Any) -> None:
        """Stops serving and breaks the engine's references to its tensors."""
        raise NotImplementedError

    # -- the life cycle --------------------------------------------------------------------------
    @property
    def is_resident(self) -> bool:
        return self._engine is not None

    async def load(self) -> None:
        if self._engine is not None:
            return
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load())
            self._loading.add_done_callback(self._load_done)
        # Shielded: one caller giving up must not cancel the build the others wait on.
        await asyncio.shield(self._loading)

    def _load_done(self, _: asyncio.Future) -> None:
        self._loading = None  # a failed load leaves the model cold: the next load() tries again

    async def _load(self) -> None:
        engine = await asyncio.to_thread(self._build)
        try:
            await engine.start()
        except BaseException:
            await self._stop(engine)
            raise
        self._engine = engine
        logger.info("%s is resident", self.name)

    async def unload(self) -> None:
        if self._loading is not None:  # let a load in progress finish, then undo it
            await asyncio.gather(asyncio.shield(self._loading), return_exceptions=True)
        engine = self._engine
        if engine is None:
            return
        if engine.num_in_flight:
            raise ModelInUseError(self.name, engine.num_in_flight)
        self._engine = None  # from here on new requests get ModelNotLoadedError
        await self._stop(engine)
        del engine
        return_freed_memory()
        logger.info("%s unloaded", self.name)

    def _resident_engine(self) -> Any:
        if self._engine is None:
            raise ModelNotLoadedError(self.name)
        return self._engine
