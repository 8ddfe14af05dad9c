"""Rendering a model's Jinja chat template the way Hugging Face transformers does.

Templates come from model repositories, so they run in jinja2's immutable sandbox, with the same
environment options and helpers (raise_exception, strftime_now, a tojson that does not escape
HTML) that templates are written against.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

if TYPE_CHECKING:
    from swiftserve.loader.tokenizer import TokenizerInfo


def apply_chat_template(
    info: TokenizerInfo, messages: list[dict], add_generation_prompt: bool = True, **kwargs: Any
) -> str:
    """The prompt text for messages; kwargs (tools, documents, ...) are passed to the template.

    A message's content may be a string or a list of {"type": "text", "text": ...} parts, which
    are joined with newlines. Keys whose value is None are dropped, as templates expect.
    """
    if info.chat_template is None:
        raise ValueError("this model has no chat template; send a plain prompt instead")
    template = _compile(info.chat_template)
    # tools and documents are always defined (None when absent), as transformers passes them.
    context = {
        "bos_token": info.bos_token or "",
        "eos_token": info.eos_token or "",
        "tools": None,
        "documents": None,
        **kwargs,
    }
    try:
        return template.render(
            messages=[_normalize_message(m) for m in messages],
            add_generation_prompt=add_generation_prompt,
            **context,
        )
    except jinja2.TemplateError as error:
        raise ValueError(f"chat template error: {error}") from error


def _normalize_message(message: dict) -> dict:
    if not isinstance(message, dict):
        raise ValueError(f"a chat message must be a dict, got {type(message).__name__}")
    normalized = {key: value for key, value in message.items() if value is not None}
    content = normalized.get("content")
    if isinstance(content, list):
        normalized["content"] = "\n".join(_text_of(part) for part in content)
    return normalized


def _text_of(part: Any) -> str:
    if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
        return part["text"]
    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
    raise ValueError(f"unsupported message content part {kind!r}: only text parts are supported")


@lru_cache(maxsize=32)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as error:
        raise ValueError(f"invalid chat template: {error}") from error


def _tojson(
    value: Any, ensure_ascii: bool = False, indent=None, separators=None, sort_keys: bool = False
) -> str:
    # jinja's own tojson escapes HTML characters, which would change the prompt text.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise_exception(message: str):
    raise jinja2.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)
