"""How many replicas: the autoscaling decision on our own signals, as a pure function.

Ray Serve's autoscaler calls `autoscaling_policy.py`'s policy every control-loop tick with each
replica's latest `record_autoscaling_stats` (replica.py): its requests in flight and the mean
time to first token of the requests that started since its previous report. Ray applies the
min/max bounds and the up/down delays around the number returned here; per-model scale to zero
stays inside each replica (the model pool), where it takes a fraction of a second, not the tens of
seconds a replica takes to start.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ScalingTargets:
    """target_queue_depth: requests in flight per replica that the fleet is sized for.
    target_ttft_s: a replica whose recent mean time to first token is above it asks for one more
    replica (None: time to first token is not a signal)."""

    target_queue_depth: float = 8.0
    target_ttft_s: float | None = None

    def __post_init__(self) -> None:
        if not self.target_queue_depth > 0:
            raise ValueError(f"target_queue_depth must be > 0, got {self.target_queue_depth}")
        if self.target_ttft_s is not None and not self.target_ttft_s > 0:
            raise ValueError(f"target_ttft_s must be > 0, got {self.target_ttft_s}")


def desired_replicas(
    num_replicas: int,
    queue_depths: Sequence[float],
    ttfts_s: Sequence[float | None],
    targets: ScalingTargets,
    pending: float = 0.0,
) -> int:
    """Enough replicas for the requests in flight at the target depth each, and one more than now
    while any replica's time to first token is over its target (a queue can be short while every
    request in it is slow: long prompts, cold loads). `pending` is Ray's count of the deployment's
    requests, those still queued at a handle included: with no replica running, it is the only
    sign of demand. No demand anywhere asks for zero, and Ray's min_replicas bounds that: a
    deployment at min 0 stays at zero until a request comes."""
    by_queue = math.ceil(max(sum(queue_depths), pending) / targets.target_queue_depth)
    slow = targets.target_ttft_s is not None and any(
        t is not None and t > targets.target_ttft_s for t in ttfts_s
    )
    by_ttft = num_replicas + 1 if slow else 0
    return max(by_queue, by_ttft)


def window_mean(before: tuple[float, int], now: tuple[float, int]) -> float | None:
    """The mean of what a (sum, count) histogram observed between two reads, None if nothing."""
    count = now[1] - before[1]
    return (now[0] - before[0]) / count if count > 0 else None
