"""A JSON stage's output as the stages after it see it (pipeline_spec.StageSpec.parses_json).

The stage's text is parsed once; objects and arrays become JsonObject and JsonList, which a
template reads like any dict or list (`{{ stages.route.topic }}`, `{% for x in stages.items %}`)
and prints whole as compact JSON (`{{ stages.route }}`), not as Python's repr.
"""

from __future__ import annotations

import json
from typing import Any

from swiftserve.router.errors import StageOutputError
from swiftserve.router.pipeline_spec import StageSpec
from swiftserve.router.pipeline_templates import Texts


class JsonObject(dict):
    def __str__(self) -> str:
        return json.dumps(self, ensure_ascii=False)


class JsonList(list):
    def __str__(self) -> str:
        return json.dumps(self, ensure_ascii=False)


def parse_output(text: str, finish_reason: str | None) -> Any:
    """The value of one reply; StageOutputError when it is not one JSON value (a constrained
    reply is cut short only by max_tokens, which the message names)."""
    try:
        return as_template_value(json.loads(text))
    except ValueError:
        why = "it stopped at max_tokens: raise the stage's max_tokens" if finish_reason == "length" else ""
        raise StageOutputError(
            f"the output is not complete JSON{'; ' + why if why else ''}: {text[:80]!r}"
        ) from None


def as_template_value(value: Any) -> Any:
    if isinstance(value, dict):
        return JsonObject((key, as_template_value(item)) for key, item in value.items())
    if isinstance(value, list):
        return JsonList(as_template_value(item) for item in value)
    return value


def stage_output(stage: StageSpec, replies: list[tuple[str, str | None]], hands_on: bool = True) -> Any:
    """A generating stage's output from its (text, finish_reason) replies: one value, or the
    fan-out's list; each reply parsed when the stage hands JSON on. hands_on=False (the final
    stage: its text is the answer, cut short or not, as any constrained reply) keeps a reply that
    does not parse as its text instead of failing the request."""
    values = [_value(stage, text, finish, hands_on) for text, finish in replies]
    return values[0] if stage.fan_out == 1 and len(values) == 1 else Texts(values)


def _value(stage: StageSpec, text: str, finish_reason: str | None, hands_on: bool) -> Any:
    if not stage.parses_json:
        return text
    try:
        return parse_output(text, finish_reason)
    except StageOutputError:
        if hands_on:
            raise
        return text
