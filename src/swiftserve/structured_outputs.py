"""What a constrained request asks its output to match: one JSON schema, any JSON object, a
regex, one of a list of strings, or a grammar (Lark, or llama.cpp's GBNF)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

_KINDS = ("json", "json_object", "regex", "choice", "grammar")


@dataclass(frozen=True)
class StructuredOutputs:
    """Exactly one of the constraints. `json` is a JSON schema (a dict, or its JSON text), or one of
    the boolean schemas: True (any JSON value) and False (nothing; refused when compiled).
    `whitespace_flexible` False (the default) writes JSON with one space after `,` and `:` and no
    other whitespace: small models otherwise pad with whitespace until max_tokens. `param` names
    the request field the constraint came from, so errors about it name that field."""

    json: dict[str, Any] | bool | str | None = None
    json_object: bool = False
    regex: str | None = None
    choice: tuple[str, ...] | None = None
    grammar: str | None = None
    whitespace_flexible: bool = False
    param: str = "structured_outputs"

    def __post_init__(self) -> None:
        if self.choice is not None:
            object.__setattr__(self, "choice", tuple(self.choice))
        if isinstance(self.json, str):
            try:
                object.__setattr__(self, "json", json.loads(self.json))
            except ValueError as exc:
                raise StructuredOutputsError(
                    self.param, f"the JSON schema is not valid JSON: {exc}"
                ) from None
        set_ = [kind for kind in _KINDS if self._is_set(kind)]
        if len(set_) != 1:
            raise StructuredOutputsError(
                self.param, f"must set exactly one of {', '.join(_KINDS)}; got {set_ or 'none'}"
            )
        if self.json is not None and not isinstance(self.json, (dict, bool)):
            raise StructuredOutputsError(self.param, "the JSON schema must be an object or a boolean")
        if self.choice is not None and (not self.choice or not all(isinstance(c, str) for c in self.choice)):
            raise StructuredOutputsError(self.param, "choice must be a non-empty list of strings")
        for name in ("regex", "grammar"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise StructuredOutputsError(self.param, f"{name} must be a non-empty string")

    def _is_set(self, kind: str) -> bool:
        # json=False is the schema `false`, not an unset field; json_object is a flag.
        value = getattr(self, kind)
        return value is True if kind == "json_object" else value is not None

    @property
    def kind(self) -> str:
        return next(kind for kind in _KINDS if self._is_set(kind))

    def cache_key(self) -> str:
        """The constraint in canonical form: two requests that ask the same thing share a compile
        (key order and JSON spacing do not matter; `param` does not change the grammar)."""
        value = getattr(self, self.kind)
        return json.dumps([self.kind, value, self.whitespace_flexible], sort_keys=True, separators=(",", ":"))


class StructuredOutputsError(ValueError):
    """An invalid constraint, found before any grammar is compiled; `param` names the field."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
