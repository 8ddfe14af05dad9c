"""The wire's tool calls and structured outputs: the tools a chat request offers and the calls of
its history, the formats a request may constrain its output to (response_format,
structured_outputs), and the calls an answer makes, whole or streamed."""

from __future__ import annotations

from typing import Any, Literal

from msgspec import UNSET, Struct, UnsetType


class FunctionCall(Struct, kw_only=True):
    """A call's function: its name and its arguments as JSON text (requests and answers)."""

    name: str
    arguments: str


class ToolCallIn(Struct, forbid_unknown_fields=True, kw_only=True):
    """A call an assistant message of the history made."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionDef(Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None  # the arguments follow `parameters` by grammar whenever a call is forced


class ToolDef(Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal["function"]
    function: FunctionDef


class FunctionName(Struct, forbid_unknown_fields=True, kw_only=True):
    name: str


class NamedToolChoice(Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal["function"]
    function: FunctionName


class JsonSchemaFormat(Struct, forbid_unknown_fields=True, kw_only=True):
    """response_format.json_schema: the schema is enforced whether or not `strict` is set."""

    name: str
    schema: dict[str, Any] | bool | None = None  # the boolean schemas too: true (any value), false
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StructuredOutputsParams(Struct, forbid_unknown_fields=True, kw_only=True):
    """vLLM's `structured_outputs` object (its newer form of the guided_* fields): one of json,
    regex, choice, grammar, json_object. disable_any_whitespace None keeps swiftserve's default
    (JSON without free whitespace); False allows any whitespace, as vLLM's default does."""

    json: dict[str, Any] | bool | str | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    disable_any_whitespace: bool | None = None
    disable_fallback: bool | None = None  # one backend here: nothing to fall back to
    disable_additional_properties: bool | None = None


class ToolCallOut(Struct):
    id: str
    function: FunctionCall
    type: str = "function"


class FunctionCallDelta(Struct):
    name: str | UnsetType = UNSET
    arguments: str | UnsetType = UNSET


class ToolCallDelta(Struct):
    """A streamed call: index, id, type and name on its first delta, then argument fragments."""

    index: int
    function: FunctionCallDelta
    id: str | UnsetType = UNSET
    type: str | UnsetType = UNSET
