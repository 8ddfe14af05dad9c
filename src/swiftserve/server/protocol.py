"""Decoding the OpenAI-compatible API's requests (msgspec Structs: protocol_chat.py,
protocol_completions.py, protocol_embeddings.py, protocol_pipelines.py; what they share,
protocol_common.py).

Requests forbid unknown fields: a field that neither the OpenAI API reference nor our listed
extensions define is a 400 naming it. Fields the reference defines but swiftserve does not
implement are accepted when they ask for nothing (null, empty, the default) and rejected with a
clear message otherwise (see `unsupported_fields`). Ranges are msgspec constraints, so a bad value
is reported with its path, e.g. "Expected `int` >= 1 - at `$.max_tokens`".
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from msgspec import Struct

from swiftserve.server.errors import bad_request, from_validation_error
from swiftserve.server.protocol_chat import ChatCompletionRequest
from swiftserve.server.protocol_common import MAX_INT, RequestStruct
from swiftserve.server.protocol_completions import CompletionRequest
from swiftserve.server.protocol_embeddings import EmbeddingRequest
from swiftserve.server.protocol_pipelines import PipelineRunRequest

# The two requests that generate (and may stream): they share the sampling fields.
GenerationRequest = ChatCompletionRequest | CompletionRequest


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


RequestT = TypeVar(
    "RequestT", ChatCompletionRequest, CompletionRequest, EmbeddingRequest, "PipelineRunRequest"
)


_DECODERS: dict[type[RequestStruct], msgspec.json.Decoder[Any]] = {
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
