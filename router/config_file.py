"""`swiftserve launch --config swiftserve.yaml`: the file's schema, validated with errors naming the key.

A file looks like:

    memory_budget: 6GiB        # one budget for every model's weights and KV cache
    host_memory: 2GiB          # host memory for parked weights (default 0: unloads free everything)
    idle_timeout: 60s          # default for on-demand models (scale to zero after it)
    models:
      - name: chat
        source: smollm2-135m-instruct
        policy: pinned         # dedicated: loaded at start, never evicted
      - name: embed
        source: all-minilm-l6-v2
        policy: on-demand      # serverless: loaded on first request, unloaded when idle
        idle_timeout: 30s
        dtype: float32
        unload_to: disk        # auto (default): host memory when it has room, else disk; or host
        request_priority: 0    # of its requests that set none: lower runs earlier (vLLM's sense)
        max_queue: 16          # requests waiting (for the engine, or for a load) before 429
        max_num_batched_tokens: 16   # its own step budget (default: --max-num-batched-tokens)

YAML is parsed by PyYAML through msgspec, which also checks types and unknown keys; the
result is converted to the frozen `ModelConfig` dataclasses the rest of swiftserve takes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
import msgspec.yaml
from swiftserve.router.followers import FollowerConfig
from swiftserve.router.pipeline_file import PipelineEntry, pipeline_specs
from swiftserve.router.pipeline_spec import PipelineError, PipelineSpec
from swiftserve.router.registry import default_served_name
from swiftserve.scheduler.memory_budget import parse_bytes

from swiftserve.config import DTYPES

Policy = Literal["pinned", "on-demand"]
Dtype = Literal[DTYPES]  # type: ignore[valid-type]  # the one list of names, as a Literal for msgspec
UnloadTo = Literal["auto", "host", "disk"]
POLICIES: tuple[str, ...] = ("pinned", "on-demand")
UNLOAD_TO: tuple[str, ...] = ("auto", "host", "disk")
DEFAULT_IDLE_TIMEOUT_S = 60.0

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_SCALE = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class ConfigError(ValueError):
    """A config file or flag that cannot be served; the message names the key."""


def parse_duration(value: str | float | int, key: str = "duration") -> float:
    """'250ms', '60s', '5m', '1h' or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration such as 60s or 5m, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ConfigError(f"{key}: expected a duration such as 60s or 5m, got {value!r}")
        seconds = float(match.group(1)) * _DURATION_SCALE[match.group(2)]
    if seconds < 0:
        raise ConfigError(f"{key}: a duration must be >= 0, got {value!r}")
    return seconds


@dataclass(frozen=True)
class ModelConfig:
    """One served model: what to load, under which name, how it stays resident, and how its
    requests are admitted. Two priorities, in opposite senses: `priority` orders evictions (the
    lower is evicted first), `request_priority` is its requests' default (the lower runs first)."""

    name: str
    source: str
    policy: Policy = "pinned"
    idle_timeout_s: float | None = DEFAULT_IDLE_TIMEOUT_S  # on-demand only; None: never unload
    dtype: Dtype = "auto"
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    # Its own step budget (chunked prefill): a large model's long steps hold every other model's
    # steps back on a shared device, so it can take short ones while small models keep the default.
    max_num_batched_tokens: int | None = None
    priority: int = 0
    unload_to: UnloadTo = "auto"  # where the weights go on unload (scheduler/host_tier.py)
    request_priority: int = 0
    max_queue: int | None = None  # waiting requests before 429 (None: the --max-queue default)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(
                f"models[].name: a served name must be non-empty without '/', got {self.name!r}"
            )
        if not self.source:
            raise ConfigError(f"models[{self.name}].source: empty")
        if self.policy not in POLICIES:
            raise ConfigError(f"models[{self.name}].policy: one of {POLICIES}, got {self.policy!r}")
        if self.unload_to not in UNLOAD_TO:
            raise ConfigError(f"models[{self.name}].unload_to: one of {UNLOAD_TO}, got {self.unload_to!r}")
        for key in ("max_model_len", "max_num_seqs", "max_num_batched_tokens"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"models[{self.name}].{key}: must be >= 1, got {value}")
        if self.max_queue is not None and self.max_queue < 0:
            raise ConfigError(f"models[{self.name}].max_queue: must be >= 0, got {self.max_queue}")


