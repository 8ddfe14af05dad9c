"""Chat lane placement and thread split: exact values (scheduler/lane_plan.py)."""

import pytest
from swiftserve.scheduler.lane_plan import assign_lanes, lane_weights, split_threads

GB = 10**9
# The compound benchmark's chat models (bf16 weight bytes, rounded): issue #13.
COMPOUND = {"big": 2_470_000_000, "smollm2": 270_000_000, "gemma": 536_000_000}


def test_the_biggest_model_gets_a_lane_of_its_own():
    assert assign_lanes(COMPOUND, 2) == {"big": 0, "gemma": 1, "smollm2": 1}


def test_the_plan_does_not_depend_on_the_order_models_are_listed():
    reordered = dict(reversed(list(COMPOUND.items())))
    assert assign_lanes(reordered, 2) == assign_lanes(COMPOUND, 2)


def test_two_models_of_a_size_are_split_and_ties_go_by_name():
    assert assign_lanes({"b": GB, "a": GB, "c": GB // 2}, 2) == {"a": 0, "b": 1, "c": 0}


def test_heaviest_first_onto_the_lightest_lane():
    weights = {"a": 7, "b": 5, "c": 4, "d": 3, "e": 1}
    # a->0 (7), b->1 (5), c->2 (4), d->2 (7), e->1 (6)
    assert assign_lanes(weights, 3) == {"a": 0, "b": 1, "c": 2, "d": 2, "e": 1}
    assert lane_weights(assign_lanes(weights, 3), weights, 3) == [7, 6, 7]


def test_one_lane_takes_everything_and_no_models_plan_nothing():
    assert assign_lanes(COMPOUND, 1) == {"big": 0, "gemma": 0, "smollm2": 0}
    assert assign_lanes({}, 2) == {}


def test_bad_plans_are_refused():
    with pytest.raises(ValueError, match="num_lanes"):
        assign_lanes(COMPOUND, 0)
    with pytest.raises(ValueError, match="weight_bytes"):
        assign_lanes({"a": -1}, 2)


@pytest.mark.parametrize(
    ("num_threads", "weights", "threads"),
    [
        (2, [3.0], [2]),  # a lane alone gets every thread
        (2, [2470, 806], [1, 1]),  # two cores: one each, whatever the weights
        (16, [2470, 806], [12, 4]),  # 1 + 14 * 0.754 = 11.55 -> floors 11 + 4, the spare to .55
        (16, [1, 1], [8, 8]),
        (3, [1, 1], [2, 1]),  # the odd thread to the lower lane on a tie
        (4, [0, 0], [2, 2]),  # no plan: an equal split
        (8, [5, 0], [7, 1]),  # a lane with nothing planned still gets one
        (1, [5, 1], [1, 1]),  # more lanes than threads: one each (the OS time-slices them)
        (7, [], []),
    ],
)
def test_busy_lanes_split_the_threads_by_planned_weight(num_threads, weights, threads):
    assert split_threads(num_threads, weights) == threads


def test_bad_splits_are_refused():
    with pytest.raises(ValueError, match="num_threads"):
        split_threads(0, [1.0])
    with pytest.raises(ValueError, match="weights"):
        split_threads(2, [-1.0])
