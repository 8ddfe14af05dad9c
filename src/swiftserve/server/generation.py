"""Driving the engine for one HTTP request: sampling params, context checks, outputs and deltas.

Shared by chat and text completions. The engine yields cumulative outputs per step; this module
turns them into per-choice deltas (new text, new tokens, new logprobs) and keeps the metrics.
Closing or cancelling the iterators here closes the engine's generators, which aborts the
requests and frees their KV blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from swiftserve.outputs import CompletionOutput, RequestOutput, TokenLogprob
from swiftserve.sampling_params import SamplingParams
from swiftserve.server.errors import (
    APIError,
    bad_request,
    context_length_exceeded,
    from_exception,
    service_unavailable,
)
from swiftserve.server.metrics import RequestTimer
from swiftserve.server.protocol import PromptLogprob, PromptLogprobs, Usage
from swiftserve.server.streaming import DONE, sse_error

# Prompts longer than this (characters) are tokenized in a worker thread, off the event loop.
_INLINE_TOKENIZE_CHARS = 16_384
_MAX_STOP_SEQUENCES = 16


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def sampling_params(
    request, *, max_tokens: int, logprobs: int | None, prompt_logprobs: int | None = None
) -> SamplingParams:
    """SamplingParams from the fields chat and completions share; ValueError -> 400 naming the field."""
    stop = request.stop
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if len(stops) > _MAX_STOP_SEQUENCES:
        raise bad_request(
            f"stop may hold at most {_MAX_STOP_SEQUENCES} sequences, got {len(stops)}", param="stop"
        )
    if any(not s for s in stops):
        raise bad_request("stop sequences must be non-empty strings", param="stop")
    logit_bias = None
    if request.logit_bias:
        try:
            logit_bias = {int(token_id): bias for token_id, bias in request.logit_bias.items()}
        except ValueError:
            raise bad_request(
                "logit_bias keys must be token ids (integers as strings)", param="logit_bias"
            ) from None
    top_k = request.top_k if request.top_k is not None and request.top_k > 0 else 0
    try:
        return SamplingParams(
            n=request.n,
            max_tokens=max_tokens,
            min_tokens=request.min_tokens,
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            top_k=top_k,
            min_p=request.min_p or 0.0,
            presence_penalty=request.presence_penalty or 0.0,
            frequency_penalty=request.frequency_penalty or 0.0,
            repetition_penalty=request.repetition_penalty or 1.0,
            logit_bias=logit_bias,
            seed=request.seed,
            stop=stops,
            ignore_eos=request.ignore_eos,
            logprobs=logprobs,
            prompt_logprobs=prompt_logprobs,
        )
    except ValueError as exc:
        message = str(exc)
        raise bad_request(message, param=message.split(" ", 1)[0]) from None


async def tokenize(engine, text: str, *, add_special_tokens: bool) -> list[int]:
    encode = engine.tokenizer.encode
    if len(text) <= _INLINE_TOKENIZE_CHARS:
        return list(encode(text, add_special_tokens=add_special_tokens))
    return list(await asyncio.to_thread(encode, text, add_special_tokens=add_special_tokens))


def resolve_max_tokens(
    engine, num_prompt_tokens: int, max_tokens: int | None, param: str, *, default: int | None = None
) -> int:
    """The completion budget: the requested one if prompt + it fits the context, else a 400.
    Not requested, it is `default` (the server's --default-max-tokens) or what the context has
    left, whichever is smaller; what is left when `default` is None."""
    max_model_len = engine.max_model_len
    if num_prompt_tokens == 0:
        raise bad_request("The prompt is empty: it must hold at least one token.", param=param)
    if max_tokens is None:
        if num_prompt_tokens >= max_model_len:
            raise context_length_exceeded(num_prompt_tokens, 1, max_model_len, param)
        room = max_model_len - num_prompt_tokens
        return room if default is None else min(default, room)
    if num_prompt_tokens + max_tokens > max_model_len:
        raise context_length_exceeded(num_prompt_tokens, max_tokens, max_model_len, param)
    return max_tokens


async def open_stream(
    engine, model: str, prompt_ids: list[int], params: SamplingParams
) -> AsyncIterator[RequestOutput]:
    """Starts a request and waits for its first output, so that bad input or a full queue
    becomes an HTTP error before any response byte is sent. Returns an iterator over all
    outputs (the first included) that aborts the request when closed early."""
    gen = engine.generate(prompt_ids, params, request_id=new_id("req"))
    try:
        first = await gen.__anext__()
    except StopAsyncIteration:
        raise APIError(500, "The engine returned no output.", type="server_error") from None
    except BaseException as exc:
        await gen.aclose()
        error = from_exception(exc, model)
        if error is None:
            raise
        raise error from None
    return _outputs(gen, first)


async def _outputs(gen, first: RequestOutput) -> AsyncIterator[RequestOutput]:
    async with contextlib.aclosing(gen):
        yield first
        async for output in gen:
            yield output


async def merge(streams: list[AsyncIterator[RequestOutput]]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """(stream index, output) from several requests as they come; closing aborts them all."""
    if len(streams) == 1:
        async with contextlib.aclosing(streams[0]) as stream:
            async for output in stream:
                yield 0, output
        return
    queue: asyncio.Queue = asyncio.Queue()
    end = object()

    async def pump(index: int, stream) -> None:
        try:
            async with contextlib.aclosing(stream):
                async for output in stream:
                    queue.put_nowait((index, output))
        except Exception as exc:  # noqa: BLE001 - re-raised by the consumer
            queue.put_nowait((index, exc))
        finally:
            queue.put_nowait((index, end))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item = await queue.get()
            if item is end:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class RequestAborted(Exception):
    """The engine ended a request with finish_reason "abort" (shutdown, or an engine failure)."""


@dataclass
class ChoiceDelta:
    """What one completion produced since the previous step."""

    index: int  # the choice index in the response
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None
    finish_reason: str | None


class DeltaTracker:
    """Cumulative engine outputs -> deltas per choice; keeps usage and latency metrics."""

    def __init__(self, timer: RequestTimer, n: int) -> None:
        self.timer = timer
        self.n = n
        self._sent_text: dict[int, int] = {}
        self._sent_tokens: dict[int, int] = {}
        self.num_prompt_tokens: dict[int, int] = {}
        self.finish_reasons: dict[int, str] = {}

    def step(self, stream_index: int, output: RequestOutput) -> list[ChoiceDelta]:
        self.num_prompt_tokens[stream_index] = len(output.prompt_token_ids)
        deltas, num_new = [], 0
        for completion in output.outputs:
            index = stream_index * self.n + completion.index
            delta = self._delta(index, completion)
            num_new += len(delta.token_ids)
            if delta.text or delta.token_ids or delta.finish_reason:
                deltas.append(delta)
        self.timer.on_tokens(time.perf_counter(), num_new)
        if any(delta.finish_reason == "abort" for delta in deltas):
            raise RequestAborted
        return deltas

    def _delta(self, index: int, completion: CompletionOutput) -> ChoiceDelta:
        sent_text = self._sent_text.get(index, 0)
        sent_tokens = self._sent_tokens.get(index, 0)
        self._sent_text[index] = len(completion.text)
        self._sent_tokens[index] = len(completion.token_ids)
        logprobs = None
        if completion.logprobs is not None:
            logprobs = completion.logprobs[sent_tokens:]
        if completion.finish_reason is not None:
            self.finish_reasons[index] = completion.finish_reason
        return ChoiceDelta(
            index=index,
            text=completion.text[sent_text:],
            token_ids=completion.token_ids[sent_tokens:],
            logprobs=logprobs,
            finish_reason=completion.finish_reason,
        )

    @property
    def prompt_tokens(self) -> int:
        return sum(self.num_prompt_tokens.values())

    @property
    def completion_tokens(self) -> int:
        return sum(self._sent_tokens.values())

    def usage(self) -> Usage:
        prompt, completion = self.prompt_tokens, self.completion_tokens
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)

    def finish(self) -> None:
        self.timer.on_finish(time.perf_counter(), self.prompt_tokens)


def stream_error(exc: Exception, app, model: str) -> APIError:
    """The error a request that failed after it started is answered with."""
    error = from_exception(exc, model)
    if error is not None:
        return error
    if isinstance(exc, RequestAborted) or app.is_draining:
        return aborted_error(app)
    return APIError(500, f"Generation failed: {exc}", type="server_error")


def aborted_error(app) -> APIError:
    if app.is_draining:
        return service_unavailable("The request was aborted: the server is shutting down.")
    return APIError(500, "The request was aborted by the engine.", type="server_error", code="aborted")


def wants_usage(body) -> bool:
    return body.stream_options is not None and body.stream_options.include_usage


async def sse_stream(
    events: AsyncIterator[bytes],
    app,
    model: str,
    tracker: DeltaTracker,
    usage_event: Callable[[], bytes] | None,
) -> AsyncIterator[bytes]:
    """The SSE body around a route's chunk events: a failure becomes a final error event, then
    the usage chunk (stream_options.include_usage) and `[DONE]`. Closing it closes `events`."""
    try:
        async with contextlib.aclosing(events):
            async for event in events:
                yield event
    except Exception as exc:  # noqa: BLE001 - the stream ends with an error event
        yield sse_error(stream_error(exc, app, model))
        yield DONE
        return
    finally:
        tracker.finish()
    if usage_event is not None:
        yield usage_event()
    yield DONE


def token_text(tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id])


def prompt_logprobs_json(tokenizer, entries: list[TokenLogprob | None], k: int) -> PromptLogprobs:
    """vLLM's `prompt_logprobs`: per prompt token (the first None) a map token id -> logprob,
    rank and text, holding the prompt token itself and the top k alternatives."""
    result: PromptLogprobs = []
    for entry in entries:
        if entry is None:
            result.append(None)
            continue
        own = PromptLogprob(entry.logprob, entry.rank, token_text(tokenizer, entry.token_id))
        ranked = {entry.token_id: own}
        for rank, (token_id, logprob) in enumerate(entry.top[:k], start=1):
            ranked.setdefault(token_id, PromptLogprob(logprob, rank, token_text(tokenizer, token_id)))
        result.append(ranked)
    return result
