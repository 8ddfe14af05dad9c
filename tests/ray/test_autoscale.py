"""The autoscaling decision (swiftserve/ray/autoscale.py): exact replica counts, no ray needed."""

from __future__ import annotations

import pytest

from swiftserve.ray.autoscale import ScalingTargets, desired_replicas, window_mean


def test_queue_depth_sizes_the_fleet():
    targets = ScalingTargets(target_queue_depth=4)
    assert desired_replicas(2, [4, 4], [None, None], targets) == 2
    assert desired_replicas(2, [8, 5], [None, None], targets) == 4  # ceil(13 / 4)
    assert desired_replicas(3, [1, 0, 0], [None, None, None], targets) == 1
    assert desired_replicas(3, [0, 0, 0], [None] * 3, targets) == 0  # min_replicas is Ray's


def test_a_deployment_at_zero_scales_up_only_for_requests_queued_at_a_handle():
    targets = ScalingTargets(target_queue_depth=4)
    assert desired_replicas(0, [], [], targets) == 0
    assert desired_replicas(0, [], [], targets, pending=0.1) == 1  # one request in the window
    assert desired_replicas(0, [], [], targets, pending=9) == 3
    assert desired_replicas(2, [1, 1], [None, None], targets, pending=2) == 1  # the same requests


def test_a_slow_first_token_asks_for_one_more_replica():
    targets = ScalingTargets(target_queue_depth=8, target_ttft_s=0.5)
    assert desired_replicas(2, [1, 1], [0.2, 0.7], targets) == 3
    assert desired_replicas(2, [1, 1], [0.2, 0.4], targets) == 1
    assert desired_replicas(2, [0, 0], [None, None], targets) == 0
    assert desired_replicas(2, [30, 1], [0.9, None], targets) == 4  # the queue asks for more


def test_ttft_is_ignored_without_a_target():
    assert desired_replicas(2, [1, 1], [9.0, 9.0], ScalingTargets(target_queue_depth=8)) == 1


def test_targets_are_validated():
    with pytest.raises(ValueError, match="target_queue_depth"):
        ScalingTargets(target_queue_depth=0)
    with pytest.raises(ValueError, match="target_ttft_s"):
        ScalingTargets(target_ttft_s=-1)


def test_window_mean_of_a_histogram():
    assert window_mean((1.0, 4), (2.5, 7)) == 0.5
    assert window_mean((1.0, 4), (1.0, 4)) is None
