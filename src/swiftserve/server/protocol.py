"""Request and response schemas of the OpenAI-compatible API, as msgspec Structs.

Requests forbid unknown fields: a field that neither the OpenAI API reference nor our listed
extensions define is a 400 naming it. Fields the reference defines but swiftserve does not
implement are accepted when they ask for nothing (null, empty, the default) and rejected with a
clear message otherwise (see `unsupported_fields`). Ranges are msgspec constraints, so a bad value
is reported with its path, e.g. "Expected `int` >= 1 - at `$.max_tokens`".

Extensions (vLLM-style) on chat and completions: top_k, min_p, repetition_penalty, min_tokens,
ignore_eos, prompt_logprobs (answered as `prompt_logprobs` on each completion choice, or on the
chat completion; not with chat streaming), priority (lower runs earlier; null: the model's or
pipeline's default) and timeout (seconds from arrival to the last output; null: the server's).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

# The router's Usage is the wire's too (a frozen dataclass that msgspec encodes as it is).
from swiftserve.router.request_types import Usage
from swiftserve.server.errors import bad_request, from_validation_error

MAX_INT = 2**31 - 1
MAX_N = 16
MAX_TOP_LOGPROBS = 20

PositiveInt = Annotated[int, Meta(ge=1, le=MAX_INT)]
NonNegInt = Annotated[int, Meta(ge=0, le=MAX_INT)]
Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
TopP = Annotated[float, Meta(gt=0.0, le=1.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
NumChoices = Annotated[int, Meta(ge=1, le=MAX_N)]
TopLogprobs = Annotated[int, Meta(ge=0, le=MAX_TOP_LOGPROBS)]
Seed = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
Priority = Annotated[int, Meta(ge=-MAX_INT - 1, le=MAX_INT)]
Timeout = Annotated[float, Meta(gt=0.0, le=MAX_INT)]


class _Request(Struct, forbid_unknown_fields=True, kw_only=True):
    pass


# ---------------------------------------------------------------- requests


class ContentPart(Struct, kw_only=True):
    """A message content part; only {"type": "text", "text": ...} is supported (checked later)."""

    type: str
    text: str | None = None


class FunctionCall(Struct, kw_only=True):
    """A call's function: its name and its arguments as JSON text (requests and answers)."""

    name: str
    arguments: str


class ToolCallIn(Struct, forbid_unknown_fields=True, kw_only=True):
    """A call an assistant message of the history made."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionDef(Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None  # the arguments follow `parameters` by grammar whenever a call is forced


class ToolDef(Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal["function"]
    function: FunctionDef


class FunctionName(Struct, forbid_unknown_fields=True, kw_only=True):
    name: str


class NamedToolChoice(Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal["function"]
    function: FunctionName


class ChatMessage(Struct, forbid_unknown_fields=True, kw_only=True):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    function_call: Any | None = None
    audio: Any | None = None


class StreamOptions(Struct, forbid_unknown_fields=True, kw_only=True):
    include_usage: bool = False
    include_obfuscation: bool | None = None


class JsonSchemaFormat(Struct, forbid_unknown_fields=True, kw_only=True):
    """response_format.json_schema: the schema is enforced whether or not `strict` is set."""

    name: str
    schema: dict[str, Any] | bool | None = None  # the boolean schemas too: true (any value), false
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StructuredOutputsParams(Struct, forbid_unknown_fields=True, kw_only=True):
    """vLLM's `structured_outputs` object (its newer form of the guided_* fields): one of json,
    regex, choice, grammar, json_object. disable_any_whitespace None keeps swiftserve's default
    (JSON without free whitespace); False allows any whitespace, as vLLM's default does."""

    json: dict[str, Any] | bool | str | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    disable_any_whitespace: bool | None = None
    disable_fallback: bool | None = None  # one backend here: nothing to fall back to
    disable_additional_properties: bool | None = None


