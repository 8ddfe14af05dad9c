"""One HTTP request carried from the ingress to a replica, and answered there by the server's own app.

The ingress does not decode OpenAI requests, map errors or encode SSE: the replica runs the request
through the same ASGI app as `swiftserve launch` (server/app.py), in process, and the answer
travels back as parts: one `ResponseHead`, then body chunks (a JSON body, or SSE events as the
app writes them). So a request answered through Ray is byte for byte what one replica answers.

    ingress                                  replica
    RelayedRequest ──── Ray handle ────►  run_in_app(app, request)
    ◄── ResponseHead, bytes, bytes, ... ──  app(scope, receive, send)

A request whose body asks for a stream (`"stream": true`) gets its parts one by one, through Ray's
streaming generator (each part a round trip, so that tokens flow as they come); any other request
gets them all at once, as one list, in a single unary call (`answer`): a JSON answer is complete
before its first byte anyway, and a streamed call costs several round trips more.

Closing the parts early (the client left, or the ingress cancelled) tells the app the client
disconnected, which cancels the handler and aborts the engine request, as over HTTP.
No import of ray here: tier-1 tests call it directly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import msgspec

from swiftserve.server.session_header import SESSION_HEADER


@dataclass(frozen=True)
class RelayedRequest:
    """What the replica needs to answer a request, and what the router needs to place it: the
    model (or pipeline) the body names and the session header, read once by the ingress."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    model: str | None = None
    session_id: str | None = None
    stream: bool = False  # the body asks for SSE: the answer travels as a stream of parts


@dataclass(frozen=True)
class ResponseHead:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


Part = ResponseHead | bytes


class _Peeked(msgspec.Struct):
    model: str | None = None
    stream: Any = None  # any type: a bad value is the replica's 400, and must not hide the model


@dataclass(frozen=True)
class Peek:
    model: str | None
    stream: bool


def peek(body: bytes) -> Peek:
    """The `model` and `stream` of a JSON body (a body that does not decode: no model, not a stream;
    the replica refuses it with the server's own 400)."""
    try:
        fields = msgspec.json.decode(body, type=_Peeked)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return Peek(None, False)
    return Peek(fields.model, fields.stream is True)


def peek_model(body: bytes) -> str | None:
    return peek(body).model


def relayed(method: str, path: str, headers: dict[str, str], body: bytes) -> RelayedRequest:
    """The request as the ingress forwards it (headers lower-cased, as the app reads them)."""
    fields = peek(body) if method == "POST" else Peek(_model_in_path(path), False)
    session = headers.get(SESSION_HEADER)
    return RelayedRequest(method, path, tuple(headers.items()), body, fields.model, session, fields.stream)


def _model_in_path(path: str) -> str | None:
    """/v1/models/{id} (and its /load, /unload) concern one model: routed like its requests."""
    parts = path.strip("/").split("/")
    return parts[2] if len(parts) >= 3 and parts[:2] == ["v1", "models"] and parts[2] != "reload" else None


async def run_in_app(app, request: RelayedRequest) -> AsyncGenerator[Part, None]:
    """The app's answer to `request` as parts (see the module docstring)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "path": request.path,
        "raw_path": request.path.encode(),
        "query_string": b"",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers],
    }
    messages: asyncio.Queue[dict] = asyncio.Queue()
    gone = asyncio.Event()
    body_sent = False

    async def receive() -> dict:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    task = asyncio.ensure_future(app(scope, receive, messages.put))
    try:
        async for part in _parts(messages, task):
            yield part
    finally:
        if not task.done():
            gone.set()  # the app cancels its handler, which aborts the engine request
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def collect(parts: AsyncGenerator[Part, None]) -> list[Part]:
    """Every part of an answer, for a unary call (one round trip instead of one per part)."""
    async with contextlib.aclosing(parts) as opened:
        return [part async for part in opened]


async def _parts(messages: asyncio.Queue[dict], task: asyncio.Future) -> AsyncGenerator[Part, None]:
    while True:
        message = await _next(messages, task)
        if message is None:
            return
        if message["type"] == "http.response.start":
            headers = tuple((bytes(k), bytes(v)) for k, v in message.get("headers", []))
            yield ResponseHead(message["status"], headers)
            continue
        if message.get("body"):
            yield bytes(message["body"])
        if not message.get("more_body", False):
            return


async def _next(messages: asyncio.Queue[dict], task: asyncio.Future) -> dict | None:
    """The app's next message; None once the app returned without one more (its answer is over)."""
    getter = asyncio.ensure_future(messages.get())
    await asyncio.wait((getter, task), return_when=asyncio.FIRST_COMPLETED)
    if getter.done():
        return getter.result()
    getter.cancel()
    if messages.empty():
        task.result()  # re-raises what the app raised (it answers errors itself, so: a bug)
        return None
    return messages.get_nowait()
