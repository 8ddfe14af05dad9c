"""The router's per-model level: the models served, their handles, and one request on one model.

The router (router.py) builds its requests on this level. A per-model call (`generate`, `embed`)
1. acquires the model in the pool (model_pool.py: residency, loads, evictions, scale to zero), so
   it cannot be evicted under the request;
2. loads it if it is cold (the request waits: queued, not refused, up to the model's max_queue
   waiting: admission.py) and times that cold start;
3. runs the request on the resident model, at its priority (the request's, else the model's
   request_priority), and releases the model when the request ends.
It maps the lower layers' errors to the router's (errors.py) once, around the whole call (a stream
from its first output to its last).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterator

from swiftserve.router import errors
from swiftserve.router.abortable import until_closed
from swiftserve.router.admission import Gate, use_bounded
from swiftserve.router.followers import FollowerStats
from swiftserve.router.handles import ChatHandle, EmbeddingHandle, ModelHandle
from swiftserve.router.model_info import ModelInfo, model_info
from swiftserve.router.model_pool import ModelPool
from swiftserve.router.pool_entry import Registration
from swiftserve.scheduler.residency_types import Policy

from swiftserve.engine.embedding_inputs import EmbeddingResult
from swiftserve.engine.served_model import ChatModel, EmbeddingModel, EmbedInputs, ServedModel
from swiftserve.outputs import RequestOutput
from swiftserve.sampling_params import SamplingParams

# cold_start(model, seconds): a request that found its model cold got its first result after
# `seconds` from its arrival (feeds the cold-start histogram).
ColdStartHook = Callable[[str, float], None]
# How long a shutdown waits for the aborted streams to release their models before unloading.
SHUTDOWN_DRAIN_S = 5.0

logger = logging.getLogger("swiftserve.router")


class ModelRouter:
    """See the module docstring; router.Router adds the requests. `add` models, then `start` on
    the serving loop."""

    def __init__(self, pool: ModelPool, on_cold_start: ColdStartHook | None = None) -> None:
        self.pool = pool
        self.on_cold_start = on_cold_start or (lambda name, seconds: None)
        self._handles: dict[str, ModelHandle] = {}
        self._sources: dict[str, str] = {}
        self._request_priority: dict[str, int] = {}  # per model, for requests that set none
        self._load_queues: dict[str, Gate] = {}  # per model: the sequences waiting for its load
        self._closed = False
        self._closing = asyncio.Event()  # set at shutdown: ends every stream still in flight
        self._num_streams = 0
        self._drained = asyncio.Event()
        # on_queue_full(model): a request refused because the model's queue was full (any caller).
        self.on_queue_full: Callable[[str], None] = lambda name: None
        # Who follows whom in sessions (followers.py); None: nothing learned, nothing pre-warmed.
        self.followers: FollowerStats | None = None
        # on_follower_prewarm(model, follower): a call to model started its follower's load.
        self.on_follower_prewarm: Callable[[str, str], None] = lambda name, follower: None

    # -- configuration ----------------------------------------------------------------------------
    def add(
        self,
        model: ServedModel,
        policy: Policy | str,
        idle_timeout_s: float | None = None,
        priority: int = 0,
        source: str = "",
        unload_to: str = "auto",
        request_priority: int = 0,
        max_queue: int | None = None,
    ) -> None:
        """Registers a cold model (BudgetError if it could never fit beside the pinned ones).
        priority orders evictions; request_priority and max_queue: see pool_entry.Registration
        (max_queue bounds the wait for a load here; the engine's own config bounds its queue)."""
        registration = Registration(
            model, policy, idle_timeout_s, priority, unload_to, source, request_priority, max_queue
        )
        self.add_all([registration])

    def add_all(self, registrations: list[Registration]) -> None:
        """Registers several cold models, all or none (InvalidConfigError for a name served twice,
        BudgetError, TypeError: none of them)."""
        names = [r.model.name for r in registrations]
        for name in names:
            if name in self._handles or names.count(name) > 1:
                message = f"two models are served as {name!r}; name them with served_name=spec"
                raise errors.InvalidConfigError(message)
        # Made before the pool registers anything: a model without its kind's calls adds none.
        handles = [self._new_handle(r.model) for r in registrations]
        self.pool.add_all(registrations)
        for registration, handle in zip(registrations, handles, strict=True):
            self._handles[handle.name] = handle
            self._sources[handle.name] = registration.source
            self._request_priority[handle.name] = registration.request_priority
            self._load_queues[handle.name] = Gate(registration.max_queue)

    def _new_handle(self, model: ServedModel) -> ModelHandle:
        """The handle of its kind; TypeError now, not at its first request, for a model that lacks
        the calls of its kind (engine/served_model.ChatModel, EmbeddingModel)."""
        if isinstance(model, ChatModel) and model.kind == "chat":
            return ChatHandle(self, model)
        if isinstance(model, EmbeddingModel) and model.kind == "embedding":
            return EmbeddingHandle(self, model)
        raise TypeError(f"{model.name!r} lacks the calls of a {model.kind} model (engine/served_model.py)")

    async def remove(self, name: str) -> None:
        """Unloads a model completely and forgets it; ModelBusyError while requests are in flight."""
        self.handle(name)
        await self.pool.remove(name)
        del self._handles[name], self._sources[name], self._request_priority[name], self._load_queues[name]

    def handle(self, name: str, kind: str | None = None) -> ModelHandle:
        """The handle of `name` (ModelNotFoundError); WrongKindError when it is not a `kind` model."""
        handle = self._handles.get(name)
        if handle is None:
            raise errors.ModelNotFoundError(name)
        if kind is not None and handle.kind != kind:
            raise errors.WrongKindError(name, handle.kind, kind)
        return handle

    def chat_handle(self, name: str) -> ChatHandle:
        """The handle of chat model `name`; ModelNotFoundError, WrongKindError."""
        handle = self.handle(name)
        if not isinstance(handle, ChatHandle):
            raise errors.WrongKindError(name, handle.kind, "chat")
        return handle

    def embedding_handle(self, name: str) -> EmbeddingHandle:
        """The handle of embedding model `name`; ModelNotFoundError, WrongKindError."""
        handle = self.handle(name)
        if not isinstance(handle, EmbeddingHandle):
            raise errors.WrongKindError(name, handle.kind, "embedding")
        return handle

    def names(self) -> list[str]:
        return list(self._handles)

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Loads the pinned models and starts scale to zero."""
        await self.pool.start()

    async def shutdown(self, drain_timeout_s: float = SHUTDOWN_DRAIN_S) -> None:
        """Refuses new requests, ends the streams in flight (RequestAbortedError), waits for them
        to release their models, then unloads every model."""
        self._closed = True
        self._closing.set()
        if self._num_streams:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drained.wait(), drain_timeout_s)
        await self.pool.shutdown()

    async def load(self, name: str) -> None:
        """An admin load: resident on return (evicting idle on-demand models if it must)."""
        self._check_open()
        self.handle(name)
        await self.pool.ensure_resident(name)

    async def unload(self, name: str) -> bool:
        """An admin unload; False when it was cold. ModelPinnedError, ModelBusyError as they say."""
        self.handle(name)
        return await self.pool.unload(name)

    # -- what is where ----------------------------------------------------------------------------
    def info(self, name: str) -> ModelInfo:
        return model_info(self.pool, name, self._sources.get(name, ""))

    def models(self) -> list[ModelInfo]:
        return [self.info(name) for name in self._handles]

    # -- sessions ---------------------------------------------------------------------------------
    def observe_session(self, session: str | None, name: str) -> None:
        """A request for `name` (a model or a pipeline) arrived in `session`: learns from it, and
        starts the loads of its learned followers that are cold and fit free memory alone."""
        if session is None or self.followers is None:
            return
        self.followers.observe(session, name, time.monotonic())
        for follower in self.followers.followers(name):
            if follower in self._handles and self.pool.start_load_if_free(follower):
                logger.info("pre-warming %s: it often follows %s in a session", follower, name)
                self.on_follower_prewarm(name, follower)

    # -- one request on one model -------------------------------------------------------------------
    async def generate(
        self,
        name: str,
        prompt: str | list[int],
        params: SamplingParams,
        request_id: str | None = None,
        priority: int | None = None,
    ) -> AsyncGenerator[RequestOutput, None]:
        """Cumulative outputs of one request to chat model `name`, loading it first if cold. Any
        error, before the first output or after it, is the router's (errors.router_errors)."""
        self._check_open()
        model = self.chat_handle(name).model
        priority = self._priority(name, priority)
        arrival = time.perf_counter()
        self._num_streams += 1
        self._drained.clear()
        try:
            with self._queue_full_counted(name), errors.router_errors(name):
                async with use_bounded(self.pool, name, self._load_queues[name], params.n) as (_, was_cold):
                    stream = model.generate(prompt, params, request_id=request_id, priority=priority)
                    try:
                        async with contextlib.aclosing(until_closed(stream, self._closing)) as outputs:
                            async for output in outputs:
                                if was_cold:
                                    self.on_cold_start(name, time.perf_counter() - arrival)
                                    was_cold = False
                                yield output
                    finally:
                        await stream.aclose()
        finally:
            self._num_streams -= 1
            if not self._num_streams:
                self._drained.set()

    async def embed(self, name: str, inputs: EmbedInputs, session: str | None = None) -> EmbeddingResult:
        """Embeddings from model `name`, loading it first if cold; the router's errors only.
        session: the client's session, if it names one (observe_session)."""
        self._check_open()
        model = self.embedding_handle(name).model
        self.observe_session(session, name)
        arrival = time.perf_counter()
        with self._queue_full_counted(name), errors.router_errors(name):
            async with use_bounded(self.pool, name, self._load_queues[name], 1) as (_, was_cold):
                result = await model.embed(inputs)
        if was_cold:
            self.on_cold_start(name, time.perf_counter() - arrival)
        return result

    @contextlib.contextmanager
    def _queue_full_counted(self, name: str) -> Iterator[None]:
        try:
            yield
        except errors.ModelQueueFullError:
            self.on_queue_full(name)
            raise

    def _priority(self, name: str, priority: int | None) -> int:
        if priority is None:
            return self._request_priority[name]
        return checked_priority(priority)

    def _check_open(self) -> None:
        if self._closed:
            raise errors.RouterClosedError("the router is shutting down")


def checked_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise errors.InvalidParameterError("priority", f"priority must be an integer, got {priority!r}")
    return priority
