"""Can the cluster place the replicas that always run? Checked before deploying, so that a config
asking for more than the cluster has is an error at start that names the resource, not a deployment
that waits forever for a node. Pure: the cluster's resources come in as a dict (ray.cluster_resources())."""

from __future__ import annotations

from collections.abc import Mapping

from swiftserve.ray.replica_config import ReplicaSetConfig

# resource name in Ray -> (what a replica asks for, the replicas: key that sets it)
_KEYS = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory"}


class PlacementError(ValueError):
    """The replicas that always run need more of a resource than the cluster has."""


def needed(replicas: ReplicaSetConfig) -> dict[str, float]:
    """Ray resources of the replicas that always run (min_replicas when autoscaling)."""
    per_replica = {
        "CPU": replicas.num_cpus,
        "GPU": replicas.num_gpus,
        "memory": float(replicas.memory_bytes or 0),
    }
    return {name: amount * replicas.min_replicas for name, amount in per_replica.items() if amount > 0}


def check_placement(replicas: ReplicaSetConfig, cluster: Mapping[str, float]) -> None:
    """PlacementError naming the first resource the cluster lacks."""
    for resource, amount in needed(replicas).items():
        have = cluster.get(resource, 0.0)
        if amount > have + 1e-9:
            key = _KEYS[resource]
            per = amount / replicas.min_replicas
            raise PlacementError(
                f"replicas: {replicas.min_replicas} replicas x {key} {_fmt(resource, per)} need "
                f"{_fmt(resource, amount)} {resource}; the cluster has {_fmt(resource, have)} "
                f"(lower replicas.num_replicas or replicas.{key}, or add nodes)"
            )


def _fmt(resource: str, value: float) -> str:
    if resource == "memory":
        return f"{value / (1 << 30):.2f} GiB"
    return f"{value:g}"
