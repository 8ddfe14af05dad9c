"""OpenAI request bodies -> the router's arguments: chat messages and sampling fields.

Only what is particular to the wire format is checked here (message roles and content parts,
stop-list length, logit_bias keys as strings); the values themselves are checked once, by the
router and SamplingParams, for HTTP and Python callers alike.
"""

from __future__ import annotations

from typing import Any

import msgspec

from swiftserve.router.tool_formats import DEFAULT, ToolFormat
from swiftserve.server.errors import bad_request
from swiftserve.server.protocol import GenerationRequest
from swiftserve.server.protocol_chat import ChatMessage, ContentPart
from swiftserve.server.protocol_pipelines import PipelineRunRequest
from swiftserve.server.session_header import SESSION_HEADER
from swiftserve.server.structured_params import structured_outputs
from swiftserve.server.tool_params import template_tool_message

MAX_STOP_SEQUENCES = 16
_TEMPLATE_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def sampling_fields(
    body: GenerationRequest, *, logprobs: int | None, prompt_logprobs: int | None = None
) -> dict[str, Any]:
    """SamplingParams fields (all but max_tokens) from what chat and completions share."""
    return {
        "n": body.n,
        "min_tokens": body.min_tokens,
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "top_k": body.top_k if body.top_k is not None and body.top_k > 0 else 0,
        "min_p": body.min_p or 0.0,
        "presence_penalty": body.presence_penalty or 0.0,
        "frequency_penalty": body.frequency_penalty or 0.0,
        "repetition_penalty": body.repetition_penalty or 1.0,
        "logit_bias": _logit_bias(body.logit_bias),
        "seed": body.seed,
        "stop": _stops(body.stop),
        "ignore_eos": body.ignore_eos,
        "logprobs": logprobs,
        "prompt_logprobs": prompt_logprobs,
        "structured_outputs": structured_outputs(body),
    }


def request_limits(body: GenerationRequest | PipelineRunRequest, headers: dict[str, str]) -> dict[str, Any]:
    """The router's priority, timeout and session keywords; None (unset) leaves priority and
    timeout to the model's, pipeline's or server's defaults, and the request out of any session."""
    return {"priority": body.priority, "timeout": body.timeout, "session": request_session(body, headers)}


def request_session(body: Any, headers: dict[str, str]) -> str | None:
    """The client's session: the x-session-id header, else OpenAI's `user` field (router/followers.py
    learns which model follows which within one)."""
    return headers.get(SESSION_HEADER) or getattr(body, "user", None) or None


def explicit_sampling_fields(body: Any) -> dict[str, Any]:
    """sampling_fields, only those the body sets to other than its default: a pipeline's final
    stage keeps its own configured values for the rest."""
    defaults = {f.name: f.default for f in msgspec.structs.fields(type(body))}
    fields = sampling_fields(body, logprobs=None)
    explicit = {k: v for k, v in fields.items() if getattr(body, k, None) not in (None, defaults.get(k))}
    if fields["structured_outputs"] is not None:  # set through response_format or guided_*, too
        explicit["structured_outputs"] = fields["structured_outputs"]
    return explicit


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if len(stops) > MAX_STOP_SEQUENCES:
        raise bad_request(
            f"stop may hold at most {MAX_STOP_SEQUENCES} sequences, got {len(stops)}", param="stop"
        )
    if any(not s for s in stops):
        raise bad_request("stop sequences must be non-empty strings", param="stop")
    return stops


def _logit_bias(bias: dict[str, float] | None) -> dict[int, float] | None:
    """JSON object keys are strings; the engine's are token ids."""
    if not bias:
        return None
    try:
        return {int(token_id): value for token_id, value in bias.items()}
    except ValueError:
        raise bad_request(
            "logit_bias keys must be token ids (integers as strings)", param="logit_bias"
        ) from None


def template_messages(messages: list[ChatMessage], fmt: ToolFormat = DEFAULT) -> list[dict]:
    """Request messages -> the dicts the chat template takes; text parts are joined, tool calls and
    results written in the model's tool-call format."""
    if not messages:
        raise bad_request("'messages' must hold at least one message.", param="messages")
    return [_template_message(i, message, fmt) for i, message in enumerate(messages)]


def _template_message(i: int, message: ChatMessage, fmt: ToolFormat) -> dict:
    is_tool_message = message.role == "tool" or (message.role == "assistant" and bool(message.tool_calls))
    role = _TEMPLATE_ROLES.get(message.role)
    if (
        (role is None and not is_tool_message)
        or message.function_call is not None
        or message.audio is not None
    ):
        raise bad_request(
            f"messages[{i}]: function messages (the deprecated function_call) are not supported; use tools.",
            param=f"messages[{i}].role",
            code="unsupported_parameter",
        )
    content = message.content
    if isinstance(content, list):
        content = _join_text_parts(content, i)
    if is_tool_message:
        return template_tool_message(i, message, content, fmt)
    assert role is not None
    if content is None:
        if role != "assistant":
            raise bad_request(f"messages[{i}].content is required.", param=f"messages[{i}].content")
        content = ""
    return {"role": role, "content": content}


def _join_text_parts(parts: list[ContentPart], i: int) -> str:
    texts = []
    for j, part in enumerate(parts):
        if part.type != "text" or part.text is None:
            raise bad_request(
                f"messages[{i}].content[{j}]: only text content parts are supported, got type '{part.type}'.",
                param=f"messages[{i}].content[{j}].type",
                code="unsupported_parameter",
            )
        texts.append(part.text)
    return "\n".join(texts)