class _SamplingFields(_Request, kw_only=True):
    """Fields shared by chat and text completions (reference fields plus extensions)."""

    model: str
    temperature: Temperature | None = None
    top_p: TopP | None = None
    n: NumChoices = 1
    stop: str | list[str] | None = None
    seed: Seed | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, Annotated[float, Meta(ge=-100.0, le=100.0)]] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # extensions
    top_k: Annotated[int, Meta(ge=-1, le=MAX_INT)] | None = None
    min_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    repetition_penalty: Annotated[float, Meta(gt=0.0, le=10.0)] | None = None
    min_tokens: NonNegInt = 0
    ignore_eos: bool = False
    prompt_logprobs: TopLogprobs | None = None
    priority: Priority | None = None
    timeout: Timeout | None = None
    # Structured outputs: OpenAI's response_format, vLLM's guided_* extra body and its newer
    # structured_outputs object; at most one of them per request (server/structured_params.py).
    response_format: ResponseFormat | None = None
    guided_json: dict[str, Any] | bool | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    guided_decoding_backend: str | None = None  # accepted: llguidance serves every request
    structured_outputs: StructuredOutputsParams | None = None


class ChatCompletionRequest(_SamplingFields, kw_only=True):
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


class CompletionRequest(_SamplingFields, kw_only=True):
    prompt: str | list[Any]
    max_tokens: PositiveInt = 16
    echo: bool = False
    logprobs: Annotated[int, Meta(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    best_of: NumChoices | None = None
    suffix: str | None = None


# The two requests that generate (and may stream): they share the sampling fields.
GenerationRequest = ChatCompletionRequest | CompletionRequest


class EmbeddingRequest(_Request, kw_only=True):
    model: str
    input: str | list[Any]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: PositiveInt | None = None
    user: str | None = None


def unsupported_fields(request: Struct) -> list[str]:
    """Names of reference fields set to something swiftserve does not implement."""
    bad = []
    for name in ("functions", "function_call", "audio", "prediction", "web_search_options"):
        if getattr(request, name, None) is not None:
            bad.append(name)
    modalities = getattr(request, "modalities", None)
    if modalities is not None and any(m != "text" for m in modalities):
        bad.append("modalities")
    if getattr(request, "suffix", None):
        bad.append("suffix")
    best_of = getattr(request, "best_of", None)
    if best_of is not None and best_of != getattr(request, "n", 1):
        bad.append("best_of")
    return bad


class PipelineRunRequest(_Request, kw_only=True):
    """POST /v1/pipelines/{name}: the input as text or as a conversation, and the final stage's
    max_tokens and sampling fields."""

    input: str | UnsetType = UNSET
    messages: list[dict] | UnsetType = UNSET
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    priority: Priority | None = None
    timeout: Timeout | None = None


RequestT = TypeVar(
    "RequestT", ChatCompletionRequest, CompletionRequest, EmbeddingRequest, "PipelineRunRequest"
)
_DECODERS: dict[type[_Request], msgspec.json.Decoder[Any]] = {
    t: msgspec.json.Decoder(t)
    for t in (ChatCompletionRequest, CompletionRequest, EmbeddingRequest, PipelineRunRequest)
}


def decode_request(body: bytes, type_: type[RequestT]) -> RequestT:
    """JSON body -> request Struct; malformed JSON, bad UTF-8 and schema errors -> 400."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(
            f"The request body is not valid UTF-8 (byte {exc.start}).", code="invalid_json"
        ) from None
    try:
        request: RequestT = _DECODERS[type_].decode(body)
    except msgspec.ValidationError as exc:
        raise from_validation_error(exc) from None
    except msgspec.DecodeError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}.", code="invalid_json") from None
    unsupported = unsupported_fields(request)
    if unsupported:
        raise bad_request(
            f"Not supported by this server: {', '.join(unsupported)} (only text generation is implemented).",
            param=unsupported[0],
            code="unsupported_parameter",
        )
    return request


def text_or_token_inputs(value: str | list, param: str, max_items: int) -> list[str] | list[list[int]]:
    """`prompt` / `input`: a string, strings, token ids or token-id lists -> a non-empty list of
    non-empty strings or token-id lists; anything else is a 400 naming `param`."""
    if isinstance(value, str):
        items: list = [value]
    elif not value:
        raise bad_request(f"'{param}' must not be an empty list.", param=param)
    elif all(isinstance(x, str) for x in value):
        items = list(value)
    elif all(_is_token_id(x) for x in value):
        items = [list(value)]
    elif all(isinstance(x, list) and all(_is_token_id(t) for t in x) for x in value):
        items = [list(x) for x in value]
    else:
        raise bad_request(
            f"'{param}' must be a string, a list of strings, a list of token ids or a list of token-id "
            "lists.",
            param=param,
        )
    if len(items) > max_items:
        raise bad_request(f"'{param}' may hold at most {max_items} items, got {len(items)}.", param=param)
    for i, item in enumerate(items):
        if len(item) == 0:
            raise bad_request(f"'{param}[{i}]' is empty: every item must hold text or tokens.", param=param)
    return items


def _is_token_id(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= MAX_INT


# ---------------------------------------------------------------- responses


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


class ToolCallOut(Struct):
    id: str
    function: FunctionCall
    type: str = "function"


class ChatResponseMessage(Struct):
    role: str
    content: str | None
    refusal: None = None
    tool_calls: list[ToolCallOut] | UnsetType = UNSET


class FunctionCallDelta(Struct):
    name: str | UnsetType = UNSET
    arguments: str | UnsetType = UNSET


class ToolCallDelta(Struct):
    """A streamed call: index, id, type and name on its first delta, then argument fragments."""

    index: int
    function: FunctionCallDelta
    id: str | UnsetType = UNSET
    type: str | UnsetType = UNSET


class ChatChoice(Struct):
    index: int
    message: ChatResponseMessage
    logprobs: ChatLogprobs | None
    finish_reason: str | None


class PromptLogprob(Struct):
    """vLLM's Logprob: one entry of a prompt position's {token id: logprob} map."""

    logprob: float
    rank: int | None
    decoded_token: str


# Per prompt token, the first None: the token itself and the top alternatives by token id.
PromptLogprobs = list[dict[int, PromptLogprob] | None]


class StageReport(Struct):
    """One pipeline stage of a request: its model and timings (seconds; pipeline_types.StageTiming)."""

    id: str
    kind: str
    model: str
    start_s: float
    cold_wait_s: float
    first_token_s: float | None
    run_s: float
    end_s: float
    load_started_by: str
    load_s: float
    prompt_tokens: int
    completion_tokens: int


class PipelineReport(Struct):
    """The `swiftserve` field of a pipeline's answer: what each stage cost."""

    pipeline: str
    latency_s: float
    stages: list[StageReport]


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


class EmbeddingData(Struct):
    index: int
    embedding: list[float] | str
    object: str = "embedding"


class EmbeddingUsage(Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(Struct):
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage
    object: str = "list"


class ModelCard(Struct):
    """OpenAI's model object, plus swiftserve's kind ("chat" / "embedding"), policy ("pinned" /
    "on-demand"), state ("cold", "loading", "resident", "unloading", "parked": unloaded with its
    weights kept in host memory, so its reload is fast) and, after a failed load,
    the error that sent it back to cold (until a load succeeds)."""

    id: str
    created: int
    owned_by: str = "swiftserve"
    object: str = "model"
    kind: str = "chat"
    policy: str = "pinned"
    state: str = "resident"
    error: str | UnsetType = UNSET  # left out while there is none


class ConfigReload(Struct):
    """The answer of POST /v1/models/reload: what re-reading the config file did."""

    added: list[str]
    unchanged: list[str]
    needs_restart: list[str]  # changed or removed in the file; served as before until a restart
    # Top-level keys (memory_budget, host_memory, idle_timeout) changed in the file: a restart applies them.
    settings_need_restart: list[str]
    object: str = "config.reload"


class ModelAction(Struct):
    """The answer of POST /v1/models/{id}/load or /unload."""

    id: str
    action: str
    result: str  # "loaded", "unloaded" or "already cold"
    state: str
    object: str = "model.action"


class ModelList(Struct):
    data: list[ModelCard]
    object: str = "list"


_ENCODER = msgspec.json.Encoder()


def encode(obj: Any) -> bytes:
    return _ENCODER.encode(obj)


class StageOutput(Struct):
    report: StageReport
    output: Any  # text, list of texts, or a vector


class PipelineRun(Struct):
    """The answer of POST /v1/pipelines/{name}: every stage's output and timings."""

    pipeline: str
    output: Any
    stages: list[StageOutput]
    usage: Usage
    latency_s: float
    object: str = "pipeline.run"
