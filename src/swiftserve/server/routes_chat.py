"""POST /v1/chat/completions: decode the body, ask the router, encode its answer (JSON or SSE)."""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncGenerator, Callable

import msgspec

from swiftserve.router.request_types import ChoiceDelta, Generation, GenerationStream, Usage
from swiftserve.router.router import Router, as_generation
from swiftserve.router.tool_format import ToolCall, new_call_id
from swiftserve.router.tool_formats import DEFAULT, ToolFormat
from swiftserve.server.errors import bad_request
from swiftserve.server.http import HTTPRequest, JSONResponse, Response, StreamingResponse
from swiftserve.server.logprobs import chat_logprobs, prompt_logprobs_json
from swiftserve.server.metrics import RequestTimer, timed
from swiftserve.server.params import (
    explicit_sampling_fields,
    request_limits,
    sampling_fields,
    template_messages,
)
from swiftserve.server.pipeline_report import pipeline_report, with_upstream_usage
from swiftserve.server.protocol import decode_request
from swiftserve.server.protocol_chat import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChatLogprobs,
    ChatResponseMessage,
)
from swiftserve.server.protocol_common import PromptLogprobs, encode
from swiftserve.server.protocol_pipelines import PipelineReport
from swiftserve.server.protocol_tools import FunctionCall, FunctionCallDelta, ToolCallDelta, ToolCallOut
from swiftserve.server.streaming import chunk_stream, collect_or_answer, sse_event
from swiftserve.server.tool_params import ToolPlan, tool_plan
from swiftserve.server.tool_stream import ToolCallStream


async def chat_completions(request: HTTPRequest) -> Response:
    body = decode_request(request.body, ChatCompletionRequest)
    request.label(body.model)
    router: Router = request.app.router
    fmt = _tool_format(router, body.model)
    messages = template_messages(body.messages, fmt)
    _check_logprob_fields(body)
    requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    sampling = sampling_fields(body, logprobs=logprobs, prompt_logprobs=body.prompt_logprobs)
    plan = tool_plan(body, fmt)
    template_kwargs: dict = {}
    if plan is not None:
        prompt = fmt.prompt(messages, plan.tools)
        messages, template_kwargs = prompt.messages, prompt.template_kwargs
        plan = _with_constraint(plan, sampling)
    if body.model in router.pipelines:
        if plan is not None:
            raise bad_request(
                "A pipeline answers without tools.", param="tools", code="unsupported_parameter"
            )
        return await pipeline_chat(request, body, messages, requested)
    limits = request_limits(body, request.headers)
    stream = await router.open_chat(
        body.model, messages, requested, template_kwargs=template_kwargs, **limits, **sampling
    )
    chat = _Chat(request, body, stream, plan=plan)
    if body.stream:
        return StreamingResponse(chat.sse())
    generation = await collect_or_answer(chat.stream, request.app)
    return JSONResponse(encode(chat.completion(generation)))


async def pipeline_chat(
    request: HTTPRequest,
    body: ChatCompletionRequest,
    messages: list[dict],
    requested: int | None,
) -> Response:
    """A chat completion answered by a pipeline: its final stage's reply, the usage of every stage
    and, in `swiftserve`, each stage's timings; streamed, the final stage streams."""
    if body.logprobs or body.prompt_logprobs is not None:
        raise bad_request("A pipeline answers without logprobs.", param="logprobs")
    router: Router = request.app.router
    sampling = {**explicit_sampling_fields(body), **request_limits(body, request.headers)}
    if body.stream:
        opened = await router.open_pipeline(body.model, messages, requested, **sampling)
        stream = GenerationStream(body.model, opened.n, [[]], with_upstream_usage(opened))
        chat = _Chat(request, body, stream, lambda: pipeline_report(opened.result()))
        return StreamingResponse(chat.sse())
    result = await router.run_pipeline(body.model, messages, requested, **sampling)
    chat = _Chat(request, body, None, lambda: pipeline_report(result), model=body.model)
    completion = chat.completion(as_generation(result))
    return JSONResponse(encode(msgspec.structs.replace(completion, swiftserve=pipeline_report(result))))


def _tool_format(router: Router, model: str) -> ToolFormat:
    """The model's tool-call format; a pipeline (which refuses tools) gets the default."""
    if model in router.pipelines:
        return DEFAULT
    return router.chat_handle(model).tool_format


def _with_constraint(plan: ToolPlan, sampling: dict) -> ToolPlan:
    """The plan's grammar in the sampling fields. `auto` yields to the request's own
    response_format (its reply is then parsed at the end); a forced call cannot."""
    if sampling["structured_outputs"] is None:
        sampling["structured_outputs"] = plan.constraint
        return plan
    if not plan.is_forced:
        return dataclasses.replace(plan, constraint=None)
    raise bad_request(
        "a forced tool call (tool_choice required or a named function) already constrains the "
        "reply: it cannot be combined with response_format or guided_*",
        param="tool_choice",
    )


