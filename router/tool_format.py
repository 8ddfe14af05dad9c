"""Tool calling for models whose chat template has no tools of its own (SmolLM2): the tools go in
the system message, a call is a JSON list in `<tool_call>` tags, and the history's calls and
results are written back in the same form, so any template renders them.

    <tool_call>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</tool_call>

With tool_choice `required` or a named function the whole reply is constrained to that form by a
grammar (one call unless parallel_tool_calls); with `auto` the reply is free, and a reply that is
such a call is parsed into tool calls. Other families (Gemma 3's pythonic calls, Llama 3's JSON)
would each be a module like this one.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from swiftserve.structured_outputs import StructuredOutputs

OPEN, CLOSE = "<tool_call>", "</tool_call>"
# The JSON the grammar writes: as json.dumps does, so the arguments a stream sends piece by piece
# and those parsed at the end are the same text.
_JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(frozen=True)
class Tool:
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as generated


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def system_prompt(tools: list[Tool]) -> str:
    specs = [
        {"name": t.name, "description": t.description or "", "parameters": t.parameters or {"type": "object"}}
        for t in tools
    ]
    return (
        "You can call these tools:\n<tools>\n"
        + "\n".join(json.dumps(spec) for spec in specs)
        + "\n</tools>\nTo call tools, reply with only "
        + f'{OPEN}[{{"name": <tool name>, "arguments": <arguments object>}}]{CLOSE}'
        + " (several calls go in the one list)."
    )


def with_tools(messages: list[dict], tools: list[Tool]) -> list[dict]:
    """The conversation with the tools described in its system message (one is added if none)."""
    prompt = system_prompt(tools)
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": messages[0]["content"] + "\n\n" + prompt}, *messages[1:]]
    return [{"role": "system", "content": prompt}, *messages]


def assistant_text(content: str | None, calls: list[tuple[str, str]]) -> str:
    """An assistant message of the history that made calls [(name, arguments JSON)], as the model
    would have written it."""
    items = ", ".join(
        f'{{"name": {json.dumps(name)}, "arguments": {arguments}}}' for name, arguments in calls
    )
    return (content or "") + f"{OPEN}[{items}]{CLOSE}"


def tool_result(content: str) -> dict:
    """A `role: tool` message, as a user turn: templates that know only user and assistant (Gemma
    3's raises on any other role) render it too."""
    return {"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"}


def call_constraint(tools: list[Tool], parallel: bool) -> StructuredOutputs:
    """The grammar of a reply that is only calls to `tools` (at least one; one unless parallel)."""
    schema: dict[str, Any] = {
        "type": "array",
        "minItems": 1,
        "items": {"anyOf": [_call_schema(t) for t in tools]},
        "x-guidance": _JSON_STYLE,
    }
    if not parallel:
        schema["maxItems"] = 1
    grammar = f"start: {json.dumps(OPEN)} calls {json.dumps(CLOSE)}\ncalls: %json {json.dumps(schema)}\n"
    return StructuredOutputs(grammar=grammar, param="tools")


def _call_schema(tool: Tool) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": tool.parameters or {"type": "object"}},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def parse_calls(text: str) -> tuple[str | None, list[ToolCall]]:
    """(content, calls) of a finished reply: the text before `<tool_call>` and the calls, or the
    whole text and no calls when it holds no well-formed call list."""
    start = text.find(OPEN)
    if start < 0:
        return text, []
    body = text[start + len(OPEN) :]
    end = body.rfind(CLOSE)
    try:
        items = json.loads(body[:end] if end >= 0 else body)
    except ValueError:
        return text, []
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list) or not all(_is_call(item) for item in items) or not items:
        return text, []
    calls = [ToolCall(new_call_id(), item["name"], json.dumps(item["arguments"])) for item in items]
    return text[:start] or None, calls


def _is_call(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get("name"), str)
        and isinstance(item.get("arguments"), dict)
    )
