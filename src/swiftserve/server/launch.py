"""`swiftserve launch`: load the models, serve the app with uvicorn, shut down cleanly.

1. uvicorn binds the socket and runs the app's lifespan startup, which starts loading the models
   in the background (so /health answers 503 "loading" meanwhile).
2. Each model is built in a worker thread (loading takes seconds) and its engine started; once
   all are in the registry and the socket is bound, ONE ready line is printed.
3. SIGINT / SIGTERM: the app stops taking requests and shuts the engines down, which aborts what
   is in flight (streams end with an error event); uvicorn then closes the connections. A second
   SIGINT forces the exit. The process exits 0 after a signal, 1 if a model failed to load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

import uvicorn

from swiftserve.router.registry import ModelRegistry, ModelSpec, ServedModel
from swiftserve.server.app import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_TOKENS, App

logger = logging.getLogger("swiftserve.launch")

DEFAULT_MODELS = ("smollm2-135m-instruct", "all-minilm-l6-v2")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_bytes(text: str) -> int:
    """'536870912', '512MiB', '1.5GB', '2g' -> bytes (KiB/MiB/GiB are powers of 1024)."""
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"not a size: {text!r} (try e.g. 512MiB or 2GiB)")
    number, unit = float(match.group(1)), (match.group(2) or "").lower()
    if "i" in unit:
        scale = 1024 ** ("kmgt".index(unit[0]) + 1)
    else:
        scale = _UNITS[unit.rstrip("b") if unit != "b" else "b"]
    value = int(number * scale)
    if value <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    return value


@dataclass(frozen=True)
class ServeConfig:
    """Everything `swiftserve launch` takes; engines get their part of it."""

    models: tuple[str, ...] = DEFAULT_MODELS
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    max_model_len: int | None = None
    max_queue: int | None = None
    kv_cache_memory: int | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    default_max_tokens: int = DEFAULT_MAX_TOKENS  # for chat requests that set no max_tokens
    specs: tuple[ModelSpec, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("at least one model is needed")
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.default_max_tokens < 1:
            raise ValueError(f"default_max_tokens must be >= 1, got {self.default_max_tokens}")
        if self.max_queue is not None and self.max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {self.max_queue}")
        specs = tuple(ModelSpec.parse(m) for m in self.models)
        names = [s.served_name for s in specs]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(
                f"models served twice under {sorted(duplicates)}: name them with served_name=spec"
            )
        object.__setattr__(self, "specs", specs)


def build_engine(spec: ModelSpec, config: ServeConfig):
    """Constructs (loads) one engine; blocking, so called in a worker thread."""
    if spec.kind == "embedding":
        from swiftserve.engine.embedding_engine import EmbeddingEngine

        max_waiting = None if config.max_queue is None else max(1, config.max_queue)
        dtype = "float32" if config.dtype == "auto" else config.dtype
        return EmbeddingEngine(spec.source, dtype=dtype, device=config.device, max_num_waiting=max_waiting)

    from swiftserve.config import EngineConfig
    from swiftserve.engine.async_engine import AsyncEngine
    from swiftserve.scheduler.config import SchedulerConfig

    scheduler_kwargs = {
        "max_num_seqs": config.max_num_seqs,
        "max_num_batched_tokens": config.max_num_batched_tokens,
        "max_model_len": config.max_model_len,
        "max_num_waiting": config.max_queue,
    }
    scheduler = SchedulerConfig(**{k: v for k, v in scheduler_kwargs.items() if v is not None})
    engine_config = EngineConfig(
        model=spec.source,
        dtype=config.dtype,
        device=config.device,
        kv_cache_memory=config.kv_cache_memory,
        max_model_len=config.max_model_len,
        scheduler=scheduler,
    )
    return AsyncEngine(engine_config)


async def load_models(app: App, config: ServeConfig) -> None:
    """Loads every model into the app's registry, then marks the app ready."""
    for spec in config.specs:
        start = time.perf_counter()
        engine = await asyncio.to_thread(build_engine, spec, config)
        await engine.start()
        app.registry.add(ServedModel(spec.served_name, spec.kind, engine, spec.source, int(time.time())))
        logger.info("loaded %s (%s) in %.1f s", spec.served_name, spec.kind, time.perf_counter() - start)
    app.is_ready = True


def ready_line(config: ServeConfig, port: int, registry: ModelRegistry) -> str:
    models = ", ".join(f"{m.name} ({m.kind})" for m in registry.models())
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

    async def on_startup(app: App) -> None:
        try:
            await load_models(app, config)
        except Exception as exc:  # noqa: BLE001 - reported, then the server exits
            logger.debug("model loading failed", exc_info=True)
            print(f"swiftserve: failed to load models: {exc}", file=sys.stderr, flush=True)
            server.exit_code = 1
            server.should_exit = True
            return
        while not server.bound.is_set() and not server.should_exit:
            await asyncio.sleep(0.01)
        if not server.should_exit:
            print(ready_line(config, server.port(), app.registry), flush=True)

    app = App(
        ModelRegistry(),
        api_key=config.api_key,
        max_body_bytes=config.max_body_bytes,
        on_startup=on_startup,
        default_max_tokens=config.default_max_tokens,
        fingerprint_info=f"dtype={config.dtype} device={config.device}",
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
