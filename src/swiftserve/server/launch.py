"""`swiftserve launch`: load the models, serve the app with uvicorn, shut down cleanly.

1. uvicorn binds the socket and runs the app's lifespan startup, which starts loading the models
   in the background (so /health answers 503 "loading" meanwhile).
2. router/runtime.py (the builder the Python `Server` shares) builds each model cold in a worker
   thread and loads the pinned ones; once they are resident and the socket is bound, ONE ready
   line is printed.
3. SIGINT / SIGTERM: the app stops taking requests and shuts the engines down, which aborts what
   is in flight (streams end with an error event); uvicorn then closes the connections. A second
   SIGINT forces the exit. The process exits 0 after a signal, 1 if a model failed to load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from dataclasses import dataclass

import uvicorn

from swiftserve.router.prompts import DEFAULT_MAX_TOKENS
from swiftserve.router.router import Router
from swiftserve.router.router_config import DEFAULT_MODELS, RouterConfig
from swiftserve.router.runtime import RouterRuntime
from swiftserve.server.app import DEFAULT_MAX_BODY_BYTES, App

logger = logging.getLogger("swiftserve.launch")

# Re-exported: the CLI's defaults are the router's.
__all__ = ["DEFAULT_MAX_TOKENS", "DEFAULT_MODELS", "ServeConfig", "serve"]


@dataclass(frozen=True)
class ServeConfig:
    """Everything `swiftserve launch` takes: what the router serves (RouterConfig: models from
    --config, or --models (pinned) and --on-demand, defaults without them) plus the HTTP side."""

    router: RouterConfig
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")


def ready_line(config: ServeConfig, port: int, router: Router) -> str:
    models = ", ".join(f"{m.name} ({m.kind}, {m.policy}, {m.state})" for m in router.models())
    auth = " (API key required)" if config.api_key else ""
    return f"swiftserve ready: http://{config.host}:{port}/v1 serving {models}{auth}"


class _Server(uvicorn.Server):
    """uvicorn, plus: start aborting in-flight work on the first signal; exit 0 after it."""

    def __init__(self, uv_config: uvicorn.Config, app: App) -> None:
        super().__init__(uv_config)
        self.swift_app = app
        self.loop: asyncio.AbstractEventLoop | None = None
        self.bound = threading.Event()
        self.exit_code = 0

    async def startup(self, sockets=None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)
        if not self.should_exit:
            self.bound.set()

    @contextlib.contextmanager
    def capture_signals(self):
        # uvicorn re-raises the signal after its shutdown (the process then dies of it); a
        # clean exit code is nicer for a CLI, so install handlers without that.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig, frame) -> None:
        if self.loop is not None and not self.swift_app.is_draining:
            self.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self.swift_app.begin_shutdown()))
        super().handle_exit(sig, frame)

    def port(self) -> int:
        for server in self.servers:
            for sock in server.sockets:
                return sock.getsockname()[1]
        return self.config.port


def serve(config: ServeConfig) -> int:
    """Runs the server until a signal; returns the process exit code."""
    server: _Server | None = None

    def on_cold_start(name: str, seconds: float) -> None:
        app.metrics.cold_start.labels(name).observe(seconds)

    runtime = RouterRuntime(config.router, on_cold_start)

    async def on_startup(app: App) -> None:
        assert server is not None  # built below, before uvicorn runs the startup
        try:
            await runtime.start()
        except Exception as exc:  # noqa: BLE001 - reported, then the server exits
            logger.debug("model loading failed", exc_info=True)
            print(f"swiftserve: failed to load models: {exc}", file=sys.stderr, flush=True)
            server.exit_code = 1
            server.should_exit = True
            return
        app.is_ready = True
        while not server.bound.is_set() and not server.should_exit:
            await asyncio.sleep(0.01)
        if not server.should_exit:
            print(ready_line(config, server.port(), runtime.router), flush=True)

    app = App(
        runtime.router,
        api_key=config.api_key,
        max_body_bytes=config.max_body_bytes,
        on_startup=on_startup,
        fingerprint_info=f"dtype={config.router.defaults.dtype} device={config.router.defaults.device}",
        on_shutdown=runtime.executor.stop,
        reload_config=runtime.reload_config if config.router.config_file else None,
    )
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    server = _Server(uv_config, app)
    server.run()
    if not server.bound.is_set() and server.exit_code == 0:
        return 1  # could not bind (uvicorn logged why)
    return server.exit_code
