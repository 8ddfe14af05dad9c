"""What the API's requests and answers share, as msgspec Structs and constraints.

Requests forbid unknown fields (RequestStruct): a field that neither the OpenAI API reference nor
our listed extensions define is a 400 naming it. Ranges are msgspec constraints, so a bad value
is reported with its path, e.g. "Expected `int` >= 1 - at `$.max_tokens`".

Extensions (vLLM-style) on chat and completions (SamplingFields): top_k, min_p, repetition_penalty,
min_tokens, ignore_eos, prompt_logprobs (answered as `prompt_logprobs` on each completion choice,
or on the chat completion; not with chat streaming), priority (lower runs earlier; null: the
model's or pipeline's default) and timeout (seconds from arrival to the last output; null: the
server's).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

from swiftserve.server.protocol_tools import ResponseFormat, StructuredOutputsParams

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


class RequestStruct(Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class StreamOptions(Struct, forbid_unknown_fields=True, kw_only=True):
    include_usage: bool = False
    include_obfuscation: bool | None = None


class SamplingFields(RequestStruct, kw_only=True):
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


class PromptLogprob(Struct):
    """vLLM's Logprob: one entry of a prompt position's {token id: logprob} map."""

    logprob: float
    rank: int | None
    decoded_token: str


# Per prompt token, the first None: the token itself and the top alternatives by token id.
PromptLogprobs = list[dict[int, PromptLogprob] | None]


_ENCODER = msgspec.json.Encoder()


def encode(obj: Any) -> bytes:
    return _ENCODER.encode(obj)
