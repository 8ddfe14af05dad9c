"""A small ASGI app: routing by method and path, bounded body reads, auth, disconnect handling.

Lifecycle of one HTTP request:
1. Route lookup (404 / 405), Bearer check on /v1 routes (401), 503 while loading or draining.
2. The body is read up to `max_body_bytes` (413 past it; the rest is drained so the client
   sees the answer instead of a reset connection).
3. The handler runs in a task next to a watcher of `receive()`: if the client disconnects before
   the answer is complete, the handler task is cancelled, which closes the engine's generator and
   so aborts the request and frees its KV blocks, whether it was queued or mid-stream.
4. The handler returns a `JSONResponse` or a `StreamingResponse` (SSE), sent inside that task.
Every error is an OpenAI-format body (`errors.APIError`).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from swiftserve.router.errors import NoConfigFileError
from swiftserve.router.router import Router
from swiftserve.router.runtime import ReloadResult
from swiftserve.server.errors import APIError, error_for, service_unavailable
from swiftserve.server.http import (
    ClientGone,
    Handler,
    HTTPRequest,
    JSONResponse,
    Response,
    error_response,
    read_body,
)
from swiftserve.server.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from swiftserve.server.routes_models import list_models, model_route, reload_config
from swiftserve.server.routes_pipelines import pipeline_route

logger = logging.getLogger("swiftserve.server")

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024


class App:
    """The ASGI application over one router (the only table of models); holds its metrics (no
    globals). Routes decode, call the router, encode; errors become HTTP answers in `_run`,
    through errors.error_for."""

    def __init__(
        self,
        router: Router,
        *,
        api_key: str | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        metrics: ServerMetrics | None = None,
        on_startup: Callable[[App], Coroutine[Any, Any, None]] | None = None,
        fingerprint_info: str = "",
        on_shutdown: Callable[[], None] | None = None,
        reload_config: Callable[[], Awaitable[ReloadResult]] | None = None,
    ) -> None:
        self.router = router
        self._reload_config = reload_config
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        # What besides the version and the model changes the answers (dtype, device), as text.
        self.fingerprint_info = fingerprint_info
        self.metrics = metrics or ServerMetrics(
            lambda: ((name, router.handle(name)) for name in router.names()), router.models
        )
        self.is_ready = False
        self.is_draining = False
        self.created = int(time.time())
        self._on_startup = on_startup
        self._on_shutdown = on_shutdown
        self._startup_task: asyncio.Task | None = None
        self._shutdown_task: asyncio.Future | None = None
        router.on_pipeline = self.metrics.pipeline.observe
        router.on_queue_full = lambda name: self.metrics.queue_full.labels(name).inc()
        router.on_timeout = lambda name: self.metrics.timeouts.labels(name).inc()
        router.on_follower_prewarm = lambda name, follower: self.metrics.follower_prewarms.labels(
            follower, name
        ).inc()
        self._routes: dict[str, dict[str, Handler]] = {}
        self._install_routes()

    # ------------------------------------------------------------ routing

    def route(self, method: str, path: str, handler: Handler) -> None:
        self._routes.setdefault(path, {})[method] = handler

    def _install_routes(self) -> None:
        from swiftserve.server.routes_chat import chat_completions
        from swiftserve.server.routes_completions import completions
        from swiftserve.server.routes_embeddings import embeddings

        self.route("POST", "/v1/chat/completions", chat_completions)
        self.route("POST", "/v1/completions", completions)
        self.route("POST", "/v1/embeddings", embeddings)
        self.route("GET", "/v1/models", list_models)
        self.route("POST", "/v1/models/reload", reload_config)
        self.route("GET", "/health", _health)
        self.route("GET", "/metrics", _metrics)

    def system_fingerprint(self, model: str) -> str:
        """OpenAI's `system_fingerprint` for answers of `model`: the same string for as long as the
        swiftserve version, the model's source and the server's settings stay the same."""
        source = self.router.info(model).source if model in self.router.names() else ""
        key = "\n".join((_VERSION, model, source, self.fingerprint_info))
        return "fp_" + hashlib.sha256(key.encode()).hexdigest()[:12]

    async def reload_config(self) -> ReloadResult:
        """Re-reads the config file the models came from (NoConfigFileError when there is none)."""
        if self._reload_config is None:
            raise NoConfigFileError()
        return await self._reload_config()

    # ------------------------------------------------------------ lifecycle

    async def begin_shutdown(self) -> None:
        """Stop taking requests and abort what is in flight (streams end with an error event).
        Idempotent: later calls wait for the first one's work."""
        if self._shutdown_task is None:
            self.is_draining = True
            if self._startup_task is not None and not self._startup_task.done():
                self._startup_task.cancel()
            self._shutdown_task = asyncio.ensure_future(self._shutdown_engines())
        await asyncio.shield(self._shutdown_task)

    async def _shutdown_engines(self) -> None:
        try:
            await self.router.shutdown()
        except Exception:  # noqa: BLE001 - shutting down regardless
            logger.exception("engine shutdown failed")
        if self._on_shutdown is not None:
            await asyncio.to_thread(self._on_shutdown)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self._on_startup is not None:
                    # Models load in the background so /health answers 503 meanwhile.
                    self._startup_task = asyncio.create_task(self._on_startup(self))
                else:
                    self.is_ready = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.begin_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ------------------------------------------------------------ ASGI entry

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        arrival = time.perf_counter()
        method, path = scope["method"], scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request = HTTPRequest(method, path, headers, b"", arrival, self)
        status = 500
        try:
            handler = self._resolve(request)
            request.body = await read_body(receive, headers, self.max_body_bytes)
            status = await self._run(handler, request, receive, send)
        except APIError as error:
            status = error.status
            await error_response(error).send(send)
        except ClientGone:
            status = 499  # nobody to answer
        finally:
            if path.startswith("/v1/"):
                # Labels from bounded sets only: route templates and served model names.
                self.metrics.requests.labels(request.model, request.route, str(status)).inc()

    def _match(self, path: str) -> tuple[str, dict[str, Handler]] | None:
        """The route template of path and its handlers by method, or None."""
        methods = self._routes.get(path)
        if methods is not None:
            return path, methods
        # /v1/models/{id}, /v1/models/{name}/load | unload, /v1/pipelines/{name}
        return model_route(path) or pipeline_route(path)

    def _resolve(self, request: HTTPRequest) -> Handler:
        """The handler of the request's route (setting request.route); 404, 405, 401 or 503."""
        method, path = request.method, request.path
        match = self._match(path)
        if match is None:
            raise APIError(404, f"Invalid URL ({method} {path})", code="not_found")
        request.route, methods = match
        handler = methods.get(method)
        if handler is None:
            raise APIError(
                405,
                f"Method {method} not allowed for {path}",
                code="method_not_allowed",
                headers={"Allow": ", ".join(sorted(methods))},  # required on a 405 (RFC 9110)
            )
        if path.startswith("/v1/"):
            self._check_auth(request.headers)
            if self.is_draining:
                raise service_unavailable("The server is shutting down.")
            if not self.is_ready:
                raise service_unavailable("The server is still loading its models; retry shortly.")
        return handler

    def _check_auth(self, headers: dict[str, str]) -> None:
        if self.api_key is None:
            return
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.api_key:
            raise APIError(
                401,
                "Incorrect or missing API key: send 'Authorization: Bearer <key>'.",
                code="invalid_api_key",
            )

    async def _run(self, handler: Handler, request: HTTPRequest, receive, send) -> int:
        """Runs the handler and sends its response; a client disconnect cancels both."""

        async def respond() -> int:
            try:
                response = await handler(request)
            except Exception as exc:  # noqa: BLE001 - typed errors get their answer, the rest 500
                where = f"{request.method} {request.path}"
                response = error_response(error_for(exc, request.model, where))
            await response.send(send)
            return response.status

        work = asyncio.create_task(respond())
        watcher = asyncio.create_task(_wait_for_disconnect(receive))
        try:
            await asyncio.wait((work, watcher), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            work.cancel()
            raise
        finally:
            watcher.cancel()
        if not work.done():
            # The client is gone: cancelling closes the engine generator, which aborts the request.
            work.cancel()
            try:
                await work
            except asyncio.CancelledError:
                pass
            return 499
        return work.result()


def _version() -> str:
    try:
        return importlib.metadata.version("swiftserve")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


_VERSION = _version()


async def _wait_for_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


# ---------------------------------------------------------------- small routes


async def _health(request: HTTPRequest) -> Response:
    app = request.app
    if app.is_draining:
        return JSONResponse(b'{"status":"shutting_down"}', status=503)
    if not app.is_ready:
        return JSONResponse(b'{"status":"loading"}', status=503)
    return JSONResponse(b'{"status":"ok"}')


async def _metrics(request: HTTPRequest) -> Response:
    body = request.app.metrics.render()
    return JSONResponse(body, headers=[(b"content-type", CONTENT_TYPE_LATEST.encode())])
