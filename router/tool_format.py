"""Tool calling for models whose chat template has no tools of its own (SmolLM2): the tools go in
the system message, a call is a JSON list in `<tool_call>` tags, and the history's calls and
results are written back in the same form, so any template renders them.

    <tool_call>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</tool_call>

With tool_choice `required` or a named function the whole reply is constrained to that form by a
grammar (one call unless parallel_tool_calls); with `auto` the reply is free, and a reply that is
such a call is parsed into tool calls. `TaggedJson` is this format behind the interface of
router/tool_formats.py, beside Gemma 3's pythonic calls and Llama 3's JSON.

    <tool_call>[{"name": "NAME", "arguments": ARGS}, {"name": ...}]</tool_call>
               ^ calls start     ^ name            ^ args: one JSON value, scanned to its end
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from swiftserve.structured_outputs import StructuredOutputs

_NAME = '{"name": "'
_ARGS = '", "arguments": '
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


@dataclass(frozen=True)
class ToolPrompt:
    """The conversation with the tools in it, and what else the chat template is given."""

    messages: list[dict]
    template_kwargs: dict[str, Any] = field(default_factory=dict)


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
    grammar = f"start: {json.dumps(OPEN)} calls {json.dumps(CLOSE)}\n" + calls_rules(tools, parallel)
    return StructuredOutputs(grammar=grammar, param="tools")


def calls_rules(tools: list[Tool], parallel: bool) -> str:
    """The Lark rule `calls`: the JSON list between the tags."""
    schema: dict[str, Any] = {
        "type": "array",
        "minItems": 1,
        "items": {"anyOf": [_call_schema(t) for t in tools]},
        "x-guidance": _JSON_STYLE,
    }
    if not parallel:
        schema["maxItems"] = 1
    return f"calls: %json {json.dumps(schema)}\n"


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


def scan_calls(text: str) -> list[tuple[str, str]]:
    """(name, arguments so far) of each call whose name is complete, in a reply of the grammar's
    form; a call's arguments grow until their JSON value ends."""
    start = text.find(OPEN)
    if start < 0 or not text.startswith("[", start + len(OPEN)):
        return []
    pos = start + len(OPEN) + 1
    calls: list[tuple[str, str]] = []
    while True:
        if text.startswith(", ", pos):
            pos += 2
        if not text.startswith(_NAME, pos):
            return calls
        name_end = text.find(_ARGS, pos + len(_NAME))
        if name_end < 0:
            return calls
        name = text[pos + len(_NAME) : name_end]
        args_start = name_end + len(_ARGS)
        args_end = json_value_end(text, args_start)
        if args_end is None:
            calls.append((name, text[args_start:]))
            return calls
        calls.append((name, text[args_start:args_end]))
        pos = args_end + 1  # past the call's closing brace


def json_value_end(text: str, start: int) -> int | None:
    """The end of the JSON object or array that starts at text[start], or None while it is open.
    Only brackets outside strings count; the value is valid JSON by the grammar, so nothing more
    needs checking here."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        char = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


class TaggedJson:
    """This module as a ToolFormat (router/tool_formats.py)."""

    name = "tagged_json"
    open_tag, close_tag = OPEN, CLOSE
    can_scan = True

    def scan(self, text: str) -> list[tuple[str, str]]:
        return scan_calls(text)

    def prompt(self, messages: list[dict], tools: list[Tool]) -> ToolPrompt:
        return ToolPrompt(with_tools(messages, tools))

    def assistant_message(self, content: str | None, calls: list[tuple[str, str]]) -> dict:
        return {"role": "assistant", "content": assistant_text(content, calls)}

    def tool_result(self, content: str) -> dict:
        return tool_result(content)

    def calls_rules(self, tools: list[Tool], parallel: bool) -> str:
        return calls_rules(tools, parallel)

    def parse(self, text: str) -> tuple[str | None, list[ToolCall]]:
        return parse_calls(text)
