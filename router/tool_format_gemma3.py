"""Gemma 3's tool calls, as Google documents them for Gemma 3 function calling: the tools are
described as JSON in the prompt (the system message, which Gemma 3's template puts in the first
user turn), the model calls in a `tool_code` block of pythonic calls, and results come back in a
`tool_output` block (a user turn: the template knows only user and model).

    ```tool_code
    [get_weather(city="Paris", unit="C"), add(a=1, b=2)]
    ```

Argument values are JSON literals (which are Python literals too, but for true/false/null): the
grammar writes each with llguidance's %json for its parameter's schema, and the parser reads the
call list with Python's `ast`, literal values only (never eval), taking Python's True/False/None as
well as JSON's. The client gets the arguments as JSON text.
"""

from __future__ import annotations

import ast
import json
from typing import Any

from swiftserve.router.tool_format import _JSON_STYLE, Tool, ToolCall, ToolPrompt, new_call_id

OPEN, CLOSE = "```tool_code\n", "\n```"
_JSON_NAMES = {"true": True, "false": False, "null": None}
_INSTRUCTIONS = (
    "You have access to functions. If you decide to invoke any of the function(s), you MUST put it "
    "in the format of\n" + OPEN + "[func_name1(params_name1=params_value1, params_name2=params_value2...), "
    "func_name2(params)]" + CLOSE + "\nYou SHOULD NOT include any other text in the response if you "
    "call a function. A function's result comes back in a ```tool_output``` block.\n"
)


class Gemma3Pythonic:
    name = "gemma3"
    open_tag, close_tag = OPEN, CLOSE
    can_scan = False  # pythonic arguments are not JSON text: calls are sent whole, once parsed

    def prompt(self, messages: list[dict], tools: list[Tool]) -> ToolPrompt:
        specs = "\n".join(json.dumps(_spec(t)) for t in tools)
        text = _INSTRUCTIONS + specs
        if messages and messages[0]["role"] == "system":
            return ToolPrompt(
                [{"role": "system", "content": messages[0]["content"] + "\n\n" + text}, *messages[1:]]
            )
        return ToolPrompt([{"role": "system", "content": text}, *messages])

    def assistant_message(self, content: str | None, calls: list[tuple[str, str]]) -> dict:
        text = ", ".join(f"{name}({_keywords(arguments)})" for name, arguments in calls)
        return {"role": "assistant", "content": (content or "") + f"{OPEN}[{text}]{CLOSE}"}

    def tool_result(self, content: str) -> dict:
        return {"role": "user", "content": f"```tool_output\n{content}\n```"}

    def calls_rules(self, tools: list[Tool], parallel: bool) -> str:
        rules = ['calls: "[" call ("," " " call)* "]"' if parallel else 'calls: "[" call "]"']
        rules.append("call: " + " | ".join(f"call_{i}" for i in range(len(tools))))
        for i, tool in enumerate(tools):
            rules += _call_rules(i, tool)
        return "\n".join(rules) + "\n"

    def scan(self, text: str) -> list[tuple[str, str]]:
        return []

    def parse(self, text: str) -> tuple[str | None, list[ToolCall]]:
        start = text.find(OPEN)
        body = text[start + len(OPEN) :] if start >= 0 else text
        end = body.rfind(CLOSE)
        calls = parse_call_list(body[:end] if end >= 0 else body)
        if not calls:
            return text, []
        return (text[:start] or None) if start >= 0 else None, calls


def _spec(tool: Tool) -> dict[str, Any]:
    parameters = tool.parameters or {"type": "object"}
    return {"name": tool.name, "description": tool.description or "", "parameters": parameters}


def _keywords(arguments: str) -> str:
    values = json.loads(arguments)
    return ", ".join(f"{key}={json.dumps(value)}" for key, value in values.items())


def _call_rules(i: int, tool: Tool) -> list[str]:
    """call_i: `name(` its keyword arguments `)`, the required ones always, in the schema's order."""
    properties: dict[str, Any] = (tool.parameters or {}).get("properties", {})
    required = set((tool.parameters or {}).get("required", []))
    names = list(properties)
    rules = [f'call_{i}: {json.dumps(tool.name + "(")} {_arguments(i, names, required)} ")"']
    for j, name in enumerate(names):
        schema = {**properties[name], "x-guidance": _JSON_STYLE}
        rules.append(f"arg_{i}_{j}: {json.dumps(name + '=')} value_{i}_{j}")
        rules.append(f"value_{i}_{j}: %json {json.dumps(schema)}")
    return rules


def _arguments(i: int, names: list[str], required: set[str]) -> str:
    """The keyword list: each argument after the first preceded by `, `; optional ones may be
    left out, so with none required any of them may come first."""
    items = [(f"arg_{i}_{j}", name in required) for j, name in enumerate(names)]
    if not items:
        return ""
    if any(is_required for _, is_required in items):
        first = next(k for k, (_, is_required) in enumerate(items) if is_required)
        head = " ".join(f'({rule} ", ")?' for rule, _ in items[:first])
        return f"{head} {_tail(items, first)}".strip()
    options = [_tail(items, k) for k in range(len(items))]
    return "(" + " | ".join(options) + ")?"


def _tail(items: list[tuple[str, bool]], first: int) -> str:
    parts = [items[first][0]]
    for rule, is_required in items[first + 1 :]:
        parts.append(f'", " {rule}' if is_required else f'(", " {rule})?')
    return " ".join(parts)


def parse_call_list(code: str) -> list[ToolCall]:
    """The calls of `[name(key=value, ...), ...]` (or one bare call), literal values only; [] when
    the code is anything else."""
    try:
        tree = ast.parse(code.strip(), mode="eval").body
    except SyntaxError:
        return []
    nodes = tree.elts if isinstance(tree, ast.List) else [tree]
    calls = [_call(node) for node in nodes]
    if not calls or any(call is None for call in calls):
        return []
    return [call for call in calls if call is not None]


def _call(node: ast.expr) -> ToolCall | None:
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name) or node.args:
        return None
    arguments = {}
    for keyword in node.keywords:
        if keyword.arg is None:  # **kwargs
            return None
        try:
            arguments[keyword.arg] = ast.literal_eval(_JsonNames().visit(keyword.value))
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
    return ToolCall(new_call_id(), node.func.id, json.dumps(arguments))


class _JsonNames(ast.NodeTransformer):
    """JSON's true, false and null (names to Python) as the constants they mean."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in _JSON_NAMES:
            return ast.copy_location(ast.Constant(_JSON_NAMES[node.id]), node)
        return node
