"""One handle per served model: what the server and the request helpers (generation.py) see of it.

A handle answers from the model while it is cold (tokenizer, chat template, context length,
dimension), and sends every request through the router, which loads the model first and keeps it
resident until the request ends (model_router.py). The handles only need the router's per-model
calls (`ModelRequests`), so this module does not import model_router.py, and generation.py can take
a handle without an import cycle.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Protocol

from swiftserve.router.tool_formats import ToolFormat, format_for

from swiftserve.engine.embedding_inputs import EmbeddingResult
from swiftserve.engine.served_model import ChatModel, EmbeddingModel, EmbedInputs, ServedModel, TextTokenizer
from swiftserve.outputs import RequestOutput
from swiftserve.sampling_params import SamplingParams


class ModelRequests(Protocol):
    """The router's calls for one request on one model (model_router.ModelRouter implements them)."""

    def generate(
        self,
        name: str,
        prompt: str | list[int],
        params: SamplingParams,
        request_id: str | None = None,
        priority: int | None = None,
    ) -> AsyncGenerator[RequestOutput, None]: ...

    async def embed(self, name: str, inputs: EmbedInputs) -> EmbeddingResult: ...


class ModelHandle:
    """One model as the server sees it; the model's own handle, whatever its state."""

    def __init__(self, router: ModelRequests, model: ServedModel) -> None:
        self.router = router
        self.name, self.kind = model.name, model.kind
        self._served = model

    @property
    def is_resident(self) -> bool:
        return self._served.is_resident

    def stats(self) -> object | None:
        """The engine's stats while resident (read by /metrics), else None (nothing running, nothing
        held). Duck-typed: only models that run an engine with stats() have them."""
        if not self._served.is_resident:
            return None
        source = getattr(self._served, "engine", None) or self._served
        stats = getattr(source, "stats", None)
        return stats() if stats is not None else None


class ChatHandle(ModelHandle):
    def __init__(self, router: ModelRequests, model: ChatModel) -> None:
        super().__init__(router, model)
        self.model = model

    @property
    def tokenizer(self) -> TextTokenizer:
        return self.model.tokenizer

    @property
    def max_model_len(self) -> int:
        return self.model.max_model_len

    def apply_chat_template(
        self, messages: list[dict], add_generation_prompt: bool = True, **template_kwargs: Any
    ) -> str:
        """template_kwargs (`tools`) are passed only when given: models without them still work."""
        if template_kwargs:
            return self.model.apply_chat_template(messages, add_generation_prompt, **template_kwargs)  # type: ignore[call-arg]
        return self.model.apply_chat_template(messages, add_generation_prompt)

    @property
    def tool_format(self) -> ToolFormat:
        """The model's tool-call format, from its architecture and chat template (duck-typed: a
        model that tells neither gets the default)."""
        chat_template = getattr(self.model.tokenizer, "chat_template", None)
        return format_for(getattr(self.model, "model_type", None), chat_template)

    def generate(
        self,
        prompt: str | list[int],
        params: SamplingParams,
        request_id: str | None = None,
        priority: int | None = None,
    ) -> AsyncGenerator[RequestOutput, None]:
        """Router.generate on this model: loads it if cold; the router's errors come out.
        priority None: the model's request_priority."""
        return self.router.generate(self.name, prompt, params, request_id, priority)


class EmbeddingHandle(ModelHandle):
    def __init__(self, router: ModelRequests, model: EmbeddingModel) -> None:
        super().__init__(router, model)
        self.model = model

    @property
    def dim(self) -> int:
        return self.model.dim

    async def embed(self, inputs: EmbedInputs) -> EmbeddingResult:
        """Router.embed on this model: loads it if cold; the router's errors come out."""
        return await self.router.embed(self.name, inputs)
