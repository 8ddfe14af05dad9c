"""What the app and its route modules share: the request, the two response kinds, the handler type.

The route modules import this, never `app.py`: the app imports the routes to install them, so a
route importing the app would be an import cycle (tests/test_layering.py). A handler reaches the
app through `request.app`, typed by the `AppView` protocol below.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from swiftserve.router.router import Router
from swiftserve.router.runtime import ReloadResult
from swiftserve.server.errors import APIError
from swiftserve.server.metrics import ServerMetrics

# The request counter's endpoint label for a path no route matches: one value for all of them,
# as a label per raw path would let any client grow /metrics without bound.
UNMATCHED_ROUTE = "unmatched"
_JSON = [(b"content-type", b"application/json")]
_SSE = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


@dataclass
class JSONResponse:
    body: bytes
    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=lambda: list(_JSON))

    async def send(self, send) -> None:
        headers = self.headers + [(b"content-length", str(len(self.body)).encode())]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


@dataclass
class StreamingResponse:
    """SSE: each item of `chunks` is one or more complete `data: ...\\n\\n` events."""

    chunks: AsyncIterator[bytes]
    status: int = 200

    async def send(self, send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": list(_SSE)})
        async for chunk in self.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


Response = JSONResponse | StreamingResponse


def error_response(error: APIError) -> JSONResponse:
    headers = list(_JSON) + [(k.encode(), v.encode()) for k, v in error.headers.items()]
    return JSONResponse(error.to_json(), status=error.status, headers=headers)


class AppView(Protocol):
    """The part of `app.App` that handlers use."""

    router: Router
    metrics: ServerMetrics
    created: int
    is_ready: bool
    is_draining: bool

    def system_fingerprint(self, model: str) -> str: ...

    async def reload_config(self) -> ReloadResult: ...


@dataclass
class HTTPRequest:
    """One HTTP request as a handler sees it (the engine's state of a request is engine/request.py's)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    arrival_time: float
    app: AppView
    # Set by handlers (label), so the request counter carries the model label.
    model: str = ""
    # The matched route's template (/v1/models/{name}/load), the request counter's endpoint label.
    route: str = UNMATCHED_ROUTE

    def label(self, model: str) -> None:
        """Counts this request under `model` once it names a served one: unknown names would grow
        the counter's label set without bound. Typed errors are answered naming it too."""
        router = self.app.router
        if model in router.names() or model in router.pipelines:
            self.model = model


Handler = Callable[[HTTPRequest], Awaitable[Response]]

# Past this the body is not even drained: the connection is closed after the 413.
_MAX_DRAIN_BYTES = 64 * 1024 * 1024


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


async def read_body(receive, headers: dict[str, str], max_body_bytes: int) -> bytes:
    """The request body from ASGI `receive`, up to max_body_bytes (413 past it; up to
    _MAX_DRAIN_BYTES the rest is read and dropped, so the client sees the answer instead of a
    reset connection). ClientGone if the client leaves first. The app and the Ray ingress share it."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > _MAX_DRAIN_BYTES:
        raise _too_large(max_body_bytes)
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        body = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(body)
        if size > _MAX_DRAIN_BYTES:
            raise _too_large(max_body_bytes)
        if size <= max_body_bytes:
            chunks.append(body)
    if size > max_body_bytes:
        raise _too_large(max_body_bytes)
    return b"".join(chunks)


def _too_large(max_body_bytes: int) -> APIError:
    return APIError(
        413, f"Request body too large: the limit is {max_body_bytes} bytes.", code="request_too_large"
    )
