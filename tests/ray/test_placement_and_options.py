"""Placement checks (placement.py) and the deployment's options (deployment_options.py): plain values."""

from __future__ import annotations

import pytest
from swiftserve.router.router_config import RouterConfig

from swiftserve.ray.autoscale import ScalingTargets
from swiftserve.ray.deployment_options import deployment_options
from swiftserve.ray.placement import PlacementError, check_placement, needed
from swiftserve.ray.replica_config import Autoscaling, ReplicaSetConfig
from swiftserve.ray.spec import ServeSpec


def test_needed_counts_the_replicas_that_always_run():
    assert needed(ReplicaSetConfig(num_replicas=3, num_cpus=1)) == {"CPU": 3}
    auto = Autoscaling(2, 8, ScalingTargets())
    assert needed(ReplicaSetConfig(num_cpus=0.5, num_gpus=1, memory_bytes=1 << 30, autoscaling=auto)) == {
        "CPU": 1.0,
        "GPU": 2,
        "memory": 2.0 * (1 << 30),
    }


def test_too_many_replicas_is_an_error_naming_the_resource():
    check_placement(ReplicaSetConfig(num_replicas=2), {"CPU": 2.0})
    with pytest.raises(PlacementError) as error:
        check_placement(ReplicaSetConfig(num_replicas=3), {"CPU": 2.0})
    assert str(error.value).startswith("replicas: 3 replicas x num_cpus 1 need 3 CPU; the cluster has 2")
    with pytest.raises(PlacementError, match="need 1 GPU; the cluster has 0"):
        check_placement(ReplicaSetConfig(num_cpus=0, num_gpus=1), {"CPU": 4.0})
    with pytest.raises(PlacementError, match="memory 4.00 GiB need 4.00 GiB memory"):
        check_placement(ReplicaSetConfig(memory_bytes=4 << 30), {"CPU": 4.0, "memory": 1 << 30})


def _spec(replicas: ReplicaSetConfig) -> ServeSpec:
    return ServeSpec(RouterConfig.from_flags(("chat=smollm2-135m-instruct",)), replicas)


def test_fixed_replicas_options():
    options = deployment_options(_spec(ReplicaSetConfig(num_replicas=2, max_ongoing_requests=16)))
    assert options["num_replicas"] == 2 and "autoscaling_config" not in options
    assert options["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 0.0}
    assert options["max_ongoing_requests"] == 16
    router = options["request_router_config"]
    assert router["request_router_class"] == "swiftserve.ray.request_router.ResidencyRouter"
    assert router["request_router_kwargs"] == {"pipelines": {}}
    assert router["request_routing_stats_period_s"] == 0.5


def test_autoscaling_options_carry_our_targets():
    auto = Autoscaling(1, 4, ScalingTargets(target_queue_depth=6, target_ttft_s=0.5), 2.0, 5.0)
    options = deployment_options(_spec(ReplicaSetConfig(autoscaling=auto)))
    assert "num_replicas" not in options
    config = options["autoscaling_config"]
    assert (config["min_replicas"], config["initial_replicas"], config["max_replicas"]) == (1, 1, 4)
    assert (config["upscale_delay_s"], config["downscale_delay_s"]) == (2.0, 5.0)
    assert config["policy"] == {
        "policy_function": "swiftserve.ray.autoscaling_policy:scale_on_queue_and_ttft",
        "policy_kwargs": {"target_queue_depth": 6, "target_ttft_s": 0.5},
    }


def test_the_policy_adapter_reads_ray_s_aggregated_metrics():
    from types import SimpleNamespace

    from swiftserve.ray.autoscaling_policy import scale_on_queue_and_ttft

    policy = scale_on_queue_and_ttft(target_queue_depth=4, target_ttft_s=0.5)
    ctx = SimpleNamespace(
        current_num_replicas=2,
        total_num_requests=11.0,
        aggregated_metrics={"queue_depth": {"r1": 6.0, "r2": 5.0}, "ttft_s": {"r1": 0.0, "r2": 0.2}},
    )
    assert policy(ctx) == (3, {})
    ctx.aggregated_metrics["ttft_s"]["r1"] = 0.9
    assert policy(ctx) == (3, {})
    ctx.aggregated_metrics["queue_depth"] = {"r1": 1.0, "r2": 0.0}
    assert policy(ctx) == (3, {})  # slow first tokens: one more than the 2 running
    idle = SimpleNamespace(current_num_replicas=0, total_num_requests=0.0, aggregated_metrics=None)
    assert policy(idle) == (0, {})  # a deployment at min_replicas 0 stays there
    idle.total_num_requests = 0.2  # a request queued at the ingress's handle
    assert policy(idle) == (1, {})
