"""The ingress's ASGI app: the OpenAI API in front of the replicas, as a relay (no import of ray).

Lifecycle of one request:
1. `/health` is answered here: 200 while a replica is ready, else 503. `/metrics` too, when
   the ingress can scrape every replica (`metrics`): their expositions merged, each sample
   labelled with its replica (metrics_merge.py). Any other path goes to a replica; while none is
   ready the answer is 503 `service_unavailable` with Retry-After.
2. The body is read with the server's own limit (server/http.read_body: 413 past it); its
   `model` and the `x-session-id` header are peeked for routing (relay.relayed).
3. The request goes to a replica: a streamed one (`"stream": true`) by the method Ray Serve LLM
   names for its route (chat, completions, embeddings; `relay` for the others), as a stream of
   parts; any other one by `answer`, one unary call whose answer is every part at once (relay.py).
   Ray's request router picks the replica.
4. The replica's parts come back and are written as they come: the head with the first body
   chunk (so that a replica that dies before answering can be replaced), then every SSE event.
5. A replica that fails before its first chunk: the request goes to another one, up to
   MAX_ATTEMPTS in all (a unary answer arrives whole, so a replica lost while answering one is
   always in this case). One that fails mid-stream: the stream ends with an error event (503,
   code `replica_failed`) and `[DONE]`, as a shutdown ends streams. A client that disconnects
   cancels the relay, which aborts the request on its replica (relay.run_in_app).
Errors answered here are the server's (server/errors.py), in OpenAI's format.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from swiftserve.ray.relay import Part, RelayedRequest, ResponseHead, relayed
from swiftserve.server.errors import APIError, service_unavailable
from swiftserve.server.http import ClientGone, JSONResponse, error_response, read_body
from swiftserve.server.metrics import CONTENT_TYPE_LATEST
from swiftserve.server.streaming import DONE, sse_error

logger = logging.getLogger("swiftserve.ray")

METHOD_OF_PATH = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
UNARY_METHOD = "answer"  # the replica's method that returns every part of an answer as one list
MAX_ATTEMPTS = 3
NO_REPLICA_RETRY_AFTER_S = 2
# Sends a request to a replica by method name; yields its parts (UNARY_METHOD: in one call).
Sender = Callable[[str, RelayedRequest], AsyncGenerator[Part, None]]


class ReplicaFailedError(Exception):
    """A replica stopped (died, or Ray lost it) while it held the request."""


class IngressApp:
    """send: to a replica (ingress.py, through a Ray handle; tests pass a replica directly).
    is_ready: whether a replica is ready now. is_replica_failure: which exceptions of `send` mean
    that the replica was lost (Ray's), as opposed to a bug. metrics: the deployment's merged
    exposition (None: /metrics goes to one replica, like any other path)."""

    def __init__(
        self,
        send: Sender,
        is_ready: Callable[[], bool],
        is_replica_failure: Callable[[BaseException], bool],
        max_body_bytes: int,
        metrics: Callable[[], Awaitable[bytes]] | None = None,
    ) -> None:
        self.send = send
        self.is_ready = is_ready
        self.is_replica_failure = is_replica_failure
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            await self._answer(scope, headers, receive, send)
        except APIError as error:
            await error_response(error).send(send)
        except ClientGone:
            pass

    async def _answer(self, scope, headers: dict[str, str], receive, send) -> None:
        path = _app_path(scope)
        if path == "/health":
            status, body = (200, b'{"status":"ok"}') if self.is_ready() else (503, b'{"status":"no_replica"}')
            await JSONResponse(body, status=status).send(send)
            return
        if path == "/metrics" and self.metrics is not None and scope["method"] == "GET":
            content_type = [(b"content-type", CONTENT_TYPE_LATEST.encode())]
            await JSONResponse(await self.metrics(), headers=content_type).send(send)
            return
        if not self.is_ready():
            raise _no_replica()
        body = await read_body(receive, headers, self.max_body_bytes)
        request = relayed(scope["method"], path, headers, body)
        relay = asyncio.ensure_future(self._relay(request, send))
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await asyncio.wait((relay, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            if not relay.done():  # the client left: cancelling closes the replica's stream
                relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay

    async def _relay(self, request: RelayedRequest, send) -> None:
        method = method_of(request)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            writer = _Writer(send)
            try:
                async with contextlib.aclosing(self.send(method, request)) as parts:
                    async for part in parts:
                        await writer.write(part)
                await writer.finish()
                return
            except Exception as exc:  # noqa: BLE001 - a lost replica is answered; anything else is a bug
                if not self.is_replica_failure(exc):
                    raise
                if writer.started or attempt == MAX_ATTEMPTS:
                    await writer.fail(exc)
                    return
                logger.warning("replica lost before answering (attempt %d): %s; retrying", attempt, exc)


class _Writer:
    """Writes a replica's parts as ASGI messages: the head waits for the first body chunk."""

    def __init__(self, send) -> None:
        self._send = send
        self.head: ResponseHead | None = None
        self.started = False

    async def write(self, part: Part) -> None:
        if isinstance(part, ResponseHead):
            self.head = part
            return
        await self._start()
        await self._send({"type": "http.response.body", "body": part, "more_body": True})

    async def _start(self) -> None:
        if self.started:
            return
        head = self.head or ResponseHead(500, ())
        await self._send(
            {"type": "http.response.start", "status": head.status, "headers": list(head.headers)}
        )
        self.started = True

    async def finish(self) -> None:
        await self._start()
        await self._send({"type": "http.response.body", "body": b""})

    async def fail(self, exc: BaseException) -> None:
        error = APIError(
            503,
            f"The replica serving this request stopped: {type(exc).__name__}. Retry the request.",
            type="server_error",
            code="replica_failed",
            headers={"retry-after": "1"},
        )
        if not self.started:
            await error_response(error).send(self._send)
            return
        assert self.head is not None
        if (self.head.header(b"content-type") or b"").startswith(b"text/event-stream"):
            await self._send(
                {"type": "http.response.body", "body": sse_error(error) + DONE, "more_body": True}
            )
        await self._send({"type": "http.response.body", "body": b""})


def method_of(request: RelayedRequest) -> str:
    """The replica method that answers `request` (see step 3 of the module docstring)."""
    return METHOD_OF_PATH.get(request.path, "relay") if request.stream else UNARY_METHOD


def _app_path(scope) -> str:
    """The path below the application's route prefix (Ray Serve passes it as root_path)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] or "/" if root and path.startswith(root) else path


def _no_replica() -> APIError:
    error = service_unavailable(
        "No replica is ready yet: the models are loading or the replicas are starting."
    )
    error.headers["retry-after"] = str(NO_REPLICA_RETRY_AFTER_S)
    return error


async def _wait_for_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _lifespan(receive, send) -> None:
    while True:
        message: dict[str, Any] = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
