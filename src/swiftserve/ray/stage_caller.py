"""The pipeline stage caller of a replica (router/stage_caller.StageCaller) across replicas (no ray).

A replica that runs a pipeline request calls each stage's model here when this replica holds it
resident (or loading), and through the deployment handle otherwise (stage_plan.py says which):
- `prewarm(models)`: one PrewarmCall per model, all at once, each routed by its model to the
  replica where it will run; not awaited by the request (a failure is logged, once per model,
  and the stage's own call meets it again);
- `open(call)`: the stage's call, routed by its model (the request router sends it where the
  pre-warm went, or where the model is resident); the answer streams back as GenerationSteps;
- `embed(call)`: the same for embed and retrieve stages.
A router error of the serving replica is raised here as it was raised there (stage_wire.py); a
replica lost in the middle of a stage is RequestAbortedError.
The handle is behind `ReplicaSender` (stage_handle.py on Ray; tests pass fakes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any, Protocol

from swiftserve.engine.embedding_inputs import EmbeddingResult
from swiftserve.ray.stage_plan import elsewhere
from swiftserve.ray.stage_wire import PrewarmCall, StageFailure, StageOpened, StagePart
from swiftserve.router.errors import RequestAbortedError
from swiftserve.router.request_types import GenerationStep, GenerationStream
from swiftserve.router.stage_caller import StageCall

logger = logging.getLogger("swiftserve.ray")


class ReplicaSender(Protocol):
    """Calls a method of a replica of this deployment, routed by its argument (stage_plan.route_of)."""

    async def call(self, method: str, arg: Any) -> Any: ...

    def stream(self, method: str, arg: Any) -> AsyncGenerator[Any, None]: ...


class RayStages:
    """states_here: this replica's model states (model -> state). is_replica_failure: which
    exceptions of `sender` mean that the replica was lost (Ray's)."""

    def __init__(
        self,
        states_here: Callable[[], Mapping[str, str]],
        sender: ReplicaSender,
        is_replica_failure: Callable[[BaseException], bool],
    ) -> None:
        self.states_here = states_here
        self.sender = sender
        self.is_replica_failure = is_replica_failure
        self._prewarms: set[asyncio.Task] = set()
        self._failed_prewarms: set[str] = set()  # models whose pre-warm failure was logged

    def elsewhere(self, models: Sequence[str]) -> frozenset[str]:
        return elsewhere(models, self.states_here())

    def prewarm(self, models: Sequence[str]) -> None:
        for model in models:
            task = asyncio.ensure_future(self._prewarm(model))
            self._prewarms.add(task)  # a reference, until it ends
            task.add_done_callback(self._prewarms.discard)

    async def _prewarm(self, model: str) -> None:
        try:
            await self.sender.call("prewarm", PrewarmCall((model,)))
        except Exception as exc:  # noqa: BLE001 - logged; the stage's call meets it again
            if model not in self._failed_prewarms:
                self._failed_prewarms.add(model)
                logger.warning("pre-warming %s on another replica failed: %s", model, exc)

    async def open(self, call: StageCall) -> GenerationStream:
        parts = self.sender.stream("stage", call)
        try:
            head = await self._part(call, parts)
        except BaseException:
            await parts.aclose()
            raise
        if not isinstance(head, StageOpened):
            await parts.aclose()
            raise RuntimeError(f"a stage's call to {call.model!r} answered {type(head).__name__} first")
        return GenerationStream(call.model, head.n, head.prompt_token_ids, self._steps(call, parts))

    async def _steps(
        self, call: StageCall, parts: AsyncGenerator[Any, None]
    ) -> AsyncGenerator[GenerationStep, None]:
        async with contextlib.aclosing(parts):
            while True:
                try:
                    step = await self._part(call, parts)
                except StopAsyncIteration:
                    return
                if not isinstance(step, GenerationStep):
                    raise RuntimeError(f"a stage's call to {call.model!r} sent {type(step).__name__}")
                yield step

    async def _part(self, call: StageCall, parts: AsyncGenerator[Any, None]) -> StagePart:
        """The next part; a StageFailure raised as its error, a lost replica as RequestAbortedError."""
        with self._lost_as_aborted(call):
            part = await parts.__anext__()
        if isinstance(part, StageFailure):
            raise part.error()
        return part

    async def embed(self, call: StageCall) -> EmbeddingResult:
        with self._lost_as_aborted(call):
            result = await self.sender.call("stage_embed", call)
        if isinstance(result, StageFailure):
            raise result.error()
        return result

    @contextlib.contextmanager
    def _lost_as_aborted(self, call: StageCall):
        try:
            yield
        except Exception as exc:
            if not self.is_replica_failure(exc):
                raise
            message = f"the replica running {call.model!r} for this stage stopped ({type(exc).__name__})"
            raise RequestAbortedError(message) from exc
