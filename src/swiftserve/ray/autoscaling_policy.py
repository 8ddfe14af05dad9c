"""Ray Serve's autoscaling policy, on our signals: a thin adapter around autoscale.desired_replicas.

Ray instantiates the class once with the policy_kwargs of deployment_options.py and calls it every
control-loop tick with an AutoscalingContext (duck-typed here: no import of ray), whose
aggregated_metrics hold each replica's record_autoscaling_stats (replica.py) averaged over the
look-back window, and whose total_num_requests counts the requests queued at handles too. Ray
then applies min_replicas, max_replicas and the up/down delays to what this returns.
"""

from __future__ import annotations

from typing import Any

from swiftserve.ray.autoscale import ScalingTargets, desired_replicas

QUEUE_DEPTH = "queue_depth"  # requests in flight on the replica
TTFT = "ttft_s"  # mean time to first token since its previous report (0: none started)


class scale_on_queue_and_ttft:  # noqa: N801 - named like the policy function it stands for
    def __init__(self, target_queue_depth: float = 8.0, target_ttft_s: float | None = None) -> None:
        self.targets = ScalingTargets(target_queue_depth, target_ttft_s)

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        metrics = ctx.aggregated_metrics or {}
        depths = list(metrics.get(QUEUE_DEPTH, {}).values())
        ttfts = [t if t > 0 else None for t in metrics.get(TTFT, {}).values()]
        pending = ctx.total_num_requests or 0.0
        return desired_replicas(ctx.current_num_replicas, depths, ttfts, self.targets, pending), {}
