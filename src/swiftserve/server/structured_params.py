"""The request's constraint, from whichever field the client used: OpenAI's `response_format`,
vLLM's `guided_json` / `guided_regex` / `guided_choice` / `guided_grammar`, or vLLM's newer
`structured_outputs` object. At most one per request; a malformed one is a 400 naming its field.
Whether a valid-looking schema can be enforced is the engine's to say, when it compiles it."""

from __future__ import annotations

from typing import Any

from swiftserve.server.errors import bad_request
from swiftserve.server.protocol import GenerationRequest
from swiftserve.server.protocol_tools import ResponseFormat, StructuredOutputsParams
from swiftserve.structured_outputs import StructuredOutputs, StructuredOutputsError

_GUIDED = {
    "guided_json": "json",
    "guided_regex": "regex",
    "guided_choice": "choice",
    "guided_grammar": "grammar",
}


def structured_outputs(body: GenerationRequest) -> StructuredOutputs | None:
    sources = _sources(body)
    if len(sources) > 1:
        raise bad_request(
            f"set at most one of {', '.join(sorted(sources))}: each constrains the whole output",
            param=sorted(sources)[1],
        )
    if not sources:
        return None
    ((param, fields),) = sources.items()
    try:
        return StructuredOutputs(param=param, **fields)
    except StructuredOutputsError as exc:
        raise bad_request(str(exc), param=exc.param) from None


def _sources(body: GenerationRequest) -> dict[str, dict[str, Any]]:
    """Field name -> StructuredOutputs keywords, for every constraint field the body sets."""
    sources: dict[str, dict[str, Any]] = {}
    fmt = body.response_format
    if fmt is not None and fmt.type != "text":
        sources["response_format"] = _response_format(fmt)
    for name, kind in _GUIDED.items():
        value = getattr(body, name)
        if value is not None:
            sources[name] = {kind: value}
    so = body.structured_outputs
    if so is not None:
        sources["structured_outputs"] = _structured_outputs_object(so)
    return sources


def _response_format(fmt: ResponseFormat) -> dict[str, Any]:
    if fmt.type == "json_object":
        return {"json_object": True}
    if fmt.json_schema is None or fmt.json_schema.schema is None:
        raise bad_request(
            "response_format of type json_schema needs json_schema.schema",
            param="response_format.json_schema.schema",
        )
    return {"json": fmt.json_schema.schema}


def _structured_outputs_object(so: StructuredOutputsParams) -> dict[str, Any]:
    fields: dict[str, Any] = {
        kind: value
        for kind, value in (
            ("json", so.json),
            ("regex", so.regex),
            ("choice", so.choice),
            ("grammar", so.grammar),
        )
        if value is not None
    }
    if so.json_object:
        fields["json_object"] = True
    if so.disable_any_whitespace is False:
        fields["whitespace_flexible"] = True
    return fields
