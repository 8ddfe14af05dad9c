"""The request path of chat and text completions, over the router's per-model `generate`.

1. The prompt becomes token ids: a conversation through the model's chat template (whose text
   already holds the special tokens), a text prompt with the tokenizer's special tokens; token
   ids pass as they are (the engine checks them against its vocabulary).
2. Each prompt gets its completion budget (prompts.resolve_max_tokens) and its SamplingParams.
3. Every prompt is submitted at once (so their prefills share engine steps) and each one's first
   output is awaited: a full queue or a bad parameter is raised here, before a caller has sent
   anything (an HTTP route can still answer with a status).
4. The outputs are merged and turned into per-choice deltas (deltas.py); `collect` folds them
   into one Generation for callers that do not stream.
The router is duck-typed here (`handle`, `generate`): router.py imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from swiftserve.router.deltas import DeltaTracker
from swiftserve.router.errors import InvalidParameterError, engine_errors_as_router_errors
from swiftserve.router.merge import merge
from swiftserve.router.prompts import render_chat, resolve_max_tokens, sampling_params, tokenize
from swiftserve.router.request_types import Choice, ChoiceDelta, Generation, GenerationStep, GenerationStream

from swiftserve.outputs import RequestOutput, TokenLogprob
from swiftserve.sampling_params import SamplingParams

Prompt = str | list[int]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


async def open_chat(
    router: Any,
    model: str,
    messages: list[dict],
    max_tokens: int | None,
    sampling: Mapping[str, Any],
    default_max_tokens: int,
) -> GenerationStream:
    """Starts a reply to `messages` on chat model `model`."""
    return await open_chats(router, model, [messages], max_tokens, sampling, default_max_tokens)


async def open_chats(
    router: Any,
    model: str,
    conversations: list[list[dict]],
    max_tokens: int | None,
    sampling: Mapping[str, Any],
    default_max_tokens: int,
) -> GenerationStream:
    """Starts a reply to each conversation, submitted together (a fan-out: their prefills share
    engine steps and their common prefix the prefix cache); choice k answers conversation k // n."""
    handle = router.handle(model, "chat")
    ids = []
    for messages in conversations:
        text = render_chat(handle, messages)
        ids.append(await tokenize(handle.tokenizer, text, add_special_tokens=False))
    return await _open(router, handle, ids, max_tokens, sampling, "messages", default_max_tokens)


async def open_completion(
    router: Any,
    model: str,
    prompts: Prompt | list[Prompt],
    max_tokens: int | None,
    sampling: Mapping[str, Any],
    default_max_tokens: int,
) -> GenerationStream:
    """Starts completions of one prompt (text or token ids) or of a list of them."""
    handle = router.handle(model, "chat")
    ids = [await _prompt_ids(handle, prompt) for prompt in _as_prompts(prompts)]
    return await _open(router, handle, ids, max_tokens, sampling, "prompt", default_max_tokens)


def _as_prompts(prompts: Prompt | list[Prompt]) -> list[Prompt]:
    """One prompt (text or token ids) or a list of them -> the list."""
    if not prompts:
        raise InvalidParameterError("prompt", "The prompt is empty: it must hold at least one token.")
    if isinstance(prompts, str) or all(isinstance(t, int) for t in prompts):
        return [prompts]
    for prompt in prompts:
        if not isinstance(prompt, str) and not all(isinstance(t, int) for t in prompt):
            raise InvalidParameterError("prompt", "each prompt must be a string or a list of token ids")
    return list(prompts)


async def _prompt_ids(handle: Any, prompt: Prompt) -> list[int]:
    if isinstance(prompt, str):
        return await tokenize(handle.tokenizer, prompt, add_special_tokens=True)
    return list(prompt)


async def _open(
    router: Any,
    handle: Any,
    prompt_ids: list[list[int]],
    max_tokens: int | None,
    sampling: Mapping[str, Any],
    prompt_param: str,
    default_max_tokens: int,
) -> GenerationStream:
    params = []
    for ids in prompt_ids:
        budget = resolve_max_tokens(
            handle.max_model_len, len(ids), max_tokens, prompt_param, default_max_tokens
        )
        params.append(sampling_params(budget, sampling))
    streams = await _submit_all(router, handle.name, prompt_ids, params)
    n = params[0].n
    return GenerationStream(handle.name, n, prompt_ids, _steps(streams, DeltaTracker(n)))


async def _submit_all(
    router: Any, name: str, prompt_ids: list[list[int]], params: list[SamplingParams]
) -> list[AsyncIterator[RequestOutput]]:
    """Every prompt's outputs, all admitted; if one is refused, the others are aborted."""
    opened = await asyncio.gather(
        *(_first_output(router, name, ids, p) for ids, p in zip(prompt_ids, params, strict=True)),
        return_exceptions=True,
    )
    failures = [r for r in opened if isinstance(r, BaseException)]
    if failures:
        for stream in opened:
            if not isinstance(stream, BaseException):
                await stream.aclose()
        raise failures[0]
    return list(opened)


async def _first_output(
    router: Any, name: str, ids: list[int], params: SamplingParams
) -> AsyncIterator[RequestOutput]:
    """The request's outputs, the first one already awaited (so its errors are raised here)."""
    gen = router.generate(name, ids, params, new_id("req"))
    try:
        with engine_errors_as_router_errors(name):
            first = await gen.__anext__()
    except StopAsyncIteration:
        raise RuntimeError(f"the model {name!r} returned no output") from None
    except BaseException:  # cancelled too: the engine's generator must close (abort) either way
        await gen.aclose()
        raise
    return _chain(first, gen)


async def _chain(first: RequestOutput, gen: AsyncIterator[RequestOutput]) -> AsyncIterator[RequestOutput]:
    async with contextlib.aclosing(gen):
        yield first
        async for output in gen:
            yield output


async def _steps(
    streams: list[AsyncIterator[RequestOutput]], tracker: DeltaTracker
) -> AsyncIterator[GenerationStep]:
    async with contextlib.aclosing(merge(streams)) as outputs:
        async for prompt_index, output in outputs:
            yield tracker.step(prompt_index, output)


async def collect(stream: GenerationStream) -> Generation:
    """Runs an open request to its end and returns the whole of it."""
    choices = [_SoFar() for _ in range(len(stream.prompt_token_ids) * stream.n)]
    prompt_logprobs: list = [None] * len(stream.prompt_token_ids)
    usage = None
    async with contextlib.aclosing(stream.steps) as steps:
        async for step in steps:
            usage = step.usage
            if step.prompt_logprobs is not None:
                prompt_logprobs[step.prompt_index] = step.prompt_logprobs
            for delta in step.deltas:
                choices[delta.index].add(delta)
    return Generation(
        model=stream.model,
        choices=[c.choice(i, i // stream.n) for i, c in enumerate(choices)],
        usage=usage,
        prompt_token_ids=stream.prompt_token_ids,
        prompt_logprobs=prompt_logprobs,
    )


@dataclass
class _SoFar:
    """One choice's deltas joined."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None

    def add(self, delta: ChoiceDelta) -> None:
        self.text += delta.text
        self.token_ids += delta.token_ids
        if delta.logprobs is not None:
            self.logprobs = (self.logprobs or []) + delta.logprobs
        self.finish_reason = delta.finish_reason or self.finish_reason

    def choice(self, index: int, prompt_index: int) -> Choice:
        return Choice(index, prompt_index, self.text, self.token_ids, self.logprobs, self.finish_reason)
