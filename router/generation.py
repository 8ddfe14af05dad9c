"""The request path of chat and text completions, over the router's per-model `generate`.

1. The prompt becomes token ids: a conversation through the model's chat template (whose text
   already holds the special tokens), a text prompt with the tokenizer's special tokens; token
   ids pass as they are (the engine checks them against its vocabulary).
2. Each prompt gets its completion budget (prompts.resolve_max_tokens) and its SamplingParams;
   all of them the request's priority (None: the model's request_priority, set by the router).
3. Every prompt is submitted at once (so their prefills share engine steps) and each one's first
   output is awaited: a full queue or a bad parameter is raised here, before a caller has sent
   anything (an HTTP route can still answer with a status).
4. The outputs are merged and turned into per-choice deltas (deltas.py); `collect` folds them
   into one Generation for callers that do not stream.
Every helper takes the model's ChatHandle (handles.py), whose generate() is the router's: it loads
the model if cold and raises the router's errors only (errors.router_errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from swiftserve.router.deltas import DeltaTracker
from swiftserve.router.errors import InvalidParameterError
from swiftserve.router.handles import ChatHandle
from swiftserve.router.merge import merge
from swiftserve.router.prompts import render_chat, resolve_max_tokens, sampling_params, tokenize
from swiftserve.router.request_types import (
    Choice,
    ChoiceDelta,
    Generation,
    GenerationStep,
    GenerationStream,
    PromptLogprobs,
    Usage,
)

from swiftserve.outputs import RequestOutput, TokenLogprob
from swiftserve.sampling_params import SamplingParams

Prompt = str | list[int]
# The generator's type: closing it (aclose) before the end aborts the request.
Outputs = AsyncGenerator[RequestOutput, None]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


async def open_chat(
    handle: ChatHandle,
    messages: list[dict],
    max_tokens: int | None,
    sampling: Mapping[str, Any],
    default_max_tokens: int,
    priority: int | None = None,
    template_kwargs: Mapping[str, Any] | None = None,
) -> GenerationStream:
    """Starts a reply to `messages` on the handle's chat model; template_kwargs: see render_chat."""
    return await open_chats(
        handle, [messages], max_tokens, sampling, default_max_tokens, priority, template_kwargs
    )


async def open_chats(
    handle: ChatHandle,
    conversations: list[list[dict]],
    max_tokens: int | None,
    sampling: Mapping[str, Any],
    default_max_tokens: int,
    priority: int | None = None,
    template_kwargs: Mapping[str, Any] | None = None,
) -> GenerationStream:
    """Starts a reply to each conversation, submitted together (a fan-out: their prefills share
    engine steps and their common prefix the prefix cache); choice k answers conversation k // n."""
    ids = []
    for messages in conversations:
        text = render_chat(handle, messages, template_kwargs)
        ids.append(await tokenize(handle.tokenizer, text, add_special_tokens=False))
    return await _open(handle, ids, max_tokens, sampling, "messages", default_max_tokens, priority)


async def open_completion(
    handle: ChatHandle,
    prompts: Prompt | Sequence[Prompt],
    max_tokens: int | None,
    sampling: Mapping[str, Any],
    default_max_tokens: int,
    priority: int | None = None,
) -> GenerationStream:
    """Starts completions of one prompt (text or token ids) or of a list of them."""
    ids = [await _prompt_ids(handle, prompt) for prompt in _as_prompts(prompts)]
    return await _open(handle, ids, max_tokens, sampling, "prompt", default_max_tokens, priority)


def _as_prompts(prompts: Prompt | Sequence[Prompt]) -> list[Prompt]:
    """One prompt (text or token ids) or a list of them -> the list."""
    if not prompts:
        raise InvalidParameterError("prompt", "The prompt is empty: it must hold at least one token.")
    if isinstance(prompts, str):
        return [prompts]
    if all(isinstance(t, int) for t in prompts):
        return [[t for t in prompts if isinstance(t, int)]]
    return [_as_prompt(prompt) for prompt in prompts]


