"""The load/unload life cycle shared by the local served models (chat_model.py, embedding_model.py).

A handle is cold until load(): then it builds its engine off the event loop (the weights load in
a worker thread), starts it on the device executor and is resident. unload() refuses while
requests are in flight (unless forced: a shutdown aborts them), else stops the engine, drops it
and returns its memory (engine/memory.py).
park() is an unload that keeps the weights in host memory (engine/host_park.py): the next load()
builds the engine around them instead of reading them again; drop_parked() frees them. A subclass
that can park implements `_park` and `_build_from_parked` (chat models do; embedding models do not
yet, so `can_park` is False for them and the router unloads them to disk).
All are idempotent; concurrent load() calls share one build.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from swiftserve.engine.errors import ModelInUseError, ModelNotLoadedError
from swiftserve.engine.memory import return_freed_memory

logger = logging.getLogger(__name__)


class ServingEngine(Protocol):
    """What the life cycle needs of an engine (AsyncEngine, EmbeddingEngine)."""

    async def start(self) -> None: ...

    @property
    def num_in_flight(self) -> int: ...


EngineT = TypeVar("EngineT", bound=ServingEngine)
ParkedT = TypeVar("ParkedT")  # what a parked model keeps (its weights in host memory)


class ServedHandle(Generic[EngineT, ParkedT]):
    """Subclasses build, start, count and stop one engine; this class sequences those."""

    name: str

    def __init__(self) -> None:
        self._engine: EngineT | None = None
        self._loading: asyncio.Future[None] | None = None
        self._parked: ParkedT | None = None  # what _park kept (the weights), until a reload or a drop
        self.num_weight_loads = 0  # loads that read the weights (a reload from host memory does not)
        self.num_host_reloads = 0

    # -- what subclasses provide ---------------------------------------------------------------
    def _build(self) -> EngineT:
        """Loads the weights and builds the engine (a worker thread: blocking is fine)."""
        raise NotImplementedError

    async def _stop(self, engine: EngineT) -> None:
        """Stops serving and breaks the engine's references to its tensors."""
        raise NotImplementedError

    async def _park(self, engine: EngineT) -> ParkedT:
        """Stops serving, breaks the engine's references to everything but its weights and returns
        them, in host memory. Only for subclasses whose can_park is True."""
        raise NotImplementedError

    def _build_from_parked(self, parked: ParkedT) -> EngineT:
        """Builds the engine around what `_park` returned (a worker thread)."""
        raise NotImplementedError

    # -- the life cycle --------------------------------------------------------------------------
    @property
    def is_resident(self) -> bool:
        return self._engine is not None

    @property
    def is_parked(self) -> bool:
        return self._parked is not None

    @property
    def can_park(self) -> bool:
        """Whether this kind of model can be unloaded to host memory (it implements _park)."""
        return type(self)._park is not ServedHandle._park

    async def load(self) -> None:
        if self._engine is not None:
            return
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load())
            self._loading.add_done_callback(self._load_done)
        # Shielded: one caller giving up must not cancel the build the others wait on.
        await asyncio.shield(self._loading)

    def _load_done(self, _: asyncio.Future[None]) -> None:
        self._loading = None  # a failed load leaves the model cold: the next load() tries again

    async def _load(self) -> None:
        # A failed reload from host memory drops the parked weights too: the next load reads them.
        parked, self._parked = self._parked, None
        from_host = parked is not None
        build: Callable[[], EngineT] = self._build
        if parked is not None:
            build = functools.partial(self._build_from_parked, parked)
        del parked
        engine = await asyncio.to_thread(build)
        try:
            await engine.start()
        except BaseException:
            await self._stop(engine)
            raise
        self._engine = engine
        self._count_load(from_host)

    def _count_load(self, from_host: bool) -> None:
        self.num_host_reloads += from_host
        self.num_weight_loads += not from_host
        logger.info("%s is resident (weights from %s)", self.name, "host memory" if from_host else "disk")

    async def unload(self, *, force: bool = False) -> None:
        """Stops serving and frees everything: the engine, or the parked weights of a parked model.
        ModelInUseError while requests are in flight, unless force (they are aborted then)."""
        engine = await self._take_engine(force)
        if engine is None:
            self.drop_parked()
            return
        await self._stop(engine)
        del engine
        return_freed_memory()
        logger.info("%s unloaded", self.name)

    async def park(self) -> None:
        """An unload that keeps the weights in host memory (needs can_park)."""
        if not self.can_park:
            raise NotImplementedError(f"{self.name!r} cannot be parked in host memory")
        engine = await self._take_engine()
        if engine is None:
            return
        self._parked = await self._park(engine)
        del engine
        return_freed_memory()
        logger.info("%s parked in host memory", self.name)

    def drop_parked(self) -> None:
        """Frees parked weights (to disk: the next load reads them again)."""
        if self._parked is None:
            return
        self._parked = None
        return_freed_memory()
        logger.info("%s dropped from host memory to disk", self.name)

    async def _take_engine(self, force: bool = False) -> EngineT | None:
        """The engine, detached from the handle (None when cold); ModelInUseError while busy,
        unless force (stopping the engine aborts what is in flight)."""
        if self._loading is not None:  # let a load in progress finish, then undo it
            await asyncio.gather(asyncio.shield(self._loading), return_exceptions=True)
        engine = self._engine
        if engine is not None and engine.num_in_flight and not force:
            raise ModelInUseError(self.name, engine.num_in_flight)
        self._engine = None  # from here on new requests get ModelNotLoadedError
        return engine

    def _resident_engine(self) -> EngineT:
        if self._engine is None:
            raise ModelNotLoadedError(self.name)
        return self._engine
