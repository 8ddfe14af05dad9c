"""POST /v1/completions (the legacy text completions API).

`prompt` is a string, a list of strings, a list of token ids or a list of token-id lists; each
prompt is one engine request, and its n completions are choices prompt_index * n + i.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import msgspec

from swiftserve.server import protocol as p
from swiftserve.server.generation import (
    ChoiceDelta,
    DeltaTracker,
    merge,
    new_id,
    open_stream,
    prompt_logprobs_json,
    resolve_max_tokens,
    sampling_params,
    sse_stream,
    stream_error,
    token_text,
    tokenize,
    wants_usage,
)
from swiftserve.server.http import JSONResponse, Request, Response, StreamingResponse
from swiftserve.server.metrics import RequestTimer
from swiftserve.server.streaming import sse_event

_ENDPOINT = "text completions"
MAX_PROMPTS = 64


async def completions(request: Request) -> Response:
    body = p.decode_request(request.body, p.CompletionRequest)
    served = request.app.model(body.model, "chat", _ENDPOINT)
    request.model = served.name
    engine = served.engine
    prompts = []
    for item in p.text_or_token_inputs(body.prompt, "prompt", MAX_PROMPTS):
        if isinstance(item, str):
            ids = await tokenize(engine, item, add_special_tokens=True)
        else:
            ids = item  # the engine checks them against its vocabulary
        resolve_max_tokens(engine, len(ids), body.max_tokens, "prompt")
        prompts.append(ids)
    # echo with logprobs scores the prompt (OpenAI), as does vLLM's prompt_logprobs: one pass, the larger k.
    wanted = [k for k in (body.logprobs if body.echo else None, body.prompt_logprobs) if k is not None]
    params = sampling_params(
        body, max_tokens=body.max_tokens, logprobs=body.logprobs, prompt_logprobs=max(wanted, default=None)
    )
    # All prompts are submitted at once, so their prefills share engine steps.
    opened = await asyncio.gather(
        *(open_stream(engine, served.name, ids, params) for ids in prompts), return_exceptions=True
    )
    failures = [r for r in opened if isinstance(r, BaseException)]
    if failures:
        for stream in opened:
            if not isinstance(stream, BaseException):
                await stream.aclose()
        raise failures[0]
    streams = list(opened)
    completion = _Completion(request, body, served.name, engine.tokenizer, prompts)
    if body.stream:
        return StreamingResponse(completion.sse(streams))
    return await completion.complete(streams)


class _Completion:
    def __init__(self, request: Request, body: p.CompletionRequest, model: str, tokenizer, prompts) -> None:
        self.app = request.app
        self.body = body
        self.model = model
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.id = new_id("cmpl")
        self.created = int(time.time())
        self.fingerprint = request.app.system_fingerprint(model)
        self.tracker = DeltaTracker(RequestTimer(request.app.metrics, model, request.arrival_time), body.n)
        self._prompt_texts: dict[int, str] = {}
        # Per choice: characters emitted so far, for logprobs' text_offset.
        self._offsets: dict[int, int] = {}
        # Per prompt: its prompt logprobs (engine entries, the first None), from its first output.
        self._prompt_logprobs: dict[int, list | None] = {}

    def _prompt_text(self, prompt_index: int) -> str:
        if prompt_index not in self._prompt_texts:
            prompt = self.body.prompt
            if isinstance(prompt, str):
                text = prompt
            elif isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
                text = prompt[prompt_index]
            else:
                text = self.tokenizer.decode(self.prompts[prompt_index])
            self._prompt_texts[prompt_index] = text
        return self._prompt_texts[prompt_index]

    def _choice(self, delta: ChoiceDelta, first: bool) -> p.CompletionChoice:
        text = delta.text
        logprobs = None
        prompt_index = delta.index // self.body.n
        if first and self.body.echo:
            prompt_text = self._prompt_text(prompt_index)
            text = prompt_text + text
        if self.body.logprobs is not None:
            logprobs = self._logprobs(delta, prompt_index, first)
        choice = p.CompletionChoice(
            index=delta.index, text=text, logprobs=logprobs, finish_reason=delta.finish_reason
        )
        entries = self._prompt_logprobs.get(prompt_index)
        if first and self.body.prompt_logprobs is not None and entries is not None:
            choice.prompt_logprobs = prompt_logprobs_json(self.tokenizer, entries, self.body.prompt_logprobs)
        return choice

    def _logprobs(self, delta: ChoiceDelta, prompt_index: int, first: bool) -> p.CompletionLogprobs:
        out = p.CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
        offset = self._offsets.get(delta.index, 0)
        if first and self.body.echo:
            # The prompt's tokens with their prompt logprobs (the first token has none).
            entries = self._prompt_logprobs.get(prompt_index) or []
            for i, token_id in enumerate(self.prompts[prompt_index]):
                token = token_text(self.tokenizer, token_id)
                entry = entries[i] if i < len(entries) else None
                out.tokens.append(token)
                out.token_logprobs.append(entry.logprob if entry else None)
                out.top_logprobs.append(self._prompt_top(entry.top) if entry else None)
                out.text_offset.append(offset)
                offset += len(token)
        for entry in delta.logprobs or []:
            token = token_text(self.tokenizer, entry.token_id)
            out.tokens.append(token)
            out.token_logprobs.append(entry.logprob)
            top = {token_text(self.tokenizer, tid): lp for tid, lp in entry.top}
            out.top_logprobs.append(top)
            out.text_offset.append(offset)
            offset += len(token)
        self._offsets[delta.index] = offset
        return out

    def _prompt_top(self, top: list[tuple[int, float]]) -> dict[str, float]:
        """The top `logprobs` of a prompt token (scored with the larger of logprobs, prompt_logprobs)."""
        return {token_text(self.tokenizer, tid): lp for tid, lp in top[: self.body.logprobs]}

    async def complete(self, streams: list[AsyncIterator]) -> JSONResponse:
        num_choices = len(streams) * self.body.n
        parts: list[list[p.CompletionChoice]] = [[] for _ in range(num_choices)]
        try:
            async for stream_index, output in merge(streams):
                self._prompt_logprobs.setdefault(stream_index, output.prompt_logprobs)
                for delta in self.tracker.step(stream_index, output):
                    parts[delta.index].append(self._choice(delta, first=not parts[delta.index]))
        except Exception as exc:  # noqa: BLE001 - answered as an OpenAI error
            raise stream_error(exc, self.app, self.model) from None
        finally:
            self.tracker.finish()
        choices = [self._join(i, pieces) for i, pieces in enumerate(parts)]
        return JSONResponse(p.encode(self._chunk(choices, self.tracker.usage())))

    def _join(self, index: int, pieces: list[p.CompletionChoice]) -> p.CompletionChoice:
        logprobs = None
        if self.body.logprobs is not None:
            logprobs = p.CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
            for piece in pieces:
                logprobs.tokens += piece.logprobs.tokens
                logprobs.token_logprobs += piece.logprobs.token_logprobs
                logprobs.top_logprobs += piece.logprobs.top_logprobs
                logprobs.text_offset += piece.logprobs.text_offset
        return p.CompletionChoice(
            index=index,
            text="".join(piece.text for piece in pieces),
            logprobs=logprobs,
            finish_reason=self.tracker.finish_reasons.get(index),
            prompt_logprobs=pieces[0].prompt_logprobs if pieces else msgspec.UNSET,
        )

    def sse(self, streams: list[AsyncIterator]) -> AsyncIterator[bytes]:
        usage_event = None
        if wants_usage(self.body):
            usage_event = lambda: sse_event(p.encode(self._chunk([], self.tracker.usage())))  # noqa: E731
        usage_field = None if usage_event else msgspec.UNSET  # `usage: null` on every other chunk
        return sse_stream(self._events(streams, usage_field), self.app, self.model, self.tracker, usage_event)

    async def _events(self, streams: list[AsyncIterator], usage_field) -> AsyncIterator[bytes]:
        started: set[int] = set()
        async for stream_index, output in merge(streams):
            self._prompt_logprobs.setdefault(stream_index, output.prompt_logprobs)
            choices = []
            for delta in self.tracker.step(stream_index, output):
                choices.append(self._choice(delta, first=delta.index not in started))
                started.add(delta.index)
            if choices:
                yield sse_event(p.encode(self._chunk(choices, usage_field)))

    def _chunk(self, choices: list[p.CompletionChoice], usage) -> p.Completion:
        return p.Completion(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=choices,
            usage=usage,
            system_fingerprint=self.fingerprint,
        )