@dataclass(frozen=True)
class FileConfig:
    """What a config file holds, validated: the models and the process-wide settings it sets."""

    models: tuple[ModelConfig, ...]
    memory_budget: int | None = None  # bytes; None: the default share of free memory
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    host_memory: int = 0  # bytes for parked weights; 0: the host tier is off
    pipelines: tuple[PipelineSpec, ...] = ()  # router/pipeline_file.py
    followers: FollowerConfig | None = None  # the `followers:` section; None: not in the file


class _ModelEntry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str | None = None
    source: str
    policy: Policy = "pinned"
    idle_timeout: str | float | None = None
    dtype: Dtype = "auto"
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    priority: int = 0
    unload_to: UnloadTo = "auto"
    request_priority: int = 0
    max_queue: int | None = None


class _Followers(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    window: str | float = FollowerConfig.window_s
    min_support: int = FollowerConfig.min_support
    min_share: float = FollowerConfig.min_share


class _File(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    models: list[_ModelEntry]
    memory_budget: str | int | None = None
    idle_timeout: str | float = DEFAULT_IDLE_TIMEOUT_S
    host_memory: str | int = 0
    pipelines: list[PipelineEntry] = []
    followers: _Followers | None = None
    # How many swiftserve processes on Ray Serve (`launch --ray`): validated by swiftserve.ray's
    # replica_config.py, which the core never imports; a single-process launch ignores it.
    replicas: dict[str, Any] | None = None


def load_config_file(path: str | Path) -> FileConfig:
    """Reads and validates a YAML config file; ConfigError names the file and the key."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    return parse_config(raw, str(path), path.parent)


def parse_config(text: bytes | str, where: str = "config", base_dir: Path | None = None) -> FileConfig:
    """base_dir: where relative paths in the file (a pipeline's corpus) start; default the cwd."""
    try:
        file = msgspec.yaml.decode(text, type=_File)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{where}: {_with_yaml_keys(str(exc))}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{where}: not valid YAML ({exc})") from None
    try:
        return _convert(file, base_dir or Path.cwd())
    except (ConfigError, PipelineError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _convert(file: _File, base_dir: Path) -> FileConfig:
    if not file.models:
        raise ConfigError("models: at least one model is needed")
    default_idle = parse_duration(file.idle_timeout, "idle_timeout")
    models = tuple(_model(i, entry, default_idle) for i, entry in enumerate(file.models))
    names = [m.name for m in models]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"models: served twice under {duplicates}; give each a distinct name")
    host_memory = _size("host_memory", file.host_memory)
    for index, model in enumerate(models):
        if model.unload_to == "host" and not host_memory:
            raise ConfigError(f"models[{index}].unload_to: host needs host_memory (a size such as 2GiB)")
    budget = None if file.memory_budget is None else _size("memory_budget", file.memory_budget)
    if budget == 0:
        raise ConfigError("memory_budget: must be a positive size such as 6GiB, got 0")
    pipelines = pipeline_specs(file.pipelines, set(names), base_dir)
    followers = None if file.followers is None else _followers(file.followers)
    return FileConfig(models, budget, default_idle, host_memory, pipelines, followers)


def _followers(entry: _Followers) -> FollowerConfig:
    window = parse_duration(entry.window, "followers.window")
    try:
        return FollowerConfig(entry.enabled, window, entry.min_support, entry.min_share)
    except ValueError as exc:  # its messages name the key
        raise ConfigError(str(exc)) from None


def _size(key: str, value: str | int) -> int:
    try:
        return parse_bytes(value)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _model(index: int, entry: _ModelEntry, default_idle: float) -> ModelConfig:
    name = entry.name or default_served_name(entry.source)
    key = f"models[{index}].idle_timeout"
    idle = default_idle if entry.idle_timeout is None else parse_duration(entry.idle_timeout, key)
    if entry.idle_timeout is not None and entry.policy == "pinned":
        raise ConfigError(f"{key}: a pinned model is never unloaded; idle_timeout is for on-demand models")
    return ModelConfig(
        name=name,
        source=entry.source,
        policy=entry.policy,
        idle_timeout_s=idle if entry.policy == "on-demand" else None,
        dtype=entry.dtype,
        max_model_len=entry.max_model_len,
        max_num_seqs=entry.max_num_seqs,
        max_num_batched_tokens=entry.max_num_batched_tokens,
        priority=entry.priority,
        unload_to=entry.unload_to,
        request_priority=entry.request_priority,
        max_queue=entry.max_queue,
    )


def _with_yaml_keys(message: str) -> str:
    """msgspec says `$.models[0].policy`; the file's reader thinks in `models[0].policy`."""
    return re.sub(r"`\$\.?([^`]*)`", lambda m: f"`{m.group(1) or '(top level)'}`", message)
