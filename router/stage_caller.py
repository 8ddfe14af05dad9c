"""Where a pipeline's stages call their models: in this process, or in another one.

The pipeline runner (pipeline_run.py) builds each stage's call as plain values (StageCall) and
hands it to a StageCaller. LocalStages, the default, calls this process's router, as a pipeline
always did in one server. A process that is one of several (a Ray replica: swiftserve.ray) gives
the router a caller of its own (`Router.remote_stages`), which says at a request's arrival which
of the pipeline's models run elsewhere (`elsewhere`). For those models the runner takes no lease
and starts no load here; it asks the caller to pre-warm them where they will run (`prewarm`,
which returns at once) and sends their stages' calls through it (`open`, `embed`). Every other
model is served here exactly as without such a caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from swiftserve.router import generation
from swiftserve.router.request_types import GenerationStream

from swiftserve.engine.embedding_inputs import EmbeddingResult


@dataclass(frozen=True)
class StageCall:
    """One stage's call to its model. kind "chat": `inputs` are conversations (a fan-out has
    several); "completion": prompts; "embed" and "retrieve": the texts to embed. max_tokens and
    sampling (SamplingParams fields) as a request's; priority: the request's (None: the model's)."""

    model: str
    kind: str
    inputs: tuple[Any, ...]
    max_tokens: int | None = None
    sampling: Mapping[str, Any] = field(default_factory=dict)
    priority: int | None = None


class StageCaller(Protocol):
    def elsewhere(self, models: Sequence[str]) -> frozenset[str]:
        """Those of `models` whose stages run in another process (asked once per request)."""
        ...

    def prewarm(self, models: Sequence[str]) -> None:
        """Starts loading `models` where they will run; returns at once (errors are logged)."""
        ...

    async def open(self, call: StageCall) -> GenerationStream:
        """A chat or completion stage's call, admitted (as generation.open_chats)."""
        ...

    async def embed(self, call: StageCall) -> EmbeddingResult:
        """An embed or retrieve stage's call."""
        ...


class LocalStages:
    """Every stage in this process, through `host` (the Router; pipeline_host.PipelineHost)."""

    def __init__(self, host: Any) -> None:
        self.host = host

    def elsewhere(self, models: Sequence[str]) -> frozenset[str]:
        return frozenset()

    def prewarm(self, models: Sequence[str]) -> None:
        """Nothing: the runner pre-warms this process's models itself, under the request's ticket."""

    async def open(self, call: StageCall) -> GenerationStream:
        handle, default = self.host.chat_handle(call.model), self.host.default_max_tokens
        inputs, sampling = list(call.inputs), dict(call.sampling)
        if call.kind == "chat":
            return await generation.open_chats(
                handle, inputs, call.max_tokens, sampling, default, call.priority
            )
        return await generation.open_completion(
            handle, inputs, call.max_tokens, sampling, default, call.priority
        )

    async def embed(self, call: StageCall) -> EmbeddingResult:
        return await self.host.embed(call.model, list(call.inputs))