def _check_logprob_fields(body: ChatCompletionRequest) -> None:
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

    def __init__(
        self,
        request: HTTPRequest,
        body: ChatCompletionRequest,
        stream: GenerationStream | None,
        report: Callable[[], PipelineReport] | None = None,
        model: str | None = None,
        plan: ToolPlan | None = None,
    ) -> None:
        """stream: None for an answer already collected (a pipeline's; then `model` names it).
        report: a pipeline's stages and timings, sent on a chunk of its own at the end."""
        self.app = request.app
        self.body = body
        self.model = stream.model if stream is not None else (model or "")
        self.report = report
        # A pipeline has no tokenizer of its own; it answers without logprobs.
        self.tokenizer = None if report is not None else request.app.router.chat_handle(self.model).tokenizer
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.fingerprint = request.app.system_fingerprint(self.model)
        if stream is not None:
            timer = RequestTimer(request.app.metrics, self.model, request.arrival_time)
            self.stream = dataclasses.replace(stream, steps=timed(stream.steps, timer))
        self.usage: Usage | None = None  # the last step's
        self.plan = plan  # tool calling: replies are parsed into tool_calls
        self.tool_streams: dict[int, ToolCallStream] = {}

    def completion(self, generation: Generation) -> ChatCompletion:
        choices = []
        for choice in generation.choices:
            message, finish_reason = self._message(choice.text, choice.finish_reason)
            choices.append(
                ChatChoice(
                    index=choice.index,
                    message=message,
                    logprobs=self._logprobs(choice.logprobs),
                    finish_reason=finish_reason,
                )
            )
        entries = generation.prompt_logprobs[0] if generation.prompt_logprobs else None
        prompt_logprobs: PromptLogprobs | msgspec.UnsetType = msgspec.UNSET
        if self.body.prompt_logprobs is not None and entries is not None:
            assert self.tokenizer is not None  # a pipeline refuses prompt_logprobs
            prompt_logprobs = prompt_logprobs_json(self.tokenizer, entries, self.body.prompt_logprobs)
        return ChatCompletion(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=choices,
            usage=generation.usage,
            system_fingerprint=self.fingerprint,
            prompt_logprobs=prompt_logprobs,
        )

    def _message(self, text: str, finish_reason: str | None) -> tuple[ChatResponseMessage, str | None]:
        """The assistant message of a finished reply: its tool calls, when it made some."""
        if self.plan is None:
            return ChatResponseMessage(role="assistant", content=text), finish_reason
        content, calls = self._parsed(text)
        if not calls:
            return ChatResponseMessage(role="assistant", content=text), finish_reason
        tool_calls = [
            ToolCallOut(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments)) for c in calls
        ]
        message = ChatResponseMessage(role="assistant", content=content, tool_calls=tool_calls)
        return message, "tool_calls" if finish_reason == "stop" else finish_reason

    def _parsed(self, text: str) -> tuple[str | None, list[ToolCall]]:
        """(content, calls): a grammar-made reply whose format can scan it keeps its arguments as
        generated (the stream sent those); anything else is parsed."""
        assert self.plan is not None
        fmt = self.plan.fmt
        if self.plan.constraint is None or not fmt.can_scan:
            return fmt.parse(text)
        start = text.find(fmt.open_tag)
        calls = [ToolCall(new_call_id(), n, a) for n, a in fmt.scan(text)]
        return (text[:start] or None) if calls and start > 0 else None, calls

    def sse(self) -> AsyncGenerator[bytes, None]:
        usage_chunk = lambda: encode(self._chunk([], self.usage))  # noqa: E731
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
                    yield sse_event(encode(self._chunk(roles, usage_field)))
                if step.deltas:
                    choices = [self._chunk_choice(delta) for delta in step.deltas]
                    yield sse_event(encode(self._chunk(choices, usage_field)))
        if self.report is not None:
            chunk = msgspec.structs.replace(self._chunk([], usage_field), swiftserve=self.report())
            yield sse_event(encode(chunk))

    def _chunk(self, choices: list[ChatChunkChoice], usage) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=choices,
            usage=usage,
            system_fingerprint=self.fingerprint,
        )

    @staticmethod
    def _role_choice(index: int) -> ChatChunkChoice:
        return ChatChunkChoice(index=index, delta=ChatDelta(role="assistant", content=""))

    def _chunk_choice(self, delta: ChoiceDelta) -> ChatChunkChoice:
        if self.plan is not None:
            return self._tool_chunk_choice(delta)
        content = ChatDelta(content=delta.text) if delta.text or not delta.finish_reason else ChatDelta()
        return ChatChunkChoice(
            index=delta.index,
            delta=content,
            logprobs=self._logprobs(delta.logprobs),
            finish_reason=delta.finish_reason,
        )

    def _tool_chunk_choice(self, delta: ChoiceDelta) -> ChatChunkChoice:
        assert self.plan is not None
        is_exact = self.plan.constraint is not None
        stream = self.tool_streams.setdefault(delta.index, ToolCallStream(is_exact, self.plan.fmt))
        piece = stream.feed(delta.text, delta.finish_reason is not None)
        calls = [
            ToolCallDelta(
                index=call.index,
                id=call.id if call.id is not None else msgspec.UNSET,
                type="function" if call.id is not None else msgspec.UNSET,
                function=FunctionCallDelta(
                    name=call.name if call.name is not None else msgspec.UNSET, arguments=call.arguments
                ),
            )
            for call in piece.calls
        ]
        finish_reason = delta.finish_reason
        if finish_reason == "stop" and stream.made_calls:
            finish_reason = "tool_calls"
        return ChatChunkChoice(
            index=delta.index,
            delta=ChatDelta(content=piece.content or msgspec.UNSET, tool_calls=calls or msgspec.UNSET),
            logprobs=self._logprobs(delta.logprobs),
            finish_reason=finish_reason,
        )

    def _logprobs(self, entries) -> ChatLogprobs | None:
        if not self.body.logprobs or self.tokenizer is None:  # a pipeline refuses logprobs
            return None
        return chat_logprobs(self.tokenizer, entries or [])
