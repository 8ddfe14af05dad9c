"""`tools`, `tool_choice` and `parallel_tool_calls` -> a ToolPlan: which tools go in the prompt, and
the grammar of the reply in the model's tool-call format (router/tool_formats.py): only calls when
one is forced (`required`, a named function), free text or calls from the opening tag on (`auto`)."""

from __future__ import annotations

from dataclasses import dataclass

from swiftserve.router.tool_format import Tool
from swiftserve.router.tool_formats import DEFAULT, ToolFormat
from swiftserve.router.tool_grammar import auto_constraint, forced_constraint
from swiftserve.server.errors import bad_request
from swiftserve.server.protocol_chat import ChatCompletionRequest, ChatMessage
from swiftserve.server.protocol_tools import NamedToolChoice
from swiftserve.structured_outputs import StructuredOutputs


@dataclass(frozen=True)
class ToolPlan:
    tools: list[Tool]
    is_forced: bool  # tool_choice required or a named function: the reply is only calls
    constraint: StructuredOutputs | None  # None: `auto` beside the request's own response_format
    fmt: ToolFormat = DEFAULT


def tool_plan(body: ChatCompletionRequest, fmt: ToolFormat = DEFAULT) -> ToolPlan | None:
    """None when the request offers no tools, or tool_choice is `none` (then the prompt has none)."""
    choice = body.tool_choice
    if not body.tools:
        if choice is not None and choice not in ("none", "auto"):
            raise bad_request("tool_choice needs `tools` to choose from", param="tool_choice")
        return None
    if choice == "none":
        return None
    tools = [Tool(t.function.name, t.function.description, t.function.parameters) for t in body.tools]
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise bad_request(f"tools: every function needs its own name, got {names}", param="tools")
    parallel = body.parallel_tool_calls is not False
    if choice is None or choice == "auto":
        return ToolPlan(tools, False, auto_constraint(fmt, tools, parallel), fmt)
    if choice == "required":
        return ToolPlan(tools, True, forced_constraint(fmt, tools, parallel), fmt)
    assert isinstance(choice, NamedToolChoice)
    named = [t for t in tools if t.name == choice.function.name]
    if not named:
        raise bad_request(
            f"tool_choice names the function {choice.function.name!r}, which is not among the tools {names}",
            param="tool_choice",
        )
    return ToolPlan(tools, True, forced_constraint(fmt, named, parallel=False), fmt)


def template_tool_message(
    i: int, message: ChatMessage, content: str | None, fmt: ToolFormat = DEFAULT
) -> dict:
    """A history message of tool calling, in the model's tool-call format: an assistant's calls,
    or a tool's result."""
    if message.role == "tool":
        if content is None:
            raise bad_request(f"messages[{i}].content is required.", param=f"messages[{i}].content")
        return fmt.tool_result(content)
    calls = [(call.function.name, call.function.arguments) for call in message.tool_calls or []]
    return fmt.assistant_message(content, calls)
