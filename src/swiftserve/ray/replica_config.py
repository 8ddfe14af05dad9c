"""The config file's `replicas:` section: how many swiftserve processes Ray Serve runs, and where.

    replicas:
      num_replicas: 2          # fixed count (or autoscaling below)
      num_cpus: 1              # Ray resources per replica (each is a whole multi-model server)
      num_gpus: 0
      memory: 4GiB             # optional: Ray's memory resource per replica
      max_ongoing_requests: 64 # per replica; past it Ray queues the request at the ingress
      groups:                  # optional: replicas where pinned models are pinned
        - name: chat
          num_replicas: 1
          pinned: [chat]       # pinned here; on-demand on the other replicas
      autoscaling:             # optional: replica count from our own signals (autoscale.py)
        min_replicas: 1
        max_replicas: 4
        target_queue_depth: 8  # requests in flight per replica
        target_ttft: 500ms     # one more replica while a replica's mean first token is slower
        upscale_delay: 30s     # how long a decision to add a replica must hold first (Ray's default)
        downscale_delay: 10m   # ... to remove one (Ray's default: replicas take seconds to start)

Decoded with msgspec (unknown keys and wrong types are errors naming the key), converted to the
frozen dataclasses below; every error is a ConfigError whose message starts with the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgspec
import msgspec.yaml

from swiftserve.ray.autoscale import ScalingTargets
from swiftserve.router.config_file import ConfigError, ModelConfig, parse_duration
from swiftserve.scheduler.memory_budget import parse_bytes

DEFAULT_MAX_ONGOING_REQUESTS = 64


@dataclass(frozen=True)
class ReplicaGroup:
    """`num_replicas` replicas (by rank: groups.py) on which the `pinned` models are pinned."""

    name: str
    num_replicas: int
    pinned: tuple[str, ...]


# Ray Serve's own defaults: a short burst does not start a replica, a short lull does not stop one.
DEFAULT_UPSCALE_DELAY_S = 30.0
DEFAULT_DOWNSCALE_DELAY_S = 600.0


@dataclass(frozen=True)
class Autoscaling:
    min_replicas: int
    max_replicas: int
    targets: ScalingTargets
    upscale_delay_s: float = DEFAULT_UPSCALE_DELAY_S
    downscale_delay_s: float = DEFAULT_DOWNSCALE_DELAY_S


@dataclass(frozen=True)
class ReplicaSetConfig:
    """The deployment of replicas: its size (fixed, or autoscaled between bounds), each replica's
    Ray resources, and the replica groups of pinned models."""

    num_replicas: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory_bytes: int | None = None
    max_ongoing_requests: int = DEFAULT_MAX_ONGOING_REQUESTS
    groups: tuple[ReplicaGroup, ...] = ()
    autoscaling: Autoscaling | None = None

    def __post_init__(self) -> None:
        if self.num_replicas < 1:
            raise ConfigError(f"replicas.num_replicas: must be >= 1, got {self.num_replicas}")
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise ConfigError("replicas.num_cpus, replicas.num_gpus: must be >= 0")
        if self.max_ongoing_requests < 1:
            raise ConfigError(f"replicas.max_ongoing_requests: must be >= 1, got {self.max_ongoing_requests}")

    @property
    def min_replicas(self) -> int:
        """The replicas that always run: what the cluster must be able to place at start."""
        return self.autoscaling.min_replicas if self.autoscaling else self.num_replicas


class _Group(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    num_replicas: int = 1
    pinned: list[str] = []


class _Autoscaling(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    min_replicas: int = 1
    max_replicas: int
    target_queue_depth: float = 8.0
    target_ttft: str | float | None = None
    upscale_delay: str | float = DEFAULT_UPSCALE_DELAY_S
    downscale_delay: str | float = DEFAULT_DOWNSCALE_DELAY_S


class _Replicas(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    num_replicas: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory: str | int | None = None
    max_ongoing_requests: int = DEFAULT_MAX_ONGOING_REQUESTS
    groups: list[_Group] = []
    autoscaling: _Autoscaling | None = None


class _File(msgspec.Struct, kw_only=True):  # the rest of the file is router/config_file.py's
    replicas: _Replicas | None = None


def load_replica_config(path: str | Path, models: tuple[ModelConfig, ...]) -> ReplicaSetConfig:
    """The `replicas:` section of a config file (defaults without one), checked against its models."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    return parse_replica_config(raw, models, str(path))


