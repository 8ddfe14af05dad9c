"""The wire's chat completions: the request, the answer and the chunks of its stream."""

from __future__ import annotations

from typing import Any, Literal

from msgspec import UNSET, Struct, UnsetType

# The router's Usage is the wire's too (a frozen dataclass that msgspec encodes as it is).
from swiftserve.router.request_types import Usage
from swiftserve.server.protocol_common import PositiveInt, PromptLogprobs, SamplingFields, TopLogprobs
from swiftserve.server.protocol_pipelines import PipelineReport
from swiftserve.server.protocol_tools import NamedToolChoice, ToolCallDelta, ToolCallIn, ToolCallOut, ToolDef


class ContentPart(Struct, kw_only=True):
    """A message content part; only {"type": "text", "text": ...} is supported (checked later)."""

    type: str
    text: str | None = None


class ChatMessage(Struct, forbid_unknown_fields=True, kw_only=True):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    function_call: Any | None = None
    audio: Any | None = None


class ChatCompletionRequest(SamplingFields, kw_only=True):
    messages: list[ChatMessage]
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    logprobs: bool = False
    top_logprobs: TopLogprobs | None = None
    # Reference fields accepted and ignored: they change nothing about the tokens produced.
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: Any | None = None
    safety_identifier: str | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    modalities: list[str] | None = None
    moderation: Any | None = None
    # Tool calling (server/tool_params.py): the model's tool-call format, a grammar when a call is forced.
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # Reference fields that would change the output and are not implemented: null/empty only.
    functions: list[Any] | None = None
    function_call: Any | None = None
    audio: Any | None = None
    prediction: Any | None = None
    web_search_options: Any | None = None


class TopLogprob(Struct):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatTokenLogprob(Struct):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ChatLogprobs(Struct):
    content: list[ChatTokenLogprob] | None
    refusal: None = None


class ChatResponseMessage(Struct):
    role: str
    content: str | None
    refusal: None = None
    tool_calls: list[ToolCallOut] | UnsetType = UNSET


class ChatChoice(Struct):
    index: int
    message: ChatResponseMessage
    logprobs: ChatLogprobs | None
    finish_reason: str | None


class ChatCompletion(Struct):
    id: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | UnsetType = UNSET  # a string from the route; never null
    object: str = "chat.completion"
    prompt_logprobs: PromptLogprobs | UnsetType = UNSET  # only when asked for
    swiftserve: PipelineReport | UnsetType = UNSET  # a pipeline's stages and timings


class ChatDelta(Struct):
    role: str | UnsetType = UNSET
    content: str | UnsetType = UNSET
    tool_calls: list[ToolCallDelta] | UnsetType = UNSET


class ChatChunkChoice(Struct):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(Struct):
    id: str
    created: int
    model: str
    choices: list[ChatChunkChoice]
    # UNSET fields are never encoded: usage is absent unless stream_options.include_usage, then
    # `null` on every chunk but the last, which carries it (with no choices).
    usage: Usage | None | UnsetType = UNSET
    system_fingerprint: str | UnsetType = UNSET
    object: str = "chat.completion.chunk"
    swiftserve: PipelineReport | UnsetType = UNSET  # a pipeline's, on one chunk after the last choice
