"""A router with its models and the one device executor they step on, built from a RouterConfig.

The one builder behind `swiftserve launch` and the Python `Server`:
1. `RouterRuntime(config)` makes the executor and an empty router under the memory budget.
2. `start()` starts the executor, builds every model cold (files resolved, tokenizer and
   footprint known; in a worker thread, as this blocks) and registers it, then loads the pinned
   ones (router.start).
3. `reload_config()` re-reads the config file and adds the models it names that are not served
   yet (cold; pinned ones are loaded), without a restart. Models whose entry changed or that left
   the file are reported, not touched: swapping a model under requests in flight is a restart.
4. `stop()` shuts the router down (aborting what is in flight, unloading every model), then the
   executor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from swiftserve.router import errors
from swiftserve.router.config_file import ModelConfig, load_config_file
from swiftserve.router.engine_configs import engine_config
from swiftserve.router.model_pool import ModelPool
from swiftserve.router.registry import ModelKind, detect_kind
from swiftserve.router.router import ColdStartHook, Router
from swiftserve.router.router_config import RouterConfig

from swiftserve.engine.device_executor import DeviceExecutor
from swiftserve.engine.served_model import ServedModel

logger = logging.getLogger("swiftserve.router")


@dataclass(frozen=True)
class ReloadResult:
    """What a config reload did, by model name."""

    added: tuple[str, ...]
    unchanged: tuple[str, ...]
    needs_restart: tuple[str, ...]  # changed or removed in the file: served as before


class RouterRuntime:
    """See the module docstring."""

    def __init__(self, config: RouterConfig, on_cold_start: ColdStartHook | None = None) -> None:
        self.config = config
        self.executor = DeviceExecutor(name=config.device)
        pool = ModelPool(config.budget_bytes(), host_budget_bytes=config.host_budget_bytes())
        self.router = Router(pool, on_cold_start, config.default_max_tokens)
        self._served: dict[str, ModelConfig] = {}
        self._reload_lock = asyncio.Lock()

    async def start(self) -> None:
        """Registers every model and loads the pinned ones; raises if one cannot be served."""
        self.executor.start()
        for model in self.config.model_configs:
            await self._add(model)
        start = time.perf_counter()
        await self.router.start()
        logger.info("pinned models loaded in %.1f s", time.perf_counter() - start)

    async def reload_config(self) -> ReloadResult:
        """Adds the config file's new models (see the module docstring); ConfigError for a bad
        file (nothing added), NoConfigFileError without one."""
        if self.config.config_file is None:
            raise errors.NoConfigFileError()
        async with self._reload_lock:
            file = await asyncio.to_thread(load_config_file, self.config.config_file)
            before, listed = dict(self._served), {model.name: model for model in file.models}
            new = [model for name, model in listed.items() if name not in before]
            kept = [name for name in listed if name in before]
            changed = [name for name in kept if before[name] != listed[name]]
            removed = [name for name in before if name not in listed]
            for model in new:
                await self._add(model)
                if model.policy == "pinned":
                    await self.router.load(model.name)
            unchanged = tuple(name for name in kept if name not in changed)
            result = ReloadResult(tuple(m.name for m in new), unchanged, tuple(changed + removed))
        if result.needs_restart:
            restart = list(result.needs_restart)
            logger.warning("config reload: %s changed or left the file; a restart applies that", restart)
        logger.info("config reload: added %s", list(result.added) or "nothing")
        return result

    async def _add(self, model: ModelConfig) -> None:
        kind = detect_kind(model.source)
        served = await asyncio.to_thread(served_model, model, kind, self.config, self.executor)
        self.router.add(
            served, model.policy, model.idle_timeout_s, model.priority, model.source, model.unload_to
        )
        self._served[model.name] = model

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
            snapshot_cache=engine_cfg.snapshot_cache,
        )
    from swiftserve.engine.chat_model import LocalChatModel

    return LocalChatModel(model.name, engine_cfg, executor)
