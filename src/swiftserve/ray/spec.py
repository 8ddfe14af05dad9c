"""What the Ray Serve application is built from: one plain frozen value, sent to every replica.

The driver (`swiftserve launch --ray`) builds it from the same flags and config file as
`swiftserve launch` (RouterConfig) plus the file's `replicas:` section (ReplicaSetConfig); each
replica derives its own RouterConfig from it (its group's pinned models: groups.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from swiftserve.ray.groups import models_for_group
from swiftserve.ray.replica_config import ReplicaSetConfig
from swiftserve.router.config_file import DEFAULT_IDLE_TIMEOUT_S
from swiftserve.router.router_config import RouterConfig
from swiftserve.server.app import DEFAULT_MAX_BODY_BYTES

DEFAULT_APP_NAME = "swiftserve"
# request_router: ours (routing.py), or Ray Serve's default, power of two choices with model
# multiplexing (each replica counting its last MULTIPLEX_MODELS_PER_REPLICA models, as Ray's
# multiplexing does): the baseline that benchmarks/ray_serve.py measures ours against.
RESIDENCY, POW2_MULTIPLEX = "residency", "pow2-multiplex"
REQUEST_ROUTERS = (RESIDENCY, POW2_MULTIPLEX)
MULTIPLEX_MODELS_PER_REPLICA = 2


@dataclass(frozen=True)
class ServeSpec:
    """router: what every replica serves (before its group's placement). replicas: how many,
    with what resources. api_key, max_body_bytes: as `swiftserve launch`'s, checked by each
    replica's app. app_name: the Ray Serve application's name (and its route prefix is /)."""

    router: RouterConfig
    replicas: ReplicaSetConfig = dataclasses.field(default_factory=ReplicaSetConfig)
    api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    app_name: str = DEFAULT_APP_NAME
    request_router: str = RESIDENCY

    def __post_init__(self) -> None:
        if self.request_router not in REQUEST_ROUTERS:
            raise ValueError(f"request_router: one of {REQUEST_ROUTERS}, got {self.request_router!r}")

    def pipeline_models(self) -> dict[str, list[str]]:
        """Each pipeline's models in order of first need: the router ranks replicas for all of them."""
        return {p.name: list(p.models()) for p in self.router.pipelines}

    def router_for(self, group: str | None) -> RouterConfig:
        """The RouterConfig of a replica in `group` (None: in no group)."""
        file = self.router.file
        idle = file.idle_timeout_s if file is not None else DEFAULT_IDLE_TIMEOUT_S
        models = models_for_group(self.router.models, self.replicas.groups, group, idle)
        return dataclasses.replace(self.router, models=models)
