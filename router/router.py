"""The request path for many models in one process: every generate and embed goes through here.

The router owns the model pool (model_pool.py: residency, loads, evictions, scale to zero) and
hands out one handle per model. Two levels of call:
- requests (`chat`, `complete`, `open_chat`, `open_completion`; generation.py): messages or
  prompts in, token ids, context check, completion budget, n choices, deltas and usage out, as
  plain dataclasses (request_types.py). The HTTP routes and the Python `Server` call these.
- per model (`generate`, `embed`): one request on one model, which
  1. acquires the model in the pool, so it cannot be evicted under the request;
  2. loads it if it is cold (the request waits: queued, not refused, up to the model's max_queue
     waiting: admission.py) and times that cold start;
  3. runs the request on the resident model, at its priority (the request's, else the model's
     request_priority), and releases the model when the request ends.
A request's `timeout` (else the router's request_timeout_s) bounds it from arrival to its last
output (deadline.py); a pipeline's bounds the whole pipeline.
Typed errors (errors.py) come out of every call: a per-model call maps the lower layers' errors
to the router's once, around the whole call (a stream from its first output to its last); the
server maps the router's errors to HTTP in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from swiftserve.router import errors, generation, pipeline_run
from swiftserve.router.abortable import until_closed
from swiftserve.router.admission import Gate, use_bounded
from swiftserve.router.deadline import Deadline
from swiftserve.router.handles import ChatHandle, EmbeddingHandle, ModelHandle
from swiftserve.router.model_pool import ModelPool
from swiftserve.router.pipeline_spec import PipelineSpec
from swiftserve.router.pipeline_stream import PipelineStream
from swiftserve.router.pipeline_table import PipelineTable
from swiftserve.router.pipeline_types import PipelineInput, PipelineOutcome, PipelineResult
from swiftserve.router.pool_entry import Registration
from swiftserve.router.prompts import DEFAULT_MAX_TOKENS
from swiftserve.router.request_types import Choice, Generation, GenerationStream
from swiftserve.router.stage_caller import StageCaller
from swiftserve.scheduler.residency_types import Policy, State

from swiftserve.engine.embedding_inputs import EmbeddingResult
from swiftserve.engine.served_model import ChatModel, EmbeddingModel, EmbedInputs, ServedModel
from swiftserve.outputs import RequestOutput
from swiftserve.sampling_params import SamplingParams

__all__ = ["ChatHandle", "EmbeddingHandle", "ModelHandle", "ModelInfo", "Router"]

# cold_start(model, seconds): a request that found its model cold got its first result after
# `seconds` from its arrival (feeds the cold-start histogram).
ColdStartHook = Callable[[str, float], None]
# How long a shutdown waits for the aborted streams to release their models before unloading.
SHUTDOWN_DRAIN_S = 5.0


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


class Router:
    """See the module docstring. Build it, `add` models, then `start` on the serving loop."""

    def __init__(
        self,
        pool: ModelPool,
        on_cold_start: ColdStartHook | None = None,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        request_timeout_s: float | None = None,
    ) -> None:
        if default_max_tokens < 1:
            raise ValueError(f"default_max_tokens must be >= 1, got {default_max_tokens}")
        if request_timeout_s is not None and not request_timeout_s > 0:
            raise ValueError(f"request_timeout_s must be > 0 or None, got {request_timeout_s}")
        self.pool = pool
        self.on_cold_start = on_cold_start or (lambda name, seconds: None)
        # The completion budget of a request that names none (capped by what the context leaves).
        self.default_max_tokens = default_max_tokens
        self.request_timeout_s = request_timeout_s  # for requests that set no timeout (None: none)
        self._handles: dict[str, ModelHandle] = {}
        self._sources: dict[str, str] = {}
        self._request_priority: dict[str, int] = {}  # per model, for requests that set none
        self._load_queues: dict[str, Gate] = {}  # per model: the sequences waiting for its load
        self._closed = False
        self._closing = asyncio.Event()  # set at shutdown: ends every stream still in flight
        self._num_streams = 0
        self._drained = asyncio.Event()
        self.pipelines = PipelineTable()
        # Set by a process that is one of several (a Ray replica): where the stages of its pipelines
        # whose models run elsewhere are called (stage_caller.py). None: every stage runs here.
        self.remote_stages: StageCaller | None = None
        # on_pipeline(name, outcome): each pipeline request's end (pipeline_types.PipelineOutcome).
        self.on_pipeline: Callable[[str, PipelineOutcome], None] = lambda name, outcome: None
        # on_queue_full(model): a request refused because the model's queue was full (any caller).
        self.on_queue_full: Callable[[str], None] = lambda name: None
        # on_timeout(model): a request to a model that ran past its timeout (pipelines: on_pipeline).
        self.on_timeout: Callable[[str], None] = lambda name: None

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
        entry = self.pool.entry(name)
        state = self.pool.state(name)
        fp = entry.model.footprint()
        resident = state in (State.RESIDENT, State.UNLOADING)
        kv_bytes = self.pool.ledger.kv_blocks(name) * fp.kv_block_bytes if resident else 0
        return ModelInfo(
            name=name,
            kind=entry.model.kind,
            policy=Policy(entry.budget.policy).value,
            state=state.value,
            resident_bytes=fp.weight_bytes + kv_bytes if resident else 0,
            num_loads=len(entry.load_seconds),
            num_unloads=entry.num_unloads,
            last_error=entry.last_error,
            source=self._sources.get(name, ""),
            parked_bytes=self.pool.ledger.host.parked_bytes(name),
            num_parks=entry.num_parks,
            num_drops=entry.num_drops,
            loads_by_tier=tuple(entry.loads_by_tier.items()),
        )

    def models(self) -> list[ModelInfo]:
        return [self.info(name) for name in self._handles]

    # -- requests ---------------------------------------------------------------------------------
    # Every request call takes, beside its own arguments and SamplingParams fields (`sampling`):
    # priority: lower runs earlier, vLLM's sense (None: the model's request_priority, or the
    # pipeline's priority); timeout: seconds from arrival to the last output (None: the router's
    # request_timeout_s), RequestTimeoutError past it, everything the request held let go.
    async def open_chat(
        self,
        model: str,
        messages: list[dict],
        max_tokens: int | None = None,
        *,
        priority: int | None = None,
        timeout: float | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
        **sampling: Any,
    ) -> GenerationStream:
        """Starts a reply to `messages` ({"role", "content"} dicts); `sampling` holds SamplingParams
        fields (n, temperature, stop, logprobs, ...); template_kwargs: what else the chat template
        is given (`tools`). Returns once the request is admitted."""
        handle, default = self.chat_handle(model), self.default_max_tokens
        deadline = self._deadline(model, timeout)
        async with deadline.bounding():
            stream = await generation.open_chat(
                handle, messages, max_tokens, sampling, default, priority, template_kwargs
            )
        return replace(stream, steps=deadline.bound(stream.steps))

    async def chat(
        self,
        model: str,
        messages: list[dict],
        max_tokens: int | None = None,
        *,
        priority: int | None = None,
        timeout: float | None = None,
        **sampling: Any,
    ) -> Generation:
        """The whole reply to `messages`; see open_chat. `model` may name a pipeline: the reply is
        its final stage's, with the usage of every stage."""
        limits: dict[str, Any] = {"priority": priority, "timeout": timeout}
        if model in self.pipelines:
            return as_generation(await self.run_pipeline(model, messages, max_tokens, **limits, **sampling))
        return await generation.collect(
            await self.open_chat(model, messages, max_tokens, **limits, **sampling)
        )

    async def open_completion(
        self,
        model: str,
        prompt: str | list,
        max_tokens: int | None = None,
        *,
        priority: int | None = None,
        timeout: float | None = None,
        **sampling: Any,
    ) -> GenerationStream:
        """Starts completions of a prompt (text or token ids) or a list of prompts; choice
        `prompt_index * n + i` is the i-th completion of that prompt."""
        handle, default = self.chat_handle(model), self.default_max_tokens
        deadline = self._deadline(model, timeout)
        async with deadline.bounding():
            stream = await generation.open_completion(handle, prompt, max_tokens, sampling, default, priority)
        return replace(stream, steps=deadline.bound(stream.steps))

    async def complete(
        self,
        model: str,
        prompt: str | list,
        max_tokens: int | None = None,
        *,
        priority: int | None = None,
        timeout: float | None = None,
        **sampling: Any,
    ) -> Generation:
        """The whole of the completions; see open_completion."""
        limits: dict[str, Any] = {"priority": priority, "timeout": timeout}
        return await generation.collect(
            await self.open_completion(model, prompt, max_tokens, **limits, **sampling)
        )

    def _deadline(self, name: str, timeout: float | None, pipeline: bool = False) -> Deadline:
        """The request's deadline, from now. A model's timeouts are counted here (on_timeout), a
        pipeline's with its outcome (on_pipeline)."""
        seconds = timeout if timeout is not None else self.request_timeout_s
        if pipeline:
            return Deadline.start(name, seconds)
        return Deadline.start(name, seconds, lambda: self.on_timeout(name))

    # -- pipelines --------------------------------------------------------------------------------
    async def add_pipeline(self, spec: PipelineSpec) -> None:
        """Serves a pipeline over the models added before (PipelineError naming the pipeline and
        stage); its retrieve stages' corpora are indexed now (loading their embedding model)."""
        await self.pipelines.add(self, spec, self.names())

    async def run_pipeline(
        self,
        name: str,
        messages: list[dict],
        max_tokens: int | None = None,
        *,
        priority: int | None = None,
        timeout: float | None = None,
        **sampling: Any,
    ) -> PipelineResult:
        """Runs pipeline `name` on a conversation (its last user message is the input); the
        caller's max_tokens and sampling fields apply to the final stage, its priority to every
        stage. PipelineQueueFullError at arrival past the pipeline's max_queue."""
        self._check_open()
        pipeline = self.pipelines.get(name)
        request = _pipeline_input(messages, max_tokens, sampling, priority)
        deadline = self._deadline(name, timeout, pipeline=True)
        return await pipeline_run.run(self, pipeline, request, deadline, self.remote_stages)

    async def open_pipeline(
        self,
        name: str,
        messages: list[dict],
        max_tokens: int | None = None,
        *,
        priority: int | None = None,
        timeout: float | None = None,
        **sampling: Any,
    ) -> PipelineStream:
        """run_pipeline with the final stage streamed; every other stage has run on return."""
        self._check_open()
        pipeline = self.pipelines.get(name)
        request = _pipeline_input(messages, max_tokens, sampling, priority)
        deadline = self._deadline(name, timeout, pipeline=True)
        return await pipeline_run.open_stream(self, pipeline, request, deadline, self.remote_stages)

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

    async def embed(self, name: str, inputs: EmbedInputs) -> EmbeddingResult:
        """Embeddings from model `name`, loading it first if cold; the router's errors only."""
        self._check_open()
        model = self.embedding_handle(name).model
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
        return _checked_priority(priority)

    def _check_open(self) -> None:
        if self._closed:
            raise errors.RouterClosedError("the router is shutting down")


def _checked_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise errors.InvalidParameterError("priority", f"priority must be an integer, got {priority!r}")
    return priority


def _pipeline_input(
    messages: list[dict], max_tokens: int | None, sampling: dict[str, Any], priority: int | None
) -> PipelineInput:
    if not messages or not all(isinstance(m, dict) for m in messages):
        raise errors.InvalidParameterError("messages", "'messages' must hold at least one message.")
    checked = None if priority is None else _checked_priority(priority)
    return PipelineInput(list(messages), max_tokens, sampling, checked)


def as_generation(result: PipelineResult) -> Generation:
    """A pipeline's answer as a chat reply: the final stage's choices (a retrieve stage's
    passages as one), with the usage of every stage."""
    if result.final is not None:
        return replace(result.final, model=result.pipeline, usage=result.usage)
    choice = Choice(0, 0, str(result.output), [], None, "stop")
    return Generation(result.pipeline, [choice], result.usage, [[]])
