"""Which chat lane each model steps on, and how many OpenMP threads each busy lane gets: torch-free.

The device executor runs its chat engines on a few lanes (threads) side by side, so a small
model's steps need not wait out a big model's (issue #13: SmolLM2's requests queued behind 0.2-0.6
s steps of a 1B model). Two rules, both plain functions tested with exact values:

1. Placement (`assign_lanes`): largest weights first, each onto the lane whose planned weights are
   lightest (greedy LPT, ties to the lower lane). A decode step on CPU streams the model's weights,
   so its cost follows its weight bytes: with two lanes the biggest model gets a lane of its own
   and the others share the second (every smaller model together weighs less than the big one), and
   two models of about the same size are split apart. Within a lane the StepPolicy's fair order
   and priorities apply as before.
2. Team sizes (`split_threads`): lanes that have work split the cores in proportion to the weights
   planned on them, at least one thread each; a lane alone gets them all (work-conserving). On two
   cores two busy lanes get one thread each; on 16 cores a 2.5 GB model's lane beside 0.8 GB of
   small models gets 12 against 4.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def assign_lanes(weight_bytes: Mapping[str, int], num_lanes: int) -> dict[str, int]:
    """name -> lane index in [0, num_lanes): heaviest first onto the lightest lane so far."""
    if num_lanes < 1:
        raise ValueError(f"num_lanes must be >= 1, got {num_lanes}")
    loads = [0] * num_lanes
    lanes: dict[str, int] = {}
    for name in sorted(weight_bytes, key=lambda n: (-weight_bytes[n], n)):
        if weight_bytes[name] < 0:
            raise ValueError(f"weight_bytes of {name!r} must be >= 0, got {weight_bytes[name]}")
        lane = min(range(num_lanes), key=lambda i: (loads[i], i))
        lanes[name] = lane
        loads[lane] += weight_bytes[name]
    return lanes


def lane_weights(lanes: Mapping[str, int], weight_bytes: Mapping[str, int], num_lanes: int) -> list[int]:
    """The planned weight bytes on each lane."""
    loads = [0] * num_lanes
    for name, lane in lanes.items():
        loads[lane] += weight_bytes[name]
    return loads


def split_threads(num_threads: int, weights: Sequence[float]) -> list[int]:
    """Threads for each busy lane: num_threads split in proportion to weights (equal when they sum
    to 0), at least 1 each, summing to num_threads (to one per lane when lanes outnumber threads).
    Rounding: floors first, the remainder to the largest fractions (ties to the lower lane)."""
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if any(w < 0 for w in weights):
        raise ValueError(f"weights must be >= 0, got {list(weights)}")
    n = len(weights)
    if n == 0:
        return []
    if num_threads <= n:
        return [1] * n
    shares = list(weights) if sum(weights) > 0 else [1.0] * n
    spare = num_threads - n  # one each first, the rest by weight
    exact = [spare * w / sum(shares) for w in shares]
    threads = [1 + int(e) for e in exact]
    by_fraction = sorted(range(n), key=lambda i: (-(exact[i] - int(exact[i])), i))
    for i in by_fraction[: num_threads - sum(threads)]:
        threads[i] += 1
    return threads
