"""The request path for many models in one process: every generate and embed goes through here.

The router hands out one handle per model. Two levels of call:
- requests (`chat`, `complete`, `open_chat`, `open_completion`; generation.py): messages or
  prompts in, token ids, context check, completion budget, n choices, deltas and usage out, as
  plain dataclasses (request_types.py). The HTTP routes and the Python `Server` call these.
- per model (`generate`, `embed`; model_router.py): one request on one model, acquired, loaded if
  cold and released in the model pool (model_pool.py: residency, loads, evictions, scale to zero).
A request's `timeout` (else the router's request_timeout_s) bounds it from arrival to its last
output (deadline.py); a pipeline's bounds the whole pipeline.
Typed errors (errors.py) come out of every call: a per-model call maps the lower layers' errors
to the router's once, around the whole call (a stream from its first output to its last); the
server maps the router's errors to HTTP in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from swiftserve.router import errors, generation, pipeline_run
from swiftserve.router.deadline import Deadline
from swiftserve.router.model_pool import ModelPool
from swiftserve.router.model_router import ColdStartHook, ModelRouter, checked_priority
from swiftserve.router.pipeline_spec import PipelineSpec
from swiftserve.router.pipeline_stream import PipelineStream
from swiftserve.router.pipeline_table import PipelineTable
from swiftserve.router.pipeline_types import PipelineInput, PipelineOutcome, PipelineResult
from swiftserve.router.prompts import DEFAULT_MAX_TOKENS
from swiftserve.router.request_types import Choice, Generation, GenerationStream
from swiftserve.router.stage_caller import StageCaller


class Router(ModelRouter):
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
        super().__init__(pool, on_cold_start)
        # The completion budget of a request that names none (capped by what the context leaves).
        self.default_max_tokens = default_max_tokens
        self.request_timeout_s = request_timeout_s  # for requests that set no timeout (None: none)
        self.pipelines = PipelineTable()
        # Set by a process that is one of several (a Ray replica): where the stages of its pipelines
        # whose models run elsewhere are called (stage_caller.py). None: every stage runs here.
        self.remote_stages: StageCaller | None = None
        # on_pipeline(name, outcome): each pipeline request's end (pipeline_types.PipelineOutcome).
        self.on_pipeline: Callable[[str, PipelineOutcome], None] = lambda name, outcome: None
        # on_timeout(model): a request to a model that ran past its timeout (pipelines: on_pipeline).
        self.on_timeout: Callable[[str], None] = lambda name: None

    # -- requests ---------------------------------------------------------------------------------
    # Every request call takes, beside its own arguments and SamplingParams fields (`sampling`):
    # priority: lower runs earlier, vLLM's sense (None: the model's request_priority, or the
    # pipeline's priority); timeout: seconds from arrival to the last output (None: the router's
    # request_timeout_s), RequestTimeoutError past it, everything the request held let go; session:
    # the client's session, if it names one (model_router.observe_session learns who follows whom).
    async def open_chat(
        self,
        model: str,
        messages: list[dict],
        max_tokens: int | None = None,
        *,
        priority: int | None = None,
        timeout: float | None = None,
        session: str | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
        **sampling: Any,
    ) -> GenerationStream:
        """Starts a reply to `messages` ({"role", "content"} dicts); `sampling` holds SamplingParams
        fields (n, temperature, stop, logprobs, ...); template_kwargs: what else the chat template
        is given (`tools`). Returns once the request is admitted."""
        handle, default = self.chat_handle(model), self.default_max_tokens
        self.observe_session(session, model)
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
        session: str | None = None,
        **sampling: Any,
    ) -> Generation:
        """The whole reply to `messages`; see open_chat. `model` may name a pipeline: the reply is
        its final stage's, with the usage of every stage."""
        limits: dict[str, Any] = {"priority": priority, "timeout": timeout, "session": session}
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
        session: str | None = None,
        **sampling: Any,
    ) -> GenerationStream:
        """Starts completions of a prompt (text or token ids) or a list of prompts; choice
        `prompt_index * n + i` is the i-th completion of that prompt."""
        handle, default = self.chat_handle(model), self.default_max_tokens
        self.observe_session(session, model)
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
        session: str | None = None,
        **sampling: Any,
    ) -> Generation:
        """The whole of the completions; see open_completion."""
        limits: dict[str, Any] = {"priority": priority, "timeout": timeout, "session": session}
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
        session: str | None = None,
        **sampling: Any,
    ) -> PipelineResult:
        """Runs pipeline `name` on a conversation (its last user message is the input); the
        caller's max_tokens and sampling fields apply to the final stage, its priority to every
        stage. PipelineQueueFullError at arrival past the pipeline's max_queue."""
        self._check_open()
        pipeline = self.pipelines.get(name)
        self.observe_session(session, name)
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
        session: str | None = None,
        **sampling: Any,
    ) -> PipelineStream:
        """run_pipeline with the final stage streamed; every other stage has run on return."""
        self._check_open()
        pipeline = self.pipelines.get(name)
        self.observe_session(session, name)
        request = _pipeline_input(messages, max_tokens, sampling, priority)
        deadline = self._deadline(name, timeout, pipeline=True)
        return await pipeline_run.open_stream(self, pipeline, request, deadline, self.remote_stages)


def _pipeline_input(
    messages: list[dict], max_tokens: int | None, sampling: dict[str, Any], priority: int | None
) -> PipelineInput:
    if not messages or not all(isinstance(m, dict) for m in messages):
        raise errors.InvalidParameterError("messages", "'messages' must hold at least one message.")
    checked = None if priority is None else checked_priority(priority)
    return PipelineInput(list(messages), max_tokens, sampling, checked)


def as_generation(result: PipelineResult) -> Generation:
    """A pipeline's answer as a chat reply: the final stage's choices (a retrieve stage's
    passages as one), with the usage of every stage."""
    if result.final is not None:
        return replace(result.final, model=result.pipeline, usage=result.usage)
    choice = Choice(0, 0, str(result.output), [], None, "stop")
    return Generation(result.pipeline, [choice], result.usage, [[]])
