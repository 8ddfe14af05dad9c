"""The victim choice and the KV take-back plan, as pure functions: exact names and block counts."""

from __future__ import annotations

import pytest
from swiftserve.scheduler.eviction import (
    EvictionCandidate,
    choose_victims,
    eviction_cost,
    eviction_order,
    plan_kv_reclaim,
)


def cand(name: str, num_bytes: int, cost_s: float = 0.0, last_used: float = 0.0, priority: int = 0):
    return EvictionCandidate(name, num_bytes, cost_s, last_used, priority)


def names(candidates) -> list[str]:
    return [c.name for c in candidates]


# -- the cost and the order -------------------------------------------------------------------------


def test_cost_is_reload_time_discounted_by_idle_time():
    assert eviction_cost(cand("a", 1, cost_s=3.0, last_used=8.0), now=10.0) == 1.0  # 3 / (1 + 2)
    assert eviction_cost(cand("a", 1, cost_s=3.0, last_used=10.0), now=10.0) == 3.0
    # A clock behind last_used counts as no idle time, never as a bonus.
    assert eviction_cost(cand("a", 1, cost_s=3.0, last_used=12.0), now=10.0) == 3.0


def test_cheap_to_reload_and_long_idle_go_first():
    now = 100.0
    slow_recent = cand("slow_recent", 100, cost_s=10.0, last_used=90.0)  # 10/11
    slow_idle = cand("slow_idle", 100, cost_s=10.0, last_used=0.0)  # 10/101
    fast_recent = cand("fast_recent", 100, cost_s=1.0, last_used=99.0)  # 1/2
    order = eviction_order([slow_recent, slow_idle, fast_recent], now)
    assert names(order) == ["slow_idle", "fast_recent", "slow_recent"]
    assert choose_victims([slow_recent, slow_idle, fast_recent], 150, now) == ("slow_idle", "fast_recent")


def test_equal_costs_go_by_priority_then_least_recently_used_then_name():
    a, b, c = cand("a", 10, last_used=5.0), cand("b", 10, last_used=3.0), cand("c", 10, last_used=7.0)
    assert names(eviction_order([a, b, c], now=10.0)) == ["b", "a", "c"]
    assert choose_victims([a, b, c], 1, now=10.0) == ("b",)
    # priority outranks recency: the least recently used model with a higher priority stays
    assert names(eviction_order([a, cand("b", 10, last_used=3.0, priority=1), c], 10.0)) == ["a", "c", "b"]
    assert names(eviction_order([cand("y", 1), cand("x", 1)], 0.0)) == ["x", "y"]


# -- how many to take -------------------------------------------------------------------------------


def test_greedy_stops_once_the_shortfall_is_covered():
    models = [cand("a", 10, cost_s=1.0), cand("b", 50, cost_s=2.0), cand("c", 100, cost_s=4.0)]
    assert choose_victims(models, 10, now=0.0) == ("a",)
    # a + b cover 55; c alone would too, but costs 4 > 1 + 2.
    assert choose_victims(models, 55, now=0.0) == ("a", "b")
    assert choose_victims(models, 160, now=0.0) == ("a", "b", "c")


def test_victims_not_needed_once_a_later_one_is_taken_are_dropped():
    # Greedy takes a, b, c (90 bytes for 60); c alone covers 60: a and b are dropped, last first.
    models = [cand("a", 10, cost_s=1.0), cand("b", 20, cost_s=2.0), cand("c", 60, cost_s=3.0)]
    assert choose_victims(models, 60, now=0.0) == ("c",)
    # For 65, c needs one of them: b goes back (a + c = 70 still covers), a stays.
    assert choose_victims(models, 65, now=0.0) == ("a", "c")


def test_one_big_victim_instead_of_several_small_when_it_costs_no_more():
    small = [cand("a", 50, cost_s=1.0), cand("b", 50, cost_s=1.0)]
    assert choose_victims([*small, cand("big", 100, cost_s=2.0)], 100, now=0.0) == ("big",)  # 2 <= 1 + 1
    assert choose_victims([*small, cand("big", 100, cost_s=3.0)], 100, now=0.0) == ("a", "b")  # 3 > 2
    # The cheapest of the models that alone cover the shortfall is the one considered.
    two_big = [*small, cand("big2", 200, cost_s=1.5), cand("big1", 100, cost_s=1.25)]
    assert choose_victims(two_big, 100, now=0.0) == ("big1",)


def test_bytes_decide_not_the_number_of_models():
    # Three tiny idle models are cheap, but they cannot cover the shortfall: the big one goes alone.
    tiny = [cand(f"t{i}", 1, cost_s=0.0) for i in range(3)]
    assert choose_victims([*tiny, cand("big", 40, cost_s=5.0)], 30, now=0.0) == ("big",)


def test_nothing_to_free_and_not_enough_to_free():
    models = [cand("a", 10), cand("b", 20)]
    assert choose_victims(models, 0, now=0.0) == ()
    assert choose_victims(models, -5, now=0.0) == ()
    assert choose_victims(models, 31, now=0.0) is None
    assert choose_victims([], 1, now=0.0) is None


# -- taking back unused KV --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "need, plan",
    [
        (0, {}),
        (250, {"c": 3}),  # c has the most reclaimable bytes (300)
        (201, {"c": 3}),  # whole blocks: 2.01 blocks of c round up to 3
        (200, {"c": 2}),
        (350, {"c": 3, "b": 5}),
        (1000, {"c": 3, "b": 10, "a": 4}),  # all there is
    ],
)
def test_kv_is_taken_back_from_the_largest_reclaimable_first(need, plan):
    reclaimable = {"a": (4, 10), "b": (10, 10), "c": (3, 100), "d": (0, 10), "e": (5, 0)}
    assert plan_kv_reclaim(reclaimable, need) == plan


def test_kv_take_back_ties_go_by_name():
    assert plan_kv_reclaim({"y": (2, 10), "x": (4, 5)}, 10) == {"x": 2}
