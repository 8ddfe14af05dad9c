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
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

import uvicorn

from swiftserve.engine.device_executor import DeviceExecutor
from swiftserve.router.config_file import DEFAULT_IDLE_TIMEOUT_S, ConfigError, ModelConfig, load_config_file
from swiftserve.router.engine_configs import ServeDefaults, engine_config, models_from_flags
from swiftserve.router.model_pool import ModelPool
from swiftserve.router.registry import ModelRegistry, ServedModel, detect_kind
from swiftserve.router.router import Router
from swiftserve.scheduler.memory_budget import default_cpu_budget, parse_bytes
from swiftserve.server.app import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_TOKENS, App

logger = logging.getLogger("swiftserve.launch")

DEFAULT_MODELS = ("smollm2-135m-instruct", "all-minilm-l6-v2")
DEFAULT_CUDA_FRACTION = 0.9  # of the free device memory: the rest is the CUDA context's and torch's


@dataclass(frozen=True)
class ServeConfig:
    """Everything `swiftserve launch` takes. Models come from --config, or from --models (pinned)
    and --on-demand; with none of them, the defaults are served pinned."""

    models: tuple[str, ...] | None = None
    on_demand: tuple[str, ...] | None = None
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    memory_budget: int | None = None  # None: the file's, else default_budget()
    config_file: str | None = None
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
    model_configs: tuple[ModelConfig, ...] = field(default=(), compare=False)
    file_budget: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.default_max_tokens < 1:
            raise ValueError(f"default_max_tokens must be >= 1, got {self.default_max_tokens}")
        if self.max_queue is not None and self.max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {self.max_queue}")
        models, file_budget = self._models()
        object.__setattr__(self, "model_configs", models)
        object.__setattr__(self, "file_budget", file_budget)

    def _models(self) -> tuple[tuple[ModelConfig, ...], int | None]:
        if self.config_file is not None:
            if self.models is not None or self.on_demand is not None:
                raise ConfigError("--config: list the models in the file or in the flags, not both")
            file = load_config_file(self.config_file)
            budget = None if file.memory_budget is None else parse_bytes(file.memory_budget)
            return file.models, budget
        pinned = self.models if self.models is not None or self.on_demand else DEFAULT_MODELS
        return models_from_flags(tuple(pinned or ()), tuple(self.on_demand or ()), self.idle_timeout_s), None

    def defaults(self) -> ServeDefaults:
        return ServeDefaults(
            dtype=self.dtype,
            device=self.device,
            max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens,
            max_model_len=self.max_model_len,
            max_queue=self.max_queue,
            kv_cache_memory=self.kv_cache_memory,
        )

    def budget_bytes(self) -> int:
        return self.memory_budget or self.file_budget or default_budget(self.device)


def default_budget(device: str) -> int:
    """A share of what is free: RAM on CPU, device memory on CUDA."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return int(free * DEFAULT_CUDA_FRACTION)
    return default_cpu_budget()


def served_model(model: ModelConfig, kind: str, config: ServeConfig, executor: DeviceExecutor):
    """One model, cold: its files resolved (pulled once, here, never on the request path), its
    tokenizer and footprint known, nothing heavy in memory. Blocking: run in a worker thread."""
    engine_cfg = engine_config(model, kind, config.defaults())
    if kind == "embedding":
        from swiftserve.engine.embedding_model import LocalEmbeddingModel

        max_waiting = engine_cfg.scheduler.max_num_waiting
        return LocalEmbeddingModel(
            model.name,
            engine_cfg.model,
            executor,
            dtype=engine_cfg.dtype,
            device=engine_cfg.device,
            max_num_waiting=None if max_waiting is None else max(1, max_waiting),
        )
    from swiftserve.engine.chat_model import LocalChatModel

    return LocalChatModel(model.name, engine_cfg, executor)


async def load_models(app: App, config: ServeConfig, executor: DeviceExecutor) -> None:
    """Registers every model with the router, loads the pinned ones, then marks the app ready."""
    router = app.router
    for model in config.model_configs:
        kind = detect_kind(model.source)
        served = await asyncio.to_thread(served_model, model, kind, config, executor)
        router.add(served, model.policy, model.idle_timeout_s, model.priority)
        handle = router.handle(model.name)
        app.registry.add(ServedModel(model.name, kind, handle, model.source, int(time.time())))
    start = time.perf_counter()
    await router.start()
    logger.info("pinned models loaded in %.1f s", time.perf_counter() - start)
    app.is_ready = True


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
    executor = DeviceExecutor(name=config.device)

    def on_cold_start(name: str, seconds: float) -> None:
        app.metrics.cold_start.labels(name).observe(seconds)

    router = Router(ModelPool(config.budget_bytes()), on_cold_start)

    async def on_startup(app: App) -> None:
        try:
            executor.start()
            await load_models(app, config, executor)
        except Exception as exc:  # noqa: BLE001 - reported, then the server exits
            logger.debug("model loading failed", exc_info=True)
            print(f"swiftserve: failed to load models: {exc}", file=sys.stderr, flush=True)
            server.exit_code = 1
            server.should_exit = True
            return
        while not server.bound.is_set() and not server.should_exit:
            await asyncio.sleep(0.01)
        if not server.should_exit:
            print(ready_line(config, server.port(), router), flush=True)

    app = App(
        ModelRegistry(),
        api_key=config.api_key,
        max_body_bytes=config.max_body_bytes,
        on_startup=on_startup,
        default_max_tokens=config.default_max_tokens,
        fingerprint_info=f"dtype={config.dtype} device={config.device}",
        router=router,
        on_shutdown=executor.stop,
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
