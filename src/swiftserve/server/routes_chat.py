"""POST /v1/chat/completions."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import msgspec

from swiftserve.server import protocol as p
from swiftserve.server.errors import bad_request
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

_ENDPOINT = "chat completions"
_TEMPLATE_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def template_messages(messages: list[p.ChatMessage]) -> list[dict]:
    """Request messages -> the dicts the chat template takes; text parts are joined."""
    if not messages:
        raise bad_request("'messages' must hold at least one message.", param="messages")
    result = []
    for i, message in enumerate(messages):
        role = _TEMPLATE_ROLES.get(message.role)
        if (
            role is None
            or message.tool_calls
            or message.function_call is not None
            or message.audio is not None
        ):
            raise bad_request(
                f"messages[{i}]: tool and function messages are not supported.",
                param=f"messages[{i}].role",
                code="unsupported_parameter",
            )
        content = message.content
        if isinstance(content, list):
            content = _join_text_parts(content, i)
        if content is None:
            if role != "assistant":
                raise bad_request(f"messages[{i}].content is required.", param=f"messages[{i}].content")
            content = ""
        result.append({"role": role, "content": content})
    return result


def _join_text_parts(parts: list[p.ContentPart], i: int) -> str:
    texts = []
    for j, part in enumerate(parts):
        if part.type != "text" or part.text is None:
            raise bad_request(
                f"messages[{i}].content[{j}]: only text content parts are supported, got type '{part.type}'.",
                param=f"messages[{i}].content[{j}].type",
                code="unsupported_parameter",
            )
        texts.append(part.text)
    return "\n".join(texts)


async def chat_completions(request: Request) -> Response:
    body = p.decode_request(request.body, p.ChatCompletionRequest)
    served = request.app.model(body.model, "chat", _ENDPOINT)
    request.model = served.name
    engine = served.engine
    messages = template_messages(body.messages)
    if body.top_logprobs is not None and not body.logprobs:
        raise bad_request("top_logprobs requires logprobs to be true.", param="top_logprobs")
    if body.prompt_logprobs is not None and body.stream:
        raise bad_request(
            "prompt_logprobs is not supported with stream: true on chat completions; use a non-streamed "
            "request (or /v1/completions, which streams them in the first chunk).",
            param="prompt_logprobs",
            code="unsupported_parameter",
        )
    try:
        prompt = engine.apply_chat_template(messages, add_generation_prompt=True)
    except Exception as exc:  # noqa: BLE001 - a template error is the request's fault
        raise bad_request(
            f"The chat template could not render these messages: {exc}", param="messages"
        ) from None
    prompt_ids = await tokenize(engine, prompt, add_special_tokens=False)
    requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    param = "max_completion_tokens" if body.max_completion_tokens is not None else "messages"
    max_tokens = resolve_max_tokens(
        engine, len(prompt_ids), requested, param, default=request.app.default_max_tokens
    )
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    params = sampling_params(
        body, max_tokens=max_tokens, logprobs=logprobs, prompt_logprobs=body.prompt_logprobs
    )
    stream = await open_stream(engine, served.name, prompt_ids, params)
    chat = _Chat(request, body, served.name, engine.tokenizer)
    if body.stream:
        return StreamingResponse(chat.sse(stream))
    return await chat.complete(stream)


class _Chat:
    """Shapes engine outputs into chat completion objects or chunks."""

    def __init__(self, request: Request, body: p.ChatCompletionRequest, model: str, tokenizer) -> None:
        self.app = request.app
        self.body = body
        self.model = model
        self.tokenizer = tokenizer
        self.id = new_id("chatcmpl")
        self.created = int(time.time())
        self.fingerprint = request.app.system_fingerprint(model)
        self.tracker = DeltaTracker(RequestTimer(request.app.metrics, model, request.arrival_time), body.n)

    async def complete(self, stream: AsyncIterator) -> JSONResponse:
        texts = [""] * self.body.n
        logprobs: list[list] = [[] for _ in range(self.body.n)]
        prompt_logprobs = msgspec.UNSET
        try:
            async for _, output in merge([stream]):
                if prompt_logprobs is msgspec.UNSET and output.prompt_logprobs is not None:
                    prompt_logprobs = prompt_logprobs_json(
                        self.tokenizer, output.prompt_logprobs, self.body.prompt_logprobs
                    )
                for delta in self.tracker.step(0, output):
                    texts[delta.index] += delta.text
                    if delta.logprobs:
                        logprobs[delta.index].extend(delta.logprobs)
        except Exception as exc:  # noqa: BLE001 - answered as an OpenAI error
            raise stream_error(exc, self.app, self.model) from None
        finally:
            self.tracker.finish()
        choices = [
            p.ChatChoice(
                index=i,
                message=p.ChatResponseMessage(role="assistant", content=texts[i]),
                logprobs=self._logprobs(logprobs[i]) if self.body.logprobs else None,
                finish_reason=self.tracker.finish_reasons.get(i),
            )
            for i in range(self.body.n)
        ]
        response = p.ChatCompletion(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=choices,
            usage=self.tracker.usage(),
            system_fingerprint=self.fingerprint,
            prompt_logprobs=prompt_logprobs,
        )
        return JSONResponse(p.encode(response))

    def sse(self, stream: AsyncIterator) -> AsyncIterator[bytes]:
        usage_event = None
        if wants_usage(self.body):
            usage_event = lambda: sse_event(p.encode(self._chunk([], self.tracker.usage())))  # noqa: E731
        usage_field = None if usage_event else msgspec.UNSET  # `usage: null` on every other chunk
        return sse_stream(self._events(stream, usage_field), self.app, self.model, self.tracker, usage_event)

    async def _events(self, stream: AsyncIterator, usage_field) -> AsyncIterator[bytes]:
        started: set[int] = set()
        async for _, output in merge([stream]):
            deltas = self.tracker.step(0, output)
            # OpenAI's first chunk of each choice carries only the role.
            roles = [self._role_choice(d.index) for d in deltas if d.index not in started]
            if roles:
                started.update(choice.index for choice in roles)
                yield sse_event(p.encode(self._chunk(roles, usage_field)))
            if deltas:
                choices = [self._chunk_choice(delta) for delta in deltas]
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
        logprobs = self._logprobs(delta.logprobs or []) if self.body.logprobs else None
        content = p.ChatDelta(content=delta.text) if delta.text or not delta.finish_reason else p.ChatDelta()
        return p.ChatChunkChoice(
            index=delta.index, delta=content, logprobs=logprobs, finish_reason=delta.finish_reason
        )

    def _logprobs(self, entries) -> p.ChatLogprobs:
        content = []
        for entry in entries:
            token = token_text(self.tokenizer, entry.token_id)
            top = [
                p.TopLogprob(token=(t := token_text(self.tokenizer, tid)), logprob=lp, bytes=list(t.encode()))
                for tid, lp in entry.top
            ]
            content.append(
                p.ChatTokenLogprob(
                    token=token, logprob=entry.logprob, bytes=list(token.encode()), top_logprobs=top
                )
            )
        return p.ChatLogprobs(content=content)
