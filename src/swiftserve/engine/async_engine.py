"""The asyncio face of one engine: requests stream back as tokens arrive.

All engine state lives on one worker thread that alternates between applying queued commands
(add, abort) and running steps; the event loop only enqueues commands and receives outputs, so
it never waits on model compute. Outputs are cumulative, so a slow consumer simply skips to the
latest one.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable

from swiftserve.config import EngineConfig
from swiftserve.engine.errors import RequestFailedError
from swiftserve.engine.llm_engine import EngineStats, LLMEngine
from swiftserve.outputs import RequestOutput
from swiftserve.sampling_params import SamplingParams

_STOP = object()


class EngineDeadError(RuntimeError):
    """The engine was shut down, or a step failed, while the request was in flight."""


class AsyncEngine:
    def __init__(self, config: EngineConfig) -> None:
        self.engine = LLMEngine(config)
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._streams: dict[str, asyncio.Queue] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

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

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._worker, name=f"engine-{self.model_name}", daemon=True)
        self._thread.start()

    async def shutdown(self) -> None:
        """Abort everything in flight (their streams end with finish_reason "abort") and stop."""
        if self._thread is None:
            return
        self._commands.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    # -- requests ------------------------------------------------------------------------------
    async def generate(
        self, prompt: str | list[int], params: SamplingParams, request_id: str | None = None
    ) -> AsyncIterator[RequestOutput]:
        """Cumulative outputs after each step that advanced the request; the last has finished=True.
        Raises ValueError or QueueFullError before the first output. Closing early aborts it."""
        if self._thread is None:
            raise EngineDeadError("the engine is not running; call start() first")
        request_id = request_id or uuid.uuid4().hex
        if request_id in self._streams:
            raise ValueError(f"request id {request_id!r} is already in use")
        stream: asyncio.Queue = asyncio.Queue()
        self._streams[request_id] = stream
        added = self._loop.create_future()
        finished = False
        try:
            self._commands.put(lambda: self._add(request_id, prompt, params, added))
            await added
            while not finished:
                output = await self._next(stream)
                finished = output.finished
                yield output
        finally:
            self._streams.pop(request_id, None)
            if not finished:
                self.abort(request_id)

    async def _next(self, stream: asyncio.Queue) -> RequestOutput:
        items = [await stream.get()]
        while not stream.empty():
            items.append(stream.get_nowait())
        for item in items:
            if isinstance(item, BaseException):
                raise item
        return items[-1]

    def abort(self, request_id: str) -> None:
        self._commands.put(lambda: self.engine.abort_request(request_id))

    # -- the worker thread ---------------------------------------------------------------------
    def _add(self, request_id: str, prompt, params: SamplingParams, added: asyncio.Future) -> None:
        try:
            self.engine.add_request(request_id, prompt, params)
        except Exception as exc:  # noqa: BLE001 - handed to the caller, who raises it
            self._call_soon(_settle, added, exc)
            return
        self._call_soon(_settle, added, None)

    def _worker(self) -> None:
        while True:
            if not self._apply_commands(block=not self.engine.has_unfinished()):
                self._abort_all("the engine is shutting down")
                return
            if self.engine.has_unfinished():
                self._step()

    def _apply_commands(self, block: bool) -> bool:
        """Run queued commands (waiting for one if idle); False once asked to stop."""
        try:
            command = self._commands.get(block=block)
        except queue.Empty:
            return True
        while True:
            if command is _STOP:
                return False
            command()
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return True

    def _step(self) -> None:
        try:
            outputs = self.engine.step()
        except Exception as exc:  # noqa: BLE001 - a failed step must not kill the engine
            self._abort_all(f"engine step failed: {exc!r}")
            return
        if outputs:
            self._call_soon(self._dispatch, outputs)
        elif self.engine.has_unfinished():
            time.sleep(0.001)  # nothing schedulable yet; don't spin

    def _abort_all(self, reason: str) -> None:
        error = EngineDeadError(reason)
        for request_id in list(self.engine.requests):
            self.engine.abort_request(request_id)
            self._call_soon(self._deliver, request_id, error)

    def _dispatch(self, outputs: list[RequestOutput]) -> None:
        for output in outputs:
            item = output if output.error is None else RequestFailedError(output.error)
            self._deliver(output.request_id, item)

    def _deliver(self, request_id: str, item) -> None:
        stream = self._streams.get(request_id)
        if stream is not None:
            stream.put_nowait(item)

    def _call_soon(self, fn: Callable, *args) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass


def _settle(future: asyncio.Future, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)
