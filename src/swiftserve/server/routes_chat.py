"""POST /v1/chat/completions: decode the body, ask the router, encode its answer (JSON or SSE)."""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncGenerator

import msgspec

from swiftserve.router.request_types import ChoiceDelta, Generation, GenerationStream, Usage
from swiftserve.router.router import Router
from swiftserve.server import protocol as p
from swiftserve.server.errors import bad_request
from swiftserve.server.http import HTTPRequest, JSONResponse, Response, StreamingResponse
from swiftserve.server.logprobs import chat_logprobs, prompt_logprobs_json
from swiftserve.server.metrics import RequestTimer, timed
from swiftserve.server.params import sampling_fields, template_messages
from swiftserve.server.streaming import chunk_stream, collect_or_answer, sse_event


async def chat_completions(request: HTTPRequest) -> Response:
    body = p.decode_request(request.body, p.ChatCompletionRequest)
    request.label(body.model)
    messages = template_messages(body.messages)
    _check_logprob_fields(body)
    requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    sampling = sampling_fields(body, logprobs=logprobs, prompt_logprobs=body.prompt_logprobs)
    router: Router = request.app.router
    stream = await router.open_chat(body.model, messages, requested, **sampling)
    chat = _Chat(request, body, stream)
    if body.stream:
        return StreamingResponse(chat.sse())
    generation = await collect_or_answer(chat.stream, request.app)
    return JSONResponse(p.encode(chat.completion(generation)))


def _check_logprob_fields(body: p.ChatCompletionRequest) -> None:
    if body.top_logprobs is not None and not body.logprobs:
        raise bad_request("top_logprobs requires logprobs to be true.", param="top_logprobs")
    if body.prompt_logprobs is not None and body.stream:
        raise bad_request(
            "prompt_logprobs is not supported with stream: true on chat completions; use a non-streamed "
            "request (or /v1/completions, which streams them in the first chunk).",
            param="prompt_logprobs",
            code="unsupported_parameter",
        )


class _Chat:
    """Shapes the router's answer into a chat completion object or its chunks."""

    def __init__(self, request: HTTPRequest, body: p.ChatCompletionRequest, stream: GenerationStream) -> None:
        self.app = request.app
        self.body = body
        self.model = stream.model
        self.tokenizer = request.app.router.chat_handle(stream.model).tokenizer
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.fingerprint = request.app.system_fingerprint(stream.model)
        timer = RequestTimer(request.app.metrics, self.model, request.arrival_time)
        self.stream = dataclasses.replace(stream, steps=timed(stream.steps, timer))
        self.usage: Usage | None = None  # the last step's

    def completion(self, generation: Generation) -> p.ChatCompletion:
        choices = [
            p.ChatChoice(
                index=choice.index,
                message=p.ChatResponseMessage(role="assistant", content=choice.text),
                logprobs=self._logprobs(choice.logprobs),
                finish_reason=choice.finish_reason,
            )
            for choice in generation.choices
        ]
        entries = generation.prompt_logprobs[0] if generation.prompt_logprobs else None
        prompt_logprobs: p.PromptLogprobs | msgspec.UnsetType = msgspec.UNSET
        if self.body.prompt_logprobs is not None and entries is not None:
            prompt_logprobs = prompt_logprobs_json(self.tokenizer, entries, self.body.prompt_logprobs)
        return p.ChatCompletion(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=choices,
            usage=generation.usage,
            system_fingerprint=self.fingerprint,
            prompt_logprobs=prompt_logprobs,
        )

    def sse(self) -> AsyncGenerator[bytes, None]:
        usage_chunk = lambda: p.encode(self._chunk([], self.usage))  # noqa: E731
        return chunk_stream(self.body, self.app, self.model, self._events, usage_chunk)

    async def _events(self, usage_field) -> AsyncGenerator[bytes, None]:
        started: set[int] = set()
        async with contextlib.aclosing(self.stream.steps) as steps:
            async for step in steps:
                self.usage = step.usage
                # OpenAI's first chunk of each choice carries only the role.
                roles = [self._role_choice(d.index) for d in step.deltas if d.index not in started]
                if roles:
                    started.update(choice.index for choice in roles)
                    yield sse_event(p.encode(self._chunk(roles, usage_field)))
                if step.deltas:
                    choices = [self._chunk_choice(delta) for delta in step.deltas]
                    yield sse_event(p.encode(self._chunk(choices, usage_field)))

    def _chunk(self, choices: list[p.ChatChunkChoice], usage) -> p.ChatCompletionChunk:
        return p.ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=choices,
            usage=usage,
            system_fingerprint=self.fingerprint,
        )

    @staticmethod
    def _role_choice(index: int) -> p.ChatChunkChoice:
        return p.ChatChunkChoice(index=index, delta=p.ChatDelta(role="assistant", content=""))

    def _chunk_choice(self, delta: ChoiceDelta) -> p.ChatChunkChoice:
        content = p.ChatDelta(content=delta.text) if delta.text or not delta.finish_reason else p.ChatDelta()
        return p.ChatChunkChoice(
            index=delta.index,
            delta=content,
            logprobs=self._logprobs(delta.logprobs),
            finish_reason=delta.finish_reason,
        )

    def _logprobs(self, entries) -> p.ChatLogprobs | None:
        return chat_logprobs(self.tokenizer, entries or []) if self.body.logprobs else None
