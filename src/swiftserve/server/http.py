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
