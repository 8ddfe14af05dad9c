"""A router with its models and the one device executor they step on, built from a RouterConfig.

The one builder behind `swiftserve launch` and the Python `Server`:
1. `RouterRuntime(config)` makes the executor and an empty router under the memory budget.
2. `start()` starts the executor, builds every model cold (files resolved, tokenizer and
   footprint known; in a worker thread, as this blocks) and registers it, then loads the pinned
   ones (router.start).
3. `stop()` shuts the router down (aborting what is in flight, unloading every model), then the
   executor.
"""

from __future__ import annotations

import asyncio
import logging
import time

from swiftserve.router.config_file import ModelConfig
from swiftserve.router.engine_configs import engine_config
from swiftserve.router.model_pool import ModelPool
from swiftserve.router.registry import ModelKind, detect_kind
from swiftserve.router.router import ColdStartHook, Router
from swiftserve.router.router_config import RouterConfig

from swiftserve.engine.device_executor import DeviceExecutor
from swiftserve.engine.served_model import ServedModel

logger = logging.getLogger("swiftserve.router")


class RouterRuntime:
    """See the module docstring."""

    def __init__(self, config: RouterConfig, on_cold_start: ColdStartHook | None = None) -> None:
        self.config = config
        self.executor = DeviceExecutor(name=config.device)
        self.router = Router(ModelPool(config.budget_bytes()), on_cold_start, config.default_max_tokens)

    async def start(self) -> None:
        """Registers every model and loads the pinned ones; raises if one cannot be served."""
        self.executor.start()
        for model in self.config.model_configs:
            kind = detect_kind(model.source)
            served = await asyncio.to_thread(served_model, model, kind, self.config, self.executor)
            self.router.add(served, model.policy, model.idle_timeout_s, model.priority, model.source)
        start = time.perf_counter()
        await self.router.start()
        logger.info("pinned models loaded in %.1f s", time.perf_counter() - start)

    async def stop(self) -> None:
        await self.router.shutdown()
        await asyncio.to_thread(self.executor.stop)


def served_model(
    model: ModelConfig, kind: ModelKind, config: RouterConfig, executor: DeviceExecutor
) -> ServedModel:
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
