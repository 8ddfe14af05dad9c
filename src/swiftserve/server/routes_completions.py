"""POST /v1/completions (the legacy text completions API).

`prompt` is a string, a list of strings, a list of token ids or a list of token-id lists; the
router runs each prompt as one engine request, and its n completions are choices
prompt_index * n + i.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncGenerator

from swiftserve.router.request_types import Choice, ChoiceDelta, GenerationStream, Usage
from swiftserve.router.router import Router
from swiftserve.server.http import HTTPRequest, JSONResponse, Response, StreamingResponse
from swiftserve.server.logprobs import prompt_logprobs_json, token_text
from swiftserve.server.metrics import RequestTimer, timed
from swiftserve.server.params import request_limits, sampling_fields
from swiftserve.server.protocol import decode_request, text_or_token_inputs
from swiftserve.server.protocol_common import encode
from swiftserve.server.protocol_completions import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    TextCompletion,
)
from swiftserve.server.streaming import chunk_stream, collect_or_answer, sse_event

MAX_PROMPTS = 64


async def completions(request: HTTPRequest) -> Response:
    body = decode_request(request.body, CompletionRequest)
    request.label(body.model)
    prompts = text_or_token_inputs(body.prompt, "prompt", MAX_PROMPTS)
    # echo with logprobs scores the prompt (OpenAI), as does vLLM's prompt_logprobs: one pass, the larger k.
    wanted = [k for k in (body.logprobs if body.echo else None, body.prompt_logprobs) if k is not None]
    sampling = sampling_fields(body, logprobs=body.logprobs, prompt_logprobs=max(wanted, default=None))
    router: Router = request.app.router
    limits = request_limits(body, request.headers)
    stream = await router.open_completion(body.model, prompts, body.max_tokens, **limits, **sampling)
    completion = _Completion(request, body, stream)
    if body.stream:
        return StreamingResponse(completion.sse())
    generation = await collect_or_answer(completion.stream, request.app)
    completion.prompt_logprobs = dict(enumerate(generation.prompt_logprobs))
    choices = [completion.choice(c, first=True) for c in generation.choices]
    return JSONResponse(encode(completion.chunk(choices, generation.usage)))


class _Completion:
    """Shapes the router's answer into text completion objects (whole, or chunks)."""

    def __init__(self, request: HTTPRequest, body: CompletionRequest, stream: GenerationStream) -> None:
        self.app = request.app
        self.body = body
        self.model = stream.model
        self.tokenizer = request.app.router.chat_handle(stream.model).tokenizer
        self.prompt_ids = stream.prompt_token_ids
        self.id = f"cmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.fingerprint = request.app.system_fingerprint(stream.model)
        timer = RequestTimer(request.app.metrics, self.model, request.arrival_time)
        self.stream = dataclasses.replace(stream, steps=timed(stream.steps, timer))
        self.usage: Usage | None = None  # the last step's
        # Per choice: characters emitted so far, for logprobs' text_offset.
        self._offsets: dict[int, int] = {}
        # Per prompt: its prompt logprobs (engine entries, the first None), from its first output.
        self.prompt_logprobs: dict[int, list | None] = {}

    def _prompt_text(self, prompt_index: int) -> str:
        prompt = self.body.prompt
        if isinstance(prompt, str):
            return prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            return prompt[prompt_index]
        return self.tokenizer.decode(self.prompt_ids[prompt_index])

    def choice(self, delta: ChoiceDelta | Choice, first: bool) -> CompletionChoice:
        """A delta as a choice (`first`: the choice's first piece, which carries the echo); a
        whole Choice is its own first piece."""
        text = delta.text
        if first and self.body.echo:
            text = self._prompt_text(delta.prompt_index) + text
        logprobs = None
        if self.body.logprobs is not None:
            logprobs = self._logprobs(delta, first)
        choice = CompletionChoice(
            index=delta.index, text=text, logprobs=logprobs, finish_reason=delta.finish_reason
        )
        entries = self.prompt_logprobs.get(delta.prompt_index)
        if first and self.body.prompt_logprobs is not None and entries is not None:
            choice.prompt_logprobs = prompt_logprobs_json(self.tokenizer, entries, self.body.prompt_logprobs)
        return choice

    def _logprobs(self, delta: ChoiceDelta | Choice, first: bool) -> CompletionLogprobs:
        out = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
        offset = self._offsets.get(delta.index, 0)
        if first and self.body.echo:
            # The prompt's tokens with their prompt logprobs (the first token has none).
            entries = self.prompt_logprobs.get(delta.prompt_index) or []
            for i, token_id in enumerate(self.prompt_ids[delta.prompt_index]):
                entry = entries[i] if i < len(entries) else None
                top = self._prompt_top(entry.top) if entry else None
                offset = self._append(out, token_id, entry.logprob if entry else None, top, offset)
        for entry in delta.logprobs or []:
            top = {token_text(self.tokenizer, tid): lp for tid, lp in entry.top}
            offset = self._append(out, entry.token_id, entry.logprob, top, offset)
        self._offsets[delta.index] = offset
        return out

    def _append(self, out: CompletionLogprobs, token_id: int, logprob, top, offset: int) -> int:
        token = token_text(self.tokenizer, token_id)
        out.tokens.append(token)
        out.token_logprobs.append(logprob)
        out.top_logprobs.append(top)
        out.text_offset.append(offset)
        return offset + len(token)

    def _prompt_top(self, top: list[tuple[int, float]]) -> dict[str, float]:
        """The top `logprobs` of a prompt token (scored with the larger of logprobs, prompt_logprobs)."""
        return {token_text(self.tokenizer, tid): lp for tid, lp in top[: self.body.logprobs]}

    def sse(self) -> AsyncGenerator[bytes, None]:
        usage_chunk = lambda: encode(self.chunk([], self.usage))  # noqa: E731
        return chunk_stream(self.body, self.app, self.model, self._events, usage_chunk)

    async def _events(self, usage_field) -> AsyncGenerator[bytes, None]:
        started: set[int] = set()
        async with contextlib.aclosing(self.stream.steps) as steps:
            async for step in steps:
                self.usage = step.usage
                if step.prompt_logprobs is not None:
                    self.prompt_logprobs[step.prompt_index] = step.prompt_logprobs
                choices = []
                for delta in step.deltas:
                    choices.append(self.choice(delta, first=delta.index not in started))
                    started.add(delta.index)
                if choices:
                    yield sse_event(encode(self.chunk(choices, usage_field)))

    def chunk(self, choices: list[CompletionChoice], usage) -> TextCompletion:
        return TextCompletion(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=choices,
            usage=usage,
            system_fingerprint=self.fingerprint,
        )
