"""The one path from what a user configured (flags or a config file) to each model's EngineConfig.

Flags and the config file both become `ModelConfig`s (config_file.py); process-wide flags are
`ServeDefaults`; `engine_config` merges the two, a model's own setting winning. A dtype stays
"auto" here: what it means depends on the source (a snapshot's stored dtype), and the loader
decides it, in one place (loader/dtypes.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from swiftserve.router.config_file import DEFAULT_IDLE_TIMEOUT_S, ConfigError, ModelConfig, Policy
from swiftserve.router.registry import ModelSpec
from swiftserve.scheduler.config import SchedulerConfig

from swiftserve.config import DEFAULT_GRAMMAR_COMPILE_TIMEOUT_S, DTYPES, EngineConfig, ModelKind


@dataclass(frozen=True)
class ServeDefaults:
    """The process-wide engine settings of `swiftserve launch`; a model's own config wins."""

    dtype: str = "auto"
    device: str = "auto"
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    max_model_len: int | None = None
    max_queue: int | None = None
    kv_cache_memory: int | None = None
    seed: int | None = None  # None: fresh entropy per load (EngineConfig.seed)
    snapshot_cache: str | None = None  # automatic snapshots of chat and embedding models there (None: off)
    grammar_compile_timeout_s: float = DEFAULT_GRAMMAR_COMPILE_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype: one of {DTYPES}, got {self.dtype!r}")
        if self.max_queue is not None and self.max_queue < 0:
            raise ConfigError(f"max_queue: must be >= 0, got {self.max_queue}")


def engine_config(model: ModelConfig, kind: ModelKind, defaults: ServeDefaults) -> EngineConfig:
    """The EngineConfig of one served model (chat or embedding)."""
    max_model_len = model.max_model_len or defaults.max_model_len
    max_waiting = model.max_queue if model.max_queue is not None else defaults.max_queue
    if kind == "embedding" and max_waiting is not None:
        max_waiting = max(1, max_waiting)  # an encoder counts the running call among the waiting
    scheduler: dict[str, Any] = {
        "max_num_seqs": model.max_num_seqs or defaults.max_num_seqs,
        "max_num_batched_tokens": model.max_num_batched_tokens or defaults.max_num_batched_tokens,
        "max_model_len": max_model_len,
        "max_num_waiting": max_waiting,
    }
    return EngineConfig(
        model=model.source,
        dtype=model.dtype if model.dtype != "auto" else defaults.dtype,
        device=defaults.device,
        kv_cache_memory=defaults.kv_cache_memory,
        max_model_len=max_model_len,
        scheduler=SchedulerConfig(**{k: v for k, v in scheduler.items() if v is not None}),
        seed=defaults.seed,
        snapshot_cache=defaults.snapshot_cache,
        grammar_compile_timeout_s=defaults.grammar_compile_timeout_s,
    )


def models_from_flags(
    pinned: tuple[str, ...], on_demand: tuple[str, ...] = (), idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
) -> tuple[ModelConfig, ...]:
    """`--models a,b` (pinned) and `--on-demand c,name=path` as ModelConfigs; the same specs."""
    configs = [_from_spec(text, "pinned", None) for text in pinned]
    configs += [_from_spec(text, "on-demand", idle_timeout_s) for text in on_demand]
    if not configs:
        raise ConfigError("--models / --on-demand: at least one model is needed")
    names = [c.name for c in configs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"models served twice under {duplicates}: name them with served_name=spec")
    return tuple(configs)


def _from_spec(text: str, policy: Policy, idle_timeout_s: float | None) -> ModelConfig:
    spec = ModelSpec.parse(text)
    return ModelConfig(spec.served_name, spec.source, policy, idle_timeout_s)
