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

    def pipeline_models(self) -> dict[str, list[str]]:
        """Each pipeline's models in order of first need: the router ranks replicas for all of them."""
        return {p.name: list(p.models()) for p in self.router.pipelines}

    def router_for(self, group: str | None) -> RouterConfig:
        """The RouterConfig of a replica in `group` (None: in no group)."""
        file = self.router.file
        idle = file.idle_timeout_s if file is not None else DEFAULT_IDLE_TIMEOUT_S
        models = models_for_group(self.router.models, self.replicas.groups, group, idle)
        return dataclasses.replace(self.router, models=models)