def _as_prompt(prompt: object) -> Prompt:
    """One item of a list of prompts: a string or a list of token ids."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
        return prompt
    raise InvalidParameterError("prompt", "each prompt must be a string or a list of token ids")


async def _prompt_ids(handle: ChatHandle, prompt: Prompt) -> list[int]:
    if isinstance(prompt, str):
        return await tokenize(handle.tokenizer, prompt, add_special_tokens=True)
    return list(prompt)


async def _open(
    handle: ChatHandle,
    prompt_ids: list[list[int]],
    max_tokens: int | None,
    sampling: Mapping[str, Any],
    prompt_param: str,
    default_max_tokens: int,
    priority: int | None,
) -> GenerationStream:
    params = []
    for ids in prompt_ids:
        budget = resolve_max_tokens(
            handle.max_model_len, len(ids), max_tokens, prompt_param, default_max_tokens
        )
        params.append(sampling_params(budget, sampling))
    streams = await _submit_all(handle, prompt_ids, params, priority)
    n = params[0].n
    return GenerationStream(handle.name, n, prompt_ids, _steps(streams, DeltaTracker(n)))


async def _submit_all(
    handle: ChatHandle, prompt_ids: list[list[int]], params: list[SamplingParams], priority: int | None
) -> list[Outputs]:
    """Every prompt's outputs, all admitted. If one is refused, or the caller gives up (cancelled:
    a timeout, a client gone), the others are aborted before this raises: their engine requests
    would otherwise run on, holding KV blocks, until garbage collection closed them."""
    opening = [
        asyncio.ensure_future(_first_output(handle, ids, p, priority))
        for ids, p in zip(prompt_ids, params, strict=True)
    ]
    try:
        await asyncio.gather(*opening, return_exceptions=True)
    except BaseException:  # cancelled: the gather cancelled each one; let them end, then close
        await asyncio.gather(*opening, return_exceptions=True)
        await _close_opened(opening)
        raise
    failures = [error for task in opening if (error := task.exception()) is not None]
    if failures:
        await _close_opened(opening)
        raise failures[0]
    return [_chain(*task.result()) for task in opening]


async def _close_opened(opening: Sequence[asyncio.Future[tuple[RequestOutput, Outputs]]]) -> None:
    """Closes (aborts) the requests that were admitted."""
    for task in opening:
        if not task.cancelled() and task.exception() is None:
            await task.result()[1].aclose()


async def _first_output(
    handle: ChatHandle, ids: list[int], params: SamplingParams, priority: int | None
) -> tuple[RequestOutput, Outputs]:
    """The request's first output and the rest of its outputs (so a refusal is raised here)."""
    gen = handle.generate(ids, params, new_id("req"), priority)
    try:
        first = await gen.__anext__()
    except StopAsyncIteration:
        raise RuntimeError(f"the model {handle.name!r} returned no output") from None
    except BaseException:  # cancelled too: the engine's generator must close (abort) either way
        await gen.aclose()
        raise
    return first, gen


async def _chain(first: RequestOutput, gen: Outputs) -> Outputs:
    async with contextlib.aclosing(gen):
        yield first
        async for output in gen:
            yield output


async def _steps(streams: list[Outputs], tracker: DeltaTracker) -> AsyncGenerator[GenerationStep, None]:
    async with contextlib.aclosing(merge(streams)) as outputs:
        async for prompt_index, output in outputs:
            yield tracker.step(prompt_index, output)


async def collect(stream: GenerationStream) -> Generation:
    """Runs an open request to its end and returns the whole of it."""
    choices = [_SoFar() for _ in range(len(stream.prompt_token_ids) * stream.n)]
    prompt_logprobs: list[PromptLogprobs | None] = [None] * len(stream.prompt_token_ids)
    usage = Usage(sum(len(ids) for ids in stream.prompt_token_ids), 0)  # until the first step
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
