"""The asyncio face of one engine: requests stream back as tokens arrive.

The engine steps on a device executor (engine/device_executor.py): a few lanes (threads) per
device step the resident engines and split the cores between them, so models never fight over
the cores. Everything that touches engine state
(adding, aborting) is an executor command run between two steps, so the engine needs no locks; the
event loop only sends commands and receives outputs, so it never waits on model compute. Without
an executor the engine starts a private one, as it ran its own worker thread before. Outputs are
cumulative, so a slow consumer simply skips to the latest one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import uuid
from collections.abc import AsyncGenerator, Callable

from swiftserve.config import EngineConfig
from swiftserve.engine.device_executor import DeviceExecutor, ExecutorStoppedError
from swiftserve.engine.device_stream import EngineStream
from swiftserve.engine.errors import EngineDeadError, InvalidRequestError, RequestFailedError
from swiftserve.engine.grammar_backend_slot import GrammarBackendSlot
from swiftserve.engine.llm_engine import EngineStats, LLMEngine
from swiftserve.loader.model_source import ModelSource
from swiftserve.loader.tokenizer import TokenizerInfo
from swiftserve.model_runner.model_runner import CausalLM
from swiftserve.outputs import RequestOutput
from swiftserve.sampling_params import SamplingParams


class ChatSteppable:
    """What the executor steps: an LLMEngine (called on the executor thread only)."""

    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self.stream = EngineStream(engine.runner.device)

    def has_work(self) -> bool:
        return self.engine.has_unfinished()

    def is_urgent(self) -> bool:
        # A request still waiting for its first token: time to first token is what users feel.
        return any(r.first_token_time is None for r in self.engine.requests.values())

    def demand(self) -> int:
        # Sequences a step can serve: the unfinished ones, as many as one batch holds.
        return max(1, min(len(self.engine.requests), self.engine.config.scheduler.max_num_seqs))

    def priority(self) -> int:
        # Waiting requests count too: stepping is what admits them.
        return min((r.priority for r in self.engine.requests.values()), default=0)

    def step(self) -> list[RequestOutput]:
        return self.stream.run(self.engine.step)


class AsyncEngine:
    """generate()/abort() on the event loop; steps on `executor` (a private one when None).
    `name` keys the engine on the executor (default: the model), unique per executor. tokenizer,
    model, source and grammar_backend: already loaded or resolved ones, passed on to LLMEngine."""

    def __init__(
        self,
        config: EngineConfig,
        executor: DeviceExecutor | None = None,
        name: str | None = None,
        tokenizer: TokenizerInfo | None = None,
        model: CausalLM | None = None,
        source: ModelSource | None = None,
        grammar_backend: GrammarBackendSlot | None = None,
    ) -> None:
        self.engine = LLMEngine(config, tokenizer, model, source, grammar_backend)
        self.name = name or config.model
        self._owns_executor = executor is None
        self._executor = executor or DeviceExecutor(
            f"engine-{self.name}", urgent_lane_threads=0, chat_lanes=1
        )
        self._streams: dict[str, asyncio.Queue] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._is_attached = False
        self._is_shut_down = False
        self._start_lock = asyncio.Lock()  # concurrent first generate() calls attach once

    # -- what the server reads -----------------------------------------------------------------
    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    @property
    def model_name(self) -> str:
        return self.engine.model_name

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        return self.engine.apply_chat_template(messages, add_generation_prompt)

    def stats(self) -> EngineStats:
        return self.engine.stats()

    @property
    def num_in_flight(self) -> int:
        """Requests streaming to a caller or still held by the engine."""
        return max(len(self._streams), len(self.engine.requests))

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Attach to the executor (starting a private one); generate() calls it on first use."""
        async with self._start_lock:
            if self._is_attached:
                return
            self._loop = asyncio.get_running_loop()
            if self._owns_executor:
                self._executor.start()
            steppable = ChatSteppable(self.engine)
            attached = self._executor.attach(self.name, steppable, self._on_outputs, self._on_error)
            await asyncio.wrap_future(attached)
            self._is_attached = True

    async def shutdown(self) -> None:
        """Abort everything in flight (their streams end with EngineDeadError) and stop stepping,
        for good: a later generate() raises EngineDeadError."""
        if not self._is_attached:
            return
        self._is_attached, self._is_shut_down = False, True
        await asyncio.wrap_future(self._executor.detach(self.name))
        # Detached first, so no step can run between the abort and the stop.
        aborted = self._executor.call(lambda: self._abort_all("the engine is shutting down"), self.name)
        await asyncio.wrap_future(aborted)
        if self._owns_executor:
            await asyncio.to_thread(self._executor.stop)
        self.engine.close()

    # -- requests ------------------------------------------------------------------------------
    async def generate(
        self,
        prompt: str | list[int],
        params: SamplingParams,
        request_id: str | None = None,
        priority: int = 0,
    ) -> AsyncGenerator[RequestOutput, None]:
        """Cumulative outputs after each step that advanced the request; the last has finished=True.
        Raises InvalidRequestError (ContextLengthError among them) or QueueFullError before the
        first output. Closing early aborts it. priority: lower runs earlier (LLMEngine.add_request)."""
        if not self._is_attached:
            if self._is_shut_down:  # a served model's engine unloaded under a request: no restart
                raise EngineDeadError("the engine was shut down")
            await self.start()
        request_id = request_id or uuid.uuid4().hex
        if request_id in self._streams:
            raise InvalidRequestError("request_id", f"request id {request_id!r} is already in use")
        grammar = None
        if params.structured_outputs is not None:  # off the executor: the batch goes on meanwhile
            grammar = await self.engine.grammars.compile_async(params.structured_outputs)
        stream: asyncio.Queue = asyncio.Queue()
        self._streams[request_id] = stream
        finished = False
        try:
            added = self._executor.call(
                lambda: self.engine.add_request(
                    request_id, prompt, params, priority=priority, grammar=grammar
                ),
                self.name,  # on the lane stepping this engine: it has no locks
            )
            await asyncio.wrap_future(added)
            while not finished:
                output = await self._next(stream)
                finished = output.finished
                yield output
        finally:
            self._streams.pop(request_id, None)
            if not finished:
                # Wait for the engine to drop it: once the caller is told the stream is closed,
                # the model holds nothing of it (an unload that follows finds nothing in flight).
                await self._abort_and_wait(request_id)

    async def _next(self, stream: asyncio.Queue) -> RequestOutput:
        items = [await stream.get()]
        while not stream.empty():
            items.append(stream.get_nowait())
        for item in items:
            if isinstance(item, BaseException):
                raise item
        return items[-1]

    def abort(self, request_id: str) -> None:
        """Stops the request (between two steps, soon after this returns); a stream still
        reading it ends with its "abort" output."""
        self._submit_abort(request_id)

    async def _abort_and_wait(self, request_id: str) -> None:
        done = self._submit_abort(request_id)
        if done is not None:
            with contextlib.suppress(ExecutorStoppedError):
                await asyncio.shield(asyncio.wrap_future(done))

    def _submit_abort(self, request_id: str) -> concurrent.futures.Future | None:
        def abort_now() -> None:
            output = self.engine.abort_request(request_id)
            if output is not None:
                self._call_soon(self._deliver, request_id, output)

        try:
            return self._executor.call(abort_now, self.name)
        except ExecutorStoppedError:  # shut down: nothing is stepping it any more
            return None

    # -- callbacks (executor thread) -------------------------------------------------------------
    def _on_outputs(self, outputs: list[RequestOutput]) -> None:
        self._call_soon(self._dispatch, outputs)

    def _on_error(self, exc: BaseException) -> None:
        # A failed step ends this engine's requests only; the executor goes on with the others.
        self._abort_all(f"engine step failed: {exc!r}")

    def _abort_all(self, reason: str) -> None:
        error = EngineDeadError(reason)
        for request_id in list(self.engine.requests):
            self.engine.abort_request(request_id)
            self._call_soon(self._deliver, request_id, error)

    # -- the event loop --------------------------------------------------------------------------
    def _dispatch(self, outputs: list[RequestOutput]) -> None:
        for output in outputs:
            item = output if output.error is None else RequestFailedError(output.error)
            self._deliver(output.request_id, item)

    def _deliver(self, request_id: str, item) -> None:
        stream = self._streams.get(request_id)
        if stream is not None:
            stream.put_nowait(item)

    def _call_soon(self, fn: Callable, *args) -> None:
        if self._loop is None:  # never started: no stream is waiting on this engine
            return
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass
