"""The grammar of a tool-calling reply, in any format (router/tool_formats.py), as one Lark grammar
for llguidance.

Forced (tool_choice `required` or a named function): the reply is only the calls,

    start: OPEN calls CLOSE

`auto`: free text, unless the model writes the format's opening tag; from there the calls follow
the grammar. Two lexemes, both plain text: FREE never holds the tag, OPENED is text that ends at
its first tag. llguidance's lexer follows both at once, so free text is unconstrained until the tag
is complete, and then only the calls can follow (lexemes are greedy and do not back off: a lazy
`TEXT? OPEN` would keep reading the tag as text).

    start: FREE | OPENED calls CLOSE
"""

from __future__ import annotations

import json

from swiftserve.router.tool_format import Tool
from swiftserve.router.tool_formats import ToolFormat

from swiftserve.structured_outputs import StructuredOutputs


def forced_constraint(fmt: ToolFormat, tools: list[Tool], parallel: bool) -> StructuredOutputs:
    start = f"start: {json.dumps(fmt.open_tag)} calls{_close(fmt)}\n"
    return StructuredOutputs(grammar=start + fmt.calls_rules(tools, parallel), param="tools")


def auto_constraint(fmt: ToolFormat, tools: list[Tool], parallel: bool) -> StructuredOutputs:
    tag = _regex_literal(fmt.open_tag)
    lexemes = f"FREE: /(?s:.*)/ & ~/(?s:.*{tag}.*)/\nOPENED: /(?s:.*){tag}/ & ~/(?s:.*{tag}.+)/\n"
    start = f"start: FREE | OPENED calls{_close(fmt)}\n"
    return StructuredOutputs(grammar=start + lexemes + fmt.calls_rules(tools, parallel), param="tools")


def _close(fmt: ToolFormat) -> str:
    return f" {json.dumps(fmt.close_tag)}" if fmt.close_tag else ""


def _regex_literal(text: str) -> str:
    """text as a regex matching itself, inside Lark's /.../ (every symbol as a \\x escape)."""
    assert text.isascii(), "tags are ASCII"
    return "".join(char if char.isalnum() or char == "_" else f"\\x{ord(char):02x}" for char in text)
