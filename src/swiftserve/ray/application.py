"""The Ray Serve application, and `swiftserve launch --ray`: deploy it on a local Ray or a cluster.

    ingress (1 replica, no CPU reserved)  ──handle, ResidencyRouter──►  SwiftServeReplica x N
    OpenAI API behind HAProxy (or Ray's                                   each a whole swiftserve
    HTTP proxy)

1. `build_app(spec)`: the replica deployment with its options (deployment_options.py) and the
   ingress bound to its handle.
2. `launch(spec, address)`: connects to the cluster at `address` (None: starts a local Ray sized
   by --num-cpus, with Ray Serve's same-loop switches and HAProxy: serve_env.py), checks that it can place
   the replicas that always run (placement.py), starts Serve's HTTP proxy on host:port and
   deploys without waiting (the ingress answers 503 until a replica is ready), then prints one
   ready line once a replica is, and serves until a signal.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from swiftserve.ray.deployment_options import deployment_options
from swiftserve.ray.ingress import INGRESS_DEPLOYMENT, REPLICA_DEPLOYMENT, SwiftServeIngress, running_replicas
from swiftserve.ray.placement import check_placement
from swiftserve.ray.replica import SwiftServeReplica
from swiftserve.ray.serve_env import apply_serve_env
from swiftserve.ray.spec import ServeSpec

INGRESS_MAX_ONGOING_REQUESTS = 1000


@dataclass(frozen=True)
class ClusterOptions:
    """address: an existing cluster ("auto", "ray://host:10001", ...; None: start a local Ray).
    num_cpus, object_store_bytes: the local Ray's size (ignored when joining). host, port: where
    Serve's HTTP proxy listens. proxy: which one a local Ray starts, "haproxy" or "ray" (its
    Python proxy; serve_env.py); a cluster joined keeps the one it was started with."""

    address: str | None = None
    num_cpus: int | None = None
    object_store_bytes: int | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    proxy: str = "haproxy"


def build_app(spec: ServeSpec) -> serve.Application:
    replica = serve.deployment(name=REPLICA_DEPLOYMENT, **deployment_options(spec))(SwiftServeReplica)
    ingress = serve.deployment(
        name=INGRESS_DEPLOYMENT,
        num_replicas=1,
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=INGRESS_MAX_ONGOING_REQUESTS,
    )(SwiftServeIngress)
    return ingress.bind(replica.bind(spec), spec)


def connect(cluster: ClusterOptions) -> None:
    if ray.is_initialized():
        return
    if cluster.address is not None:
        ray.init(address=cluster.address, log_to_driver=False)
        return
    apply_serve_env(cluster.proxy)  # before the local Ray starts: its processes inherit it
    ray.init(
        num_cpus=cluster.num_cpus,
        object_store_memory=cluster.object_store_bytes,
        include_dashboard=False,
        log_to_driver=False,
    )


def deploy(spec: ServeSpec, cluster: ClusterOptions, wait: bool = True) -> DeploymentHandle:
    """Deploys the application (PlacementError first, if the replicas cannot be placed); with
    wait, returns once every replica that always runs is ready."""
    connect(cluster)
    check_placement(spec.replicas, ray.cluster_resources())
    serve.start(http_options={"host": cluster.host, "port": cluster.port})
    target = serve.RunTarget(build_app(spec), name=spec.app_name, route_prefix="/")
    (handle,) = serve.run_many([target], wait_for_applications_running=wait)
    return handle


def launch(spec: ServeSpec, cluster: ClusterOptions) -> int:
    """`swiftserve launch --ray`: deploy, print the ready line, serve until SIGINT/SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    deploy(spec, cluster, wait=False)
    try:
        while not stop.is_set() and running_replicas(spec.app_name) == 0:
            if _failed(spec):
                print(
                    "swiftserve: the replicas failed to start (see `ray logs`)", file=sys.stderr, flush=True
                )
                return 1
            time.sleep(0.5)
        if not stop.is_set():
            url = f"http://{cluster.host}:{cluster.port}/v1"
            print(
                f"swiftserve ready on Ray: {url} ({running_replicas(spec.app_name)} replica(s) ready)",
                flush=True,
            )
        stop.wait()
    finally:
        serve.delete(spec.app_name)
        if cluster.address is None:
            serve.shutdown()
            ray.shutdown()
    return 0


def _failed(spec: ServeSpec) -> bool:
    app = serve.status().applications.get(spec.app_name)
    return app is not None and str(app.status) == "DEPLOY_FAILED"
