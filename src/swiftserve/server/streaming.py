"""Server-sent events: `data: {json}\\n\\n` per chunk, an error event, and the closing `[DONE]`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable

import msgspec

from swiftserve.router.generation import collect
from swiftserve.router.request_types import Generation, GenerationStream
from swiftserve.server.errors import APIError, error_for, service_unavailable
from swiftserve.server.http import AppView
from swiftserve.server.protocol import GenerationRequest

# What a chunk's `usage` says before the last chunk: null (include_usage), or nothing (UNSET).
UsageField = None | msgspec.UnsetType

DONE = b"data: [DONE]\n\n"


def sse_event(payload: bytes) -> bytes:
    """One SSE event carrying a JSON payload (msgspec output holds no raw newlines)."""
    return b"data: " + payload + b"\n\n"


def sse_error(error: APIError) -> bytes:
    """The error event a stream ends with; OpenAI SDKs raise APIError on an `error` key."""
    return sse_event(error.to_json())


def stream_error(exc: BaseException, app: AppView, model: str) -> APIError:
    """The answer to a request that failed after it was admitted (mid-stream, or while a
    non-streamed one was collected): a shutdown aborts everything in flight, so it is a 503."""
    if app.is_draining:
        return service_unavailable("The request was aborted: the server is shutting down.")
    return error_for(exc, model, "a stream")


async def sse_stream(
    events: AsyncGenerator[bytes, None], app: AppView, model: str, usage_event: Callable[[], bytes] | None
) -> AsyncGenerator[bytes, None]:
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
    if usage_event is not None:
        yield usage_event()
    yield DONE


async def collect_or_answer(stream: GenerationStream, app: AppView) -> Generation:
    """A non-streamed request's whole generation; a failure after admission becomes the OpenAI
    error it answers (stream_error), raised."""
    try:
        return await collect(stream)
    except Exception as exc:  # noqa: BLE001 - answered as an OpenAI error
        raise stream_error(exc, app, stream.model) from None


def wants_usage(body: GenerationRequest) -> bool:
    return body.stream_options is not None and body.stream_options.include_usage


def chunk_stream(
    body: GenerationRequest,
    app: AppView,
    model: str,
    events: Callable[[UsageField], AsyncGenerator[bytes, None]],
    usage_chunk: Callable[[], bytes],
) -> AsyncGenerator[bytes, None]:
    """The SSE body of a streamed chat or completion: events(usage_field) yields the route's chunk
    events. With stream_options.include_usage every chunk says `usage: null` and one last chunk
    (usage_chunk(), encoded) carries the usage; without it, chunks leave the field out."""
    if wants_usage(body):
        return sse_stream(events(None), app, model, lambda: sse_event(usage_chunk()))
    return sse_stream(events(msgspec.UNSET), app, model, None)
