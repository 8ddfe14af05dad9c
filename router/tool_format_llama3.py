"""Llama 3.1 / 3.2's JSON tool calls: the chat template renders the tools itself (they are passed
to it as `tools`, in OpenAI's form), the model replies with one JSON object and results come back
as `role: tool` messages, which the template writes as its `ipython` turns.

    {"name": "get_weather", "parameters": {"city": "Paris"}}

One call per reply (Llama 3's templates have no list of calls); the grammar writes the object as
json.dumps does, the name first, so the opening tag is `{"name": `.
"""

from __future__ import annotations

import json
from typing import Any

from swiftserve.router.tool_format import _JSON_STYLE, Tool, ToolCall, ToolPrompt, new_call_id

OPEN = '{"name": '


class Llama3Json:
    name = "llama3_json"
    open_tag, close_tag = OPEN, ""
    can_scan = False  # the whole object is parsed at the end

    def prompt(self, messages: list[dict], tools: list[Tool]) -> ToolPrompt:
        return ToolPrompt(messages, {"tools": [_openai_tool(t) for t in tools]})

    def assistant_message(self, content: str | None, calls: list[tuple[str, str]]) -> dict:
        text = "; ".join(
            f'{OPEN}{json.dumps(name)}, "parameters": {arguments}}}' for name, arguments in calls
        )
        return {"role": "assistant", "content": (content or "") + text}

    def tool_result(self, content: str) -> dict:
        return {"role": "tool", "content": content}

    def calls_rules(self, tools: list[Tool], parallel: bool) -> str:
        """One call, whatever `parallel` says: the object after the tag, closed by its brace."""
        rules = ["calls: " + " | ".join(f"call_{i}" for i in range(len(tools)))]
        for i, tool in enumerate(tools):
            head = json.dumps(json.dumps(tool.name) + ', "parameters": ')
            schema = {**(tool.parameters or {"type": "object"}), "x-guidance": _JSON_STYLE}
            rules.append(f'call_{i}: {head} params_{i} "}}"')
            rules.append(f"params_{i}: %json {json.dumps(schema)}")
        return "\n".join(rules) + "\n"

    def scan(self, text: str) -> list[tuple[str, str]]:
        return []

    def parse(self, text: str) -> tuple[str | None, list[ToolCall]]:
        start = text.find("{")
        while start >= 0:
            call = _call_at(text, start)
            if call is not None:
                return text[:start].strip() or None, [call]
            start = text.find("{", start + 1)
        return text, []


def _openai_tool(tool: Tool) -> dict[str, Any]:
    function = {
        "name": tool.name,
        "description": tool.description or "",
        "parameters": tool.parameters or {"type": "object"},
    }
    return {"type": "function", "function": function}


def _call_at(text: str, start: int) -> ToolCall | None:
    """The call whose JSON object starts at text[start], if it is one (`parameters`, or the
    `arguments` some fine-tunes write)."""
    try:
        item, _ = json.JSONDecoder().raw_decode(text, start)
    except ValueError:
        return None
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        return None
    arguments = item.get("parameters", item.get("arguments"))
    if not isinstance(arguments, dict):
        return None
    return ToolCall(new_call_id(), item["name"], json.dumps(arguments))
