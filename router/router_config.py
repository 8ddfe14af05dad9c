"""What a router serves and how: the models (flags or a config file), the memory budget and the
engine defaults. `swiftserve launch` (server/launch.py's ServeConfig adds the HTTP settings) and
the Python `Server` both take this, so the same words configure both."""

from __future__ import annotations

from dataclasses import dataclass, field

from swiftserve.router.config_file import DEFAULT_IDLE_TIMEOUT_S, ConfigError, ModelConfig, load_config_file
from swiftserve.router.engine_configs import ServeDefaults, models_from_flags
from swiftserve.router.prompts import DEFAULT_MAX_TOKENS
from swiftserve.scheduler.memory_budget import default_cpu_budget, parse_bytes

from swiftserve.loader.resolve import default_cache_dir

DEFAULT_MODELS = ("smollm2-135m-instruct", "all-minilm-l6-v2")
DEFAULT_CUDA_FRACTION = 0.9  # of the free device memory: the rest is the CUDA context's and torch's


@dataclass(frozen=True)
class RouterConfig:
    """Models come from `config_file`, or from `models` (pinned) and `on_demand`; with none of
    them, DEFAULT_MODELS are served pinned. Resolved on construction into `model_configs`."""

    models: tuple[str, ...] | None = None
    on_demand: tuple[str, ...] | None = None
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    memory_budget: int | None = None  # None: the file's, else default_budget()
    host_memory: int | None = None  # bytes for parked weights; None: the file's, else 0 (off)
    config_file: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    max_model_len: int | None = None
    max_queue: int | None = None
    kv_cache_memory: int | None = None
    seed: int | None = None  # each engine's, for requests without one; None: fresh per load
    default_max_tokens: int = DEFAULT_MAX_TOKENS  # for requests that set no max_tokens
    snapshots: bool = True  # automatic snapshots of chat and embedding models in the model cache
    model_configs: tuple[ModelConfig, ...] = field(default=(), compare=False)
    file_budget: int | None = field(default=None, compare=False)
    file_host_memory: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.default_max_tokens < 1:
            raise ValueError(f"default_max_tokens must be >= 1, got {self.default_max_tokens}")
        if self.max_queue is not None and self.max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {self.max_queue}")
        if self.host_memory is not None and self.host_memory < 0:
            raise ValueError(f"host_memory must be >= 0, got {self.host_memory}")
        models, file_budget, file_host_memory = self._models()
        object.__setattr__(self, "model_configs", models)
        object.__setattr__(self, "file_budget", file_budget)
        object.__setattr__(self, "file_host_memory", file_host_memory)

    def _models(self) -> tuple[tuple[ModelConfig, ...], int | None, int]:
        if self.config_file is not None:
            if self.models is not None or self.on_demand is not None:
                raise ConfigError("--config: list the models in the file or in the flags, not both")
            file = load_config_file(self.config_file)
            budget = None if file.memory_budget is None else parse_bytes(file.memory_budget)
            return file.models, budget, file.host_memory
        pinned = self.models if self.models is not None or self.on_demand else DEFAULT_MODELS
        flags = models_from_flags(tuple(pinned or ()), tuple(self.on_demand or ()), self.idle_timeout_s)
        return flags, None, 0

    def defaults(self) -> ServeDefaults:
        return ServeDefaults(
            dtype=self.dtype,
            device=self.device,
            max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens,
            max_model_len=self.max_model_len,
            max_queue=self.max_queue,
            kv_cache_memory=self.kv_cache_memory,
            seed=self.seed,
            snapshot_cache=str(default_cache_dir()) if self.snapshots else None,
        )

    def budget_bytes(self) -> int:
        return self.memory_budget or self.file_budget or default_budget(self.device)

    def host_budget_bytes(self) -> int:
        """Host memory for parked weights: --host-memory, else the file's, else 0 (off)."""
        return self.host_memory if self.host_memory is not None else self.file_host_memory


def default_budget(device: str) -> int:
    """A share of what is free: RAM on CPU, device memory on CUDA."""
    import torch  # only to ask CUDA; the config itself stays light

    if device != "cpu" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return int(free * DEFAULT_CUDA_FRACTION)
    return default_cpu_budget()
