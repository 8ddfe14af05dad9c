"""A router with its models and the one device executor they step on, built from a RouterConfig.

The one builder behind `swiftserve launch` and the Python `Server`:
1. `RouterRuntime(config)` makes the executor and an empty router under the memory budget.
2. `start()` starts the executor, builds every model cold (files fetched and converted once,
   with progress bars; tokenizer and footprint known; in a worker thread, as this blocks) and
   registers it, then loads the pinned ones (router.start).
3. `reload_config()` re-reads the config file and adds the models it names that are not served
   yet (cold; pinned ones are loaded), without a restart, all or none: when one of them cannot be
   built, does not fit the budget or fails to load, none is added. Models whose entry changed or
   that left the file, and changed process-wide settings (memory_budget, host_memory,
   idle_timeout), are reported, not applied: swapping them under requests in flight is a restart.
4. `stop()` shuts the router down (aborting what is in flight, unloading every model), then the
   executor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from swiftserve.router import errors
from swiftserve.router.config_file import ConfigError, ModelConfig, load_config_file
from swiftserve.router.engine_configs import engine_config
from swiftserve.router.followers import FollowerStats
from swiftserve.router.model_pool import ModelPool
from swiftserve.router.model_router import ColdStartHook
from swiftserve.router.pipeline_spec import PipelineError, PipelineSpec
from swiftserve.router.pool_entry import Registration
from swiftserve.router.router import Router
from swiftserve.router.router_config import RouterConfig

from swiftserve.engine.chat_model import LocalChatModel
from swiftserve.engine.device_executor import DeviceExecutor
from swiftserve.engine.embedding_model import LocalEmbeddingModel
from swiftserve.engine.memory import freeze_startup_heap, thaw_startup_heap
from swiftserve.engine.served_model import ServedModel
from swiftserve.loader.model_source import resolve_source

logger = logging.getLogger("swiftserve.router")


@dataclass(frozen=True)
class ReloadResult:
    """What a config reload did, by model name."""

    added: tuple[str, ...]
    unchanged: tuple[str, ...]
    needs_restart: tuple[str, ...]  # changed or removed in the file: served as before
    settings_need_restart: tuple[str, ...] = ()  # top-level keys whose change needs a restart


class RouterRuntime:
    """See the module docstring."""

    def __init__(self, config: RouterConfig, on_cold_start: ColdStartHook | None = None) -> None:
        self.config = config
        self.executor = DeviceExecutor(name=config.defaults.device, chat_lanes=config.chat_lanes)
        self._chat_weights: dict[str, int] = {}  # the executor's lane plan is made from these
        host = config.host_budget_bytes()
        pool = ModelPool(config.budget_bytes(), host_budget_bytes=host, parallel_loads=config.parallel_loads)
        self.router = Router(pool, on_cold_start, config.default_max_tokens, config.request_timeout_s)
        followers = config.follower_config()
        self.router.followers = FollowerStats(followers) if followers.enabled else None
        self._served: dict[str, ModelConfig] = {}
        self._file_pipelines: list[PipelineSpec] = []  # served from the config file
        self._reload_lock = asyncio.Lock()
        self._heap_frozen = False  # engine/memory.freeze_startup_heap, undone by stop

    async def start(self) -> None:
        """Registers every model and loads the pinned ones; raises if one cannot be served."""
        self.executor.start()
        await self._add_all(self.config.models)
        start = time.perf_counter()
        await self.router.start()
        logger.info("pinned models loaded in %.1f s", time.perf_counter() - start)
        for pipeline in self.config.pipelines:
            await self.router.add_pipeline(pipeline)
        self._file_pipelines = list(self.config.file.pipelines if self.config.file else ())
        if not self._heap_frozen:  # an unload's collection then walks what was made since
            freeze_startup_heap()
            self._heap_frozen = True

    async def reload_config(self) -> ReloadResult:
        """Adds the config file's new models (see the module docstring); ConfigError for a bad
        file (nothing added), NoConfigFileError without one."""
        if self.config.config_file is None:
            raise errors.NoConfigFileError()
        # The file's errors (a bad key, a budget its models never fit) as the router's.
        with errors.router_errors(None):
            return await self._reload(self.config.config_file)

    async def _reload(self, path: str) -> ReloadResult:
        async with self._reload_lock:
            file = await asyncio.to_thread(load_config_file, path)
            before, listed = dict(self._served), {model.name: model for model in file.models}
            new = [model for name, model in listed.items() if name not in before]
            kept = [name for name in listed if name in before]
            changed = [name for name in kept if before[name] != listed[name]]
            removed = [name for name in before if name not in listed]
            await self._add_all(new)
            await self._load_pinned_or_remove(new)
            pipelines = _compare(self._file_pipelines, file.pipelines)
            await self._add_pipelines_or_remove(pipelines.new, new)
            unchanged = tuple(name for name in kept if name not in changed) + pipelines.unchanged
            settings = self.config.settings_changed_in(file)
            restart = tuple(changed + removed) + pipelines.needs_restart
            added = tuple(m.name for m in new) + tuple(p.name for p in pipelines.new)
            result = ReloadResult(added, unchanged, restart, settings)
        if result.needs_restart or result.settings_need_restart:
            names = list(result.needs_restart + result.settings_need_restart)
            logger.warning("config reload: %s changed or left the file; a restart applies that", names)
        logger.info("config reload: added %s", list(result.added) or "nothing")
        return result

    async def _add_all(self, models: list[ModelConfig] | tuple[ModelConfig, ...]) -> None:
        """Builds every model cold, then registers them all or none."""
        registrations = []
        for model in models:
            served = await asyncio.to_thread(served_model, model, self.config, self.executor)
            registrations.append(_registration(served, model, self.config))
        self.router.add_all(registrations)
        self._served.update((model.name, model) for model in models)
        chat = [r.model for r in registrations if r.model.kind == "chat"]
        self._plan_lanes({model.name: model.footprint().weight_bytes for model in chat})

    def _plan_lanes(self, added: dict[str, int]) -> None:
        """Re-plans the chat lanes over every chat model served: the heaviest steps on a lane of
        its own (engine/device_executor.py). A model already stepping keeps its lane until it
        unloads; the plan applies from its next load."""
        self._chat_weights.update(added)
        plan = self.executor.plan_lanes(self._chat_weights)
        logger.info("chat lanes: %s", plan)

    async def _add_pipelines_or_remove(
        self, pipelines: list[PipelineSpec], models: list[ModelConfig]
    ) -> None:
        """Adds a reload's new pipelines; when one is refused, they and the reload's new models go."""
        added: list[str] = []
        try:
            for pipeline in pipelines:
                await self.router.add_pipeline(pipeline)
                added.append(pipeline.name)
        except PipelineError as exc:
            for name in added:
                self.router.pipelines.remove(name)
            for model in models:
                await self.router.remove(model.name)
                del self._served[model.name]
                self._chat_weights.pop(model.name, None)
            self._plan_lanes({})
            raise ConfigError(f"{self.config.config_file}: {exc}") from None
        self._file_pipelines += pipelines

    async def _load_pinned_or_remove(self, models: list[ModelConfig]) -> None:
        """Loads the pinned ones among freshly added models; on a failure all of them go again."""
        try:
            for model in models:
                if model.policy == "pinned":
                    await self.router.load(model.name)
        except BaseException:
            for model in models:
                await self.router.remove(model.name)
                del self._served[model.name]
                self._chat_weights.pop(model.name, None)
            self._plan_lanes({})
            raise

    async def stop(self) -> None:
        await self.router.shutdown()
        await asyncio.to_thread(self.executor.stop)
        if self._heap_frozen:
            thaw_startup_heap()
            self._heap_frozen = False


@dataclass(frozen=True)
class _Compared:
    new: list[PipelineSpec]
    unchanged: tuple[str, ...]
    needs_restart: tuple[str, ...]


def _compare(served_specs: list[PipelineSpec], listed_specs: tuple[PipelineSpec, ...]) -> _Compared:
    """The file's pipelines against those served from it: new, unchanged, changed or gone."""
    served = {spec.name: spec for spec in served_specs}
    listed = {spec.name: spec for spec in listed_specs}
    new = [spec for name, spec in listed.items() if name not in served]
    unchanged = tuple(name for name in listed if name in served and served[name] == listed[name])
    restart = tuple(name for name in served if name not in listed or served[name] != listed[name])
    return _Compared(new, unchanged, restart)


def _registration(served: ServedModel, model: ModelConfig, config: RouterConfig) -> Registration:
    """How the router serves `model`. Its engine's queue bound (the model's max_queue, else
    --max-queue: engine_configs.engine_config) also bounds the wait for its load."""
    max_queue = engine_config(model, served.kind, config.defaults).scheduler.max_num_waiting
    return Registration(
        served,
        model.policy,
        model.idle_timeout_s,
        model.priority,
        model.unload_to,
        model.source,
        model.request_priority,
        max_queue,
    )


def served_model(model: ModelConfig, config: RouterConfig, executor: DeviceExecutor) -> ServedModel:
    """One model, cold: its source resolved once (pulled once, here, never on the request path),
    its tokenizer and footprint known, nothing heavy in memory. Blocking: run in a worker thread."""
    # Fetched and converted with `swiftserve pull`'s progress bars: on an empty cache that takes
    # a first start many seconds, which silence would pass off as a hang.
    source = resolve_source(model.source)
    engine_cfg = engine_config(model, source.kind, config.defaults)
    served_class = LocalEmbeddingModel if source.kind == "embedding" else LocalChatModel
    return served_class(model.name, engine_cfg, executor, source)
