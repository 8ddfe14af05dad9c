"""The replica deployment's Ray Serve options, as plain values (Ray Serve LLM's
`get_deployment_options` contract): resources, replica count or autoscaling, and our request
router and autoscaling policy, named by import path so that Ray loads them where it routes and
where it scales."""

from __future__ import annotations

from typing import Any

from swiftserve.ray.spec import RESIDENCY, ServeSpec

REQUEST_ROUTER = "swiftserve.ray.request_router.ResidencyRouter"
RAY_DEFAULT_ROUTER = "ray.serve._private.request_router.pow_2_router.PowerOfTwoChoicesRequestRouter"
AUTOSCALING_POLICY = "swiftserve.ray.autoscaling_policy:scale_on_queue_and_ttft"
# How often each replica reports its models' states (record_routing_stats): the router also
# records where it sent a cold model meanwhile (routing.expect_loading), so this can stay relaxed.
ROUTING_STATS_PERIOD_S = 0.5
HEALTH_CHECK_PERIOD_S = 2.0
# A replica killed mid-run is replaced; its loads and the drain of its streams take seconds.
GRACEFUL_SHUTDOWN_TIMEOUT_S = 10.0


def deployment_options(spec: ServeSpec) -> dict[str, Any]:
    replicas = spec.replicas
    actor: dict[str, Any] = {"num_cpus": replicas.num_cpus, "num_gpus": replicas.num_gpus}
    if replicas.memory_bytes is not None:
        actor["memory"] = replicas.memory_bytes
    options: dict[str, Any] = {
        "ray_actor_options": actor,
        "max_ongoing_requests": replicas.max_ongoing_requests,
        "health_check_period_s": HEALTH_CHECK_PERIOD_S,
        "graceful_shutdown_timeout_s": GRACEFUL_SHUTDOWN_TIMEOUT_S,
        "request_router_config": {
            "request_router_class": REQUEST_ROUTER
            if spec.request_router == RESIDENCY
            else RAY_DEFAULT_ROUTER,
            "request_router_kwargs": {"pipelines": spec.pipeline_models()},
            "request_routing_stats_period_s": ROUTING_STATS_PERIOD_S,
            "request_routing_stats_timeout_s": 5 * ROUTING_STATS_PERIOD_S,
        },
    }
    if replicas.autoscaling is None:
        options["num_replicas"] = replicas.num_replicas
        return options
    auto = replicas.autoscaling
    targets = auto.targets
    options["autoscaling_config"] = {
        "min_replicas": auto.min_replicas,
        "initial_replicas": auto.min_replicas,  # Ray's default would start one even at min 0
        "max_replicas": auto.max_replicas,
        "metrics_interval_s": 1.0,
        "look_back_period_s": 10.0,
        "upscale_delay_s": auto.upscale_delay_s,
        "downscale_delay_s": auto.downscale_delay_s,
        "policy": {
            "policy_function": AUTOSCALING_POLICY,
            "policy_kwargs": {
                "target_queue_depth": targets.target_queue_depth,
                "target_ttft_s": targets.target_ttft_s,
            },
        },
    }
    return options
