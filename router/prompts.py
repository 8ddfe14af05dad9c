"""From what a caller sends to what an engine takes: token ids, a completion budget, SamplingParams.

Every check here raises the router's typed errors (InvalidParameterError,
ContextLengthExceededError), so an HTTP route and a Python caller get the same answer for the
same request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from swiftserve.router.errors import ContextLengthExceededError, InvalidParameterError
from swiftserve.router.handles import ChatHandle

from swiftserve.engine.served_model import TextTokenizer
from swiftserve.sampling_params import SamplingParamError, SamplingParams

# Prompts longer than this (characters) are tokenized in a worker thread, off the event loop.
INLINE_TOKENIZE_CHARS = 16_384
# A request that names no max_tokens gets at most this many (and never more than the context
# leaves): the whole context would run for minutes on a CPU.
DEFAULT_MAX_TOKENS = 1024


async def tokenize(tokenizer: TextTokenizer, text: str, *, add_special_tokens: bool) -> list[int]:
    encode = tokenizer.encode
    if len(text) <= INLINE_TOKENIZE_CHARS:
        return list(encode(text, add_special_tokens=add_special_tokens))
    return list(await asyncio.to_thread(encode, text, add_special_tokens=add_special_tokens))


def render_chat(
    handle: ChatHandle, messages: list[dict], template_kwargs: Mapping[str, Any] | None = None
) -> str:
    """The chat template applied to `messages` ({"role", "content"} dicts), ready for a reply;
    template_kwargs: what else the template is given (`tools`)."""
    if not messages:
        raise InvalidParameterError("messages", "'messages' must hold at least one message.")
    try:
        return handle.apply_chat_template(messages, add_generation_prompt=True, **(template_kwargs or {}))
    except Exception as exc:  # noqa: BLE001 - a template error is the request's fault
        raise InvalidParameterError(
            "messages", f"The chat template could not render these messages: {exc}"
        ) from None


def resolve_max_tokens(
    max_model_len: int, num_prompt_tokens: int, requested: int | None, prompt_param: str, default: int
) -> int:
    """The completion budget: the requested one if prompt + it fits the context, else a
    ContextLengthExceededError. Not requested, it is `default` or what the context leaves, the smaller."""
    if num_prompt_tokens == 0:
        raise InvalidParameterError(prompt_param, "The prompt is empty: it must hold at least one token.")
    if requested is None:
        if num_prompt_tokens >= max_model_len:
            raise ContextLengthExceededError(num_prompt_tokens, 1, max_model_len, prompt_param)
        return min(default, max_model_len - num_prompt_tokens)
    if num_prompt_tokens + requested > max_model_len:
        raise ContextLengthExceededError(num_prompt_tokens, requested, max_model_len, "max_tokens")
    return requested


def sampling_params(max_tokens: int, sampling: Mapping[str, Any]) -> SamplingParams:
    """SamplingParams from keyword fields; a bad value or an unknown field names itself."""
    if "max_tokens" in sampling:
        raise InvalidParameterError("max_tokens", "pass max_tokens on its own, not among the sampling fields")
    try:
        return SamplingParams(max_tokens=max_tokens, **sampling)
    except SamplingParamError as exc:
        raise InvalidParameterError(exc.param, str(exc)) from None
    except TypeError as exc:  # an unknown keyword
        raise InvalidParameterError("sampling", f"not a sampling parameter: {exc}") from None
