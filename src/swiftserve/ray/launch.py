"""`swiftserve launch --ray`: the CLI's one entry into this package (imported only for --ray).

It takes what `swiftserve launch` builds (RouterConfig and the HTTP settings), adds the config
file's `replicas:` section, and deploys on Ray (application.py). Without the extra installed it
is an error that says how to install it.
"""

from __future__ import annotations

import dataclasses
import importlib.util

from swiftserve.ray.replica_config import ReplicaSetConfig, load_replica_config
from swiftserve.ray.spec import ServeSpec
from swiftserve.router.router_config import RouterConfig


@dataclasses.dataclass(frozen=True)
class RayFlags:
    """address: join this cluster (None: start a local Ray). num_cpus: the local Ray's CPUs.
    num_replicas: overrides the file's replicas.num_replicas (the only setting without a file).
    proxy: the HTTP proxy a local Ray starts ("haproxy" or "ray")."""

    address: str | None = None
    num_cpus: int | None = None
    num_replicas: int | None = None
    proxy: str = "haproxy"


def serve_spec(router: RouterConfig, flags: RayFlags, api_key: str | None, max_body_bytes: int) -> ServeSpec:
    replicas = ReplicaSetConfig()
    if router.config_file is not None:
        replicas = load_replica_config(router.config_file, router.models)
    if flags.num_replicas is not None:
        replicas = dataclasses.replace(replicas, num_replicas=flags.num_replicas)
    return ServeSpec(router, replicas, api_key, max_body_bytes)


def launch_on_ray(spec: ServeSpec, flags: RayFlags, host: str, port: int) -> int:
    """Deploys and serves until a signal; ValueError (the CLI's exit 2) without the extra, or for
    replicas the cluster cannot place."""
    if importlib.util.find_spec("ray") is None:
        raise ValueError("--ray needs Ray Serve: pip install 'swiftserve[ray]'")
    from swiftserve.ray.application import ClusterOptions, launch

    return launch(spec, ClusterOptions(flags.address, flags.num_cpus, None, host, port, flags.proxy))
