"""Server-sent events: `data: {json}\\n\\n` per chunk, an error event, and the closing `[DONE]`."""

from __future__ import annotations

from swiftserve.server.errors import APIError

DONE = b"data: [DONE]\n\n"


def sse_event(payload: bytes) -> bytes:
    """One SSE event carrying a JSON payload (msgspec output holds no raw newlines)."""
    return b"data: " + payload + b"\n\n"


def sse_error(error: APIError) -> bytes:
    """The error event a stream ends with; OpenAI SDKs raise APIError on an `error` key."""
    return sse_event(error.to_json())
