"""What a router serves and how: the models, the memory budgets and the engine defaults, as one
plain frozen value. `from_flags()` builds it from `--models` / `--on-demand` specs (the defaults
when none are given), `from_file()` from a config file (reading it there, never in a constructor).
`swiftserve launch` (server/launch.py's ServeConfig adds the HTTP settings) and the Python
`Server` both build it this way, so the same words configure both."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swiftserve.router.config_file import (
    DEFAULT_IDLE_TIMEOUT_S,
    ConfigError,
    FileConfig,
    ModelConfig,
    load_config_file,
)
from swiftserve.router.engine_configs import ServeDefaults, models_from_flags
from swiftserve.router.followers import FollowerConfig
from swiftserve.router.pipeline_spec import PipelineSpec
from swiftserve.router.prompts import DEFAULT_MAX_TOKENS
from swiftserve.scheduler.memory_budget import default_cpu_budget

from swiftserve.loader.resolve import default_cache_dir

DEFAULT_MODELS = ("smollm2-135m-instruct", "all-minilm-l6-v2")
DEFAULT_CUDA_FRACTION = 0.9  # of the free device memory: the rest is the CUDA context's and torch's


@dataclass(frozen=True)
class RouterConfig:
    """models: every served model. defaults: the engine settings a model's own entry does not set.
    memory_budget / host_memory: the flags' (None: the file's, else default_budget() and 0).
    file: the config file as read at start, when the models came from one (config_file).
    request_timeout_s: the timeout of requests that set none (None: they have none).
    chat_lanes: how many chat models step side by side on the device executor (None: its default,
    two on two cores or more; engine/device_executor.py). parallel_loads: how many model loads
    run at once, the others waiting in arrival and need order (None: no limit;
    scheduler/load_slots.py). followers: learning which model follows which in sessions and
    pre-warming the followers (None: the file's `followers:`, else FollowerConfig's defaults)."""

    models: tuple[ModelConfig, ...]
    defaults: ServeDefaults = field(default_factory=ServeDefaults)
    memory_budget: int | None = None
    host_memory: int | None = None
    default_max_tokens: int = DEFAULT_MAX_TOKENS  # for requests that set no max_tokens
    config_file: str | None = None
    file: FileConfig | None = None
    pipelines: tuple[PipelineSpec, ...] = ()  # the file's and those given in Python
    request_timeout_s: float | None = None
    chat_lanes: int | None = None
    parallel_loads: int | None = None
    followers: FollowerConfig | None = None

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("at least one model is needed")
        if self.chat_lanes is not None and self.chat_lanes < 1:
            raise ValueError(f"chat_lanes must be >= 1 or None, got {self.chat_lanes}")
        if self.parallel_loads is not None and self.parallel_loads < 1:
            raise ValueError(f"parallel_loads must be >= 1 or None, got {self.parallel_loads}")
        if self.request_timeout_s is not None and not self.request_timeout_s > 0:
            raise ConfigError(f"request_timeout: must be > 0 seconds, got {self.request_timeout_s}")
        if self.default_max_tokens < 1:
            raise ValueError(f"default_max_tokens must be >= 1, got {self.default_max_tokens}")
        if self.host_memory is not None and self.host_memory < 0:
            raise ValueError(f"host_memory must be >= 0, got {self.host_memory}")
        if self.memory_budget is not None and self.memory_budget < 1:
            raise ValueError(f"memory_budget must be positive bytes, got {self.memory_budget}")
        if (self.file is None) != (self.config_file is None):
            raise ValueError("file and config_file come together (RouterConfig.from_file)")

    @classmethod
    def from_flags(
        cls,
        models: tuple[str, ...] | None = None,
        on_demand: tuple[str, ...] | None = None,
        *,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        memory_budget: int | None = None,
        host_memory: int | None = None,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        snapshots: bool = True,
        pipelines: tuple[PipelineSpec, ...] = (),
        request_timeout_s: float | None = None,
        chat_lanes: int | None = None,
        parallel_loads: int | None = None,
        followers: FollowerConfig | None = None,
        **engine_defaults: Any,
    ) -> RouterConfig:
        """`models` pinned and `on_demand` specs; with neither, DEFAULT_MODELS pinned.
        snapshots: automatic snapshots in the model cache. engine_defaults: ServeDefaults' fields."""
        pinned = models if models is not None or on_demand else DEFAULT_MODELS
        specs = models_from_flags(tuple(pinned or ()), tuple(on_demand or ()), idle_timeout_s)
        defaults = _defaults(snapshots, engine_defaults)
        budgets = (memory_budget, host_memory)
        return cls(
            specs, defaults, *budgets, default_max_tokens, pipelines=tuple(pipelines),
            request_timeout_s=request_timeout_s, chat_lanes=chat_lanes, parallel_loads=parallel_loads,
            followers=followers,
        )  # fmt: skip

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        memory_budget: int | None = None,
        host_memory: int | None = None,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        snapshots: bool = True,
        pipelines: tuple[PipelineSpec, ...] = (),
        request_timeout_s: float | None = None,
        chat_lanes: int | None = None,
        parallel_loads: int | None = None,
        followers: FollowerConfig | None = None,
        **engine_defaults: Any,
    ) -> RouterConfig:
        """The models and pipelines of a config file (ConfigError naming the file and key), and
        `pipelines` beside the file's; a budget given here wins over the file's, a model's own
        engine setting over engine_defaults."""
        file = load_config_file(path)
        defaults = _defaults(snapshots, engine_defaults)
        every = file.pipelines + tuple(pipelines)
        budgets = (memory_budget, host_memory)
        return cls(
            file.models, defaults, *budgets, default_max_tokens, str(path), file, every, request_timeout_s,
            chat_lanes, parallel_loads, followers,
        )  # fmt: skip

    @classmethod
    def build(
        cls,
        models: tuple[str, ...] | None = None,
        on_demand: tuple[str, ...] | None = None,
        *,
        config_file: str | Path | None = None,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        **settings: Any,
    ) -> RouterConfig:
        """from_file when config_file is given (then the models must come from it), else
        from_flags: what `swiftserve launch` and `Server` take, in one place."""
        if config_file is None:
            return cls.from_flags(models, on_demand, idle_timeout_s=idle_timeout_s, **settings)
        if models is not None or on_demand is not None:
            raise ConfigError("--config: list the models in the file or in the flags, not both")
        return cls.from_file(config_file, **settings)

    def budget_bytes(self) -> int:
        """The memory budget: the flag's, else the file's, else a share of what is free."""
        file_budget = self.file.memory_budget if self.file is not None else None
        return self.memory_budget or file_budget or default_budget(self.defaults.device)

    def host_budget_bytes(self) -> int:
        """Host memory for parked weights: the flag's, else the file's, else 0 (off)."""
        if self.host_memory is not None:
            return self.host_memory
        return self.file.host_memory if self.file is not None else 0

    def settings_changed_in(self, file: FileConfig) -> tuple[str, ...]:
        """The top-level keys whose value in `file` (a re-read of config_file) differs from what
        is applied; a setting a flag overrides is not applied from the file, so it never counts."""
        if self.file is None:
            return ()
        changed = []
        if self.memory_budget is None and file.memory_budget != self.file.memory_budget:
            changed.append("memory_budget")
        if self.host_memory is None and file.host_memory != self.file.host_memory:
            changed.append("host_memory")
        if file.idle_timeout_s != self.file.idle_timeout_s:
            changed.append("idle_timeout")
        if self.followers is None and file.followers != self.file.followers:
            changed.append("followers")
        return tuple(changed)

    def follower_config(self) -> FollowerConfig:
        """The followers setting that applies: the given one, else the file's, else the default."""
        if self.followers is not None:
            return self.followers
        return self.file.followers if self.file is not None and self.file.followers else FollowerConfig()


def _defaults(snapshots: bool, engine_defaults: dict[str, Any]) -> ServeDefaults:
    snapshot_cache = str(default_cache_dir()) if snapshots else None
    return ServeDefaults(snapshot_cache=snapshot_cache, **engine_defaults)


def default_budget(device: str) -> int:
    """A share of what is free: RAM on CPU, device memory on CUDA."""
    import torch  # only to ask CUDA; the config itself stays light

    if device != "cpu" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return int(free * DEFAULT_CUDA_FRACTION)
    return default_cpu_budget()
