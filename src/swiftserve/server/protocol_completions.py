"""The wire's text completions: the request, and the answer (also each chunk of its stream)."""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import UNSET, Meta, Struct, UnsetType

from swiftserve.router.request_types import Usage
from swiftserve.server.protocol_common import (
    MAX_TOP_LOGPROBS,
    NumChoices,
    PositiveInt,
    PromptLogprobs,
    SamplingFields,
)


class CompletionRequest(SamplingFields, kw_only=True):
    prompt: str | list[Any]
    max_tokens: PositiveInt = 16
    echo: bool = False
    logprobs: Annotated[int, Meta(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    best_of: NumChoices | None = None
    suffix: str | None = None


class CompletionLogprobs(Struct):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(Struct):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: str | None
    prompt_logprobs: PromptLogprobs | UnsetType = UNSET  # only when asked for; first chunk if streamed


class TextCompletion(Struct):
    """A /v1/completions answer, or one chunk of its stream (OpenAI's "text_completion")."""

    id: str
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None | UnsetType = UNSET
    system_fingerprint: str | UnsetType = UNSET
    object: str = "text_completion"
