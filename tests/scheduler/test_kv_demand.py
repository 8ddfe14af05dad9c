"""The KV cache size a model should take next: growth when starved, shrink when mostly idle, exactly."""

from __future__ import annotations

import pytest
from swiftserve.scheduler.kv_demand import KvDemand, KvUsage, grow_target, initial_target, shrink_target


def usage(used: int, blocks: int, waiting: bool = False, floor: int = 32, most: int = 256, lazy=True):
    return KvUsage(used, blocks, blocks, floor, most, waiting, lazy)


@pytest.mark.parametrize(
    ("used", "blocks", "waiting", "starved"),
    [(36, 40, False, False), (37, 40, False, True), (0, 40, True, True), (40, 40, False, True)],
)
def test_starved_means_waiting_or_over_ninety_percent(used, blocks, waiting, starved):
    assert usage(used, blocks, waiting).is_starved is starved


def test_growth_is_a_quarter_at_least_four_blocks_capped_at_the_maximum():
    assert grow_target(usage(40, 40)) == 50
    assert grow_target(usage(10, 10)) == 14  # a quarter would be 3
    assert grow_target(usage(250, 250)) == 256
    assert grow_target(usage(256, 256)) == 256


def test_shrink_keeps_half_again_the_peak_never_below_the_floor():
    assert shrink_target(usage(0, 100), 40) == 60
    assert shrink_target(usage(0, 100), 41) == 62  # ceil(61.5)
    assert shrink_target(usage(0, 100), 3) == 32


def test_initial_size_is_floor_and_a_step_when_lazy_else_everything():
    assert initial_target(usage(0, 32)) == 40
    assert initial_target(usage(0, 32, floor=8)) == 12
    assert initial_target(usage(0, 32, floor=30, most=33)) == 33
    assert initial_target(usage(0, 32, lazy=False)) == 256


def test_a_starved_model_grows_every_tick():
    demand = KvDemand(idle_ticks=3)
    assert demand.target(usage(40, 40)) == 50
    assert demand.target(usage(10, 50, waiting=True)) == 63


def test_a_shrink_waits_for_a_whole_quiet_window_and_follows_its_peak():
    demand = KvDemand(idle_ticks=3)
    assert demand.target(usage(20, 100, floor=8)) == 100
    assert demand.target(usage(5, 100, floor=8)) == 100
    assert demand.target(usage(0, 100, floor=8)) == 30  # peak 20 over the window
    assert demand.target(usage(0, 30, floor=8)) == 8  # 20 left the window: peak 5, 8 blocks
    assert demand.target(usage(0, 8, floor=8)) == 8


def test_growth_restarts_the_quiet_window():
    demand = KvDemand(idle_ticks=2)
    assert demand.target(usage(0, 100)) == 100
    assert demand.target(usage(100, 100)) == 125
    assert demand.target(usage(0, 125)) == 125  # one quiet tick since the growth
    assert demand.target(usage(0, 125)) == 32


def test_no_shrink_by_less_than_a_step_nor_of_a_cache_that_is_not_lazy():
    demand = KvDemand(idle_ticks=1)
    assert demand.target(usage(24, 39)) == 39  # 1.5 x 24 = 36: only 3 blocks to gain
    assert demand.target(usage(24, 40)) == 36
    assert demand.target(usage(0, 34)) == 32  # less than a step, but the last way to the floor
    assert demand.target(usage(0, 32)) == 32
    assert KvDemand(idle_ticks=1).target(usage(0, 256, lazy=False)) == 256
