"""The tool-call format of each model family, behind one interface: how the tools are put in the
prompt, how the history's calls and results are written back, the grammar of a call, and how a
reply is parsed into (content, calls).

    family          prompt                          a call
    tagged_json     tools in the system message     <tool_call>[{"name": ..., "arguments": {...}}]</tool_call>
    gemma3          tools in the system message     ```tool_code\\n[name(arg=value, ...)]\\n```
    llama3_json     tools given to the template     {"name": ..., "parameters": {...}}

A model's family comes from its architecture and chat template (`format_for`); a template that
renders no tools gets tagged_json, swiftserve's own format.
"""

from __future__ import annotations

from typing import Protocol

from swiftserve.router import tool_format, tool_format_gemma3, tool_format_llama3
from swiftserve.router.tool_format import Tool, ToolCall, ToolPrompt


class ToolFormat(Protocol):
    name: str
    open_tag: str  # what opens a call in a reply: the grammar of `auto` starts there
    close_tag: str  # what closes the calls ("" when the call's own end closes it)
    # Whether scan() can read a grammar-made reply as it grows: its arguments are then streamed in
    # fragments; otherwise calls are parsed once the reply is finished and sent whole.
    can_scan: bool

    def prompt(self, messages: list[dict], tools: list[Tool]) -> ToolPrompt: ...

    def assistant_message(self, content: str | None, calls: list[tuple[str, str]]) -> dict:
        """A history assistant message that made calls [(name, arguments JSON)]."""
        ...

    def tool_result(self, content: str) -> dict:
        """A history `role: tool` message, as this family's template takes it."""
        ...

    def calls_rules(self, tools: list[Tool], parallel: bool) -> str:
        """Lark rules defining `calls`: what follows open_tag, up to close_tag."""
        ...

    def scan(self, text: str) -> list[tuple[str, str]]:
        """(name, arguments so far) of each call of a grammar-made reply, when can_scan."""
        ...

    def parse(self, text: str) -> tuple[str | None, list[ToolCall]]:
        """(content, calls) of a finished reply; (text, []) when it holds no well-formed call."""
        ...


FORMATS: dict[str, ToolFormat] = {
    "tagged_json": tool_format.TaggedJson(),
    "gemma3": tool_format_gemma3.Gemma3Pythonic(),
    "llama3_json": tool_format_llama3.Llama3Json(),
}
DEFAULT = FORMATS["tagged_json"]


def family_of(model_type: str | None, chat_template: str | None) -> str:
    """Gemma 3 by its architecture; Llama 3.1+ by a Llama 3 template that renders `tools` itself;
    anything else (a template with no tools, SmolLM2's) gets swiftserve's tagged JSON."""
    if model_type is not None and model_type.startswith("gemma3"):
        return "gemma3"
    if chat_template and "tools" in chat_template and "<|start_header_id|>" in chat_template:
        return "llama3_json"
    return "tagged_json"


def format_for(model_type: str | None, chat_template: str | None) -> ToolFormat:
    return FORMATS[family_of(model_type, chat_template)]