def parse_replica_config(
    text: bytes | str, models: tuple[ModelConfig, ...], where: str = "config"
) -> ReplicaSetConfig:
    try:
        section = msgspec.yaml.decode(text, type=_File).replicas or _Replicas()
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{where}: {str(exc).replace('$.', '')}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{where}: not valid YAML ({exc})") from None
    try:
        return _convert(section, models)
    except (ConfigError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _convert(section: _Replicas, models: tuple[ModelConfig, ...]) -> ReplicaSetConfig:
    autoscaling = _autoscaling(section.autoscaling) if section.autoscaling else None
    memory = None if section.memory is None else _size("replicas.memory", section.memory)
    config = ReplicaSetConfig(
        section.num_replicas,
        section.num_cpus,
        section.num_gpus,
        memory,
        section.max_ongoing_requests,
        tuple(_group(i, g, models) for i, g in enumerate(section.groups)),
        autoscaling,
    )
    _check_groups(config)
    return config


def _autoscaling(entry: _Autoscaling) -> Autoscaling:
    key = "replicas.autoscaling"
    if entry.min_replicas < 0:
        raise ConfigError(f"{key}.min_replicas: must be >= 0, got {entry.min_replicas}")
    if entry.max_replicas < max(1, entry.min_replicas):
        raise ConfigError(f"{key}.max_replicas: must be >= max(1, min_replicas), got {entry.max_replicas}")
    if not entry.target_queue_depth > 0:
        raise ConfigError(f"{key}.target_queue_depth: must be > 0, got {entry.target_queue_depth}")
    ttft = None if entry.target_ttft is None else parse_duration(entry.target_ttft, f"{key}.target_ttft")
    if ttft == 0:
        raise ConfigError(f"{key}.target_ttft: must be > 0")
    up = parse_duration(entry.upscale_delay, f"{key}.upscale_delay")
    down = parse_duration(entry.downscale_delay, f"{key}.downscale_delay")
    targets = ScalingTargets(entry.target_queue_depth, ttft)
    return Autoscaling(entry.min_replicas, entry.max_replicas, targets, up, down)


def _group(index: int, entry: _Group, models: tuple[ModelConfig, ...]) -> ReplicaGroup:
    key = f"replicas.groups[{index}]"
    if not entry.name:
        raise ConfigError(f"{key}.name: empty")
    if entry.num_replicas < 1:
        raise ConfigError(f"{key}.num_replicas: must be >= 1, got {entry.num_replicas}")
    policies = {m.name: m.policy for m in models}
    for name in entry.pinned:
        if policies.get(name) != "pinned":
            what = "not a served model" if name not in policies else "an on-demand model"
            raise ConfigError(f"{key}.pinned: {name!r} is {what}; a group pins models whose policy is pinned")
    return ReplicaGroup(entry.name, entry.num_replicas, tuple(entry.pinned))


def _check_groups(config: ReplicaSetConfig) -> None:
    names = [g.name for g in config.groups]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"replicas.groups: {duplicates} named twice")
    in_groups = sum(g.num_replicas for g in config.groups)
    if in_groups > config.min_replicas:
        raise ConfigError(
            f"replicas.groups: {in_groups} replicas in groups, more than the {config.min_replicas} that "
            "always run (replicas.num_replicas, or autoscaling.min_replicas)"
        )


def _size(key: str, value: str | int) -> int:
    try:
        return parse_bytes(value)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
