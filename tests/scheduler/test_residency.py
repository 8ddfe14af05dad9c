"""The residency ledger: admission, eviction, transitions, KV grants, idle expiry, exactly."""

from __future__ import annotations

import random

import pytest
from swiftserve.scheduler.residency import ResidencyManager
from swiftserve.scheduler.residency_types import (
    BudgetError,
    DuplicateModelError,
    LoadDecision,
    ModelBudget,
    ModelResidency,
    PinnedModelError,
    Policy,
    ResidencyStateError,
    State,
    UnknownModelError,
)


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def spec(name, weights, policy="on-demand", *, floor=0, block=1, idle=None, cost=0.0, priority=0):
    return ModelBudget(name, weights, block, floor, Policy(policy), idle, cost, priority)


def ledger(budget: int, *specs: ModelBudget, clock: Clock | None = None) -> ResidencyManager:
    mgr = ResidencyManager(budget, clock or Clock())
    for s in specs:
        mgr.add(s)
    return mgr


def load(mgr: ResidencyManager, *names: str) -> None:
    """Admit and load models that fit in free memory."""
    for name in names:
        assert mgr.admit(name) == LoadDecision(True, reason="fits in free memory")
        mgr.loaded(name)


def states(mgr: ResidencyManager) -> dict[str, str]:
    return {m.name: m.state.value for m in mgr.models()}


# -- ModelBudget ------------------------------------------------------------------------------------


def test_footprint_is_weights_plus_the_kv_floor():
    assert ModelBudget("m", 30, 5, 2, Policy.PINNED).footprint == 40
    assert ModelBudget("embed", 7, 0, 0, Policy.ON_DEMAND).footprint == 7


def test_policy_accepts_the_config_file_spelling():
    assert ModelBudget("m", 1, 1, 1, "on-demand").policy is Policy.ON_DEMAND
    assert ModelBudget("m", 1, 1, 1, "pinned").policy is Policy.PINNED


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"name": ""}, "name"),
        ({"weight_bytes": -1}, "weight_bytes"),
        ({"weight_bytes": 1.5}, "weight_bytes"),
        ({"kv_block_bytes": True}, "kv_block_bytes"),
        ({"kv_floor_blocks": -2}, "kv_floor_blocks"),
        ({"policy": "dedicated"}, "policy"),
        ({"idle_timeout_s": -1.0}, "idle_timeout_s"),
        ({"idle_timeout_s": float("nan")}, "idle_timeout_s"),
        ({"policy": Policy.PINNED, "idle_timeout_s": 30.0}, "idle_timeout_s"),
        ({"reload_cost_s": -0.5}, "reload_cost_s"),
        ({"reload_cost_s": float("inf")}, "reload_cost_s"),
        ({"priority": 1.0}, "priority"),
    ],
)
def test_model_budget_validation_names_the_field(kwargs, field):
    base = dict(name="m", weight_bytes=1, kv_block_bytes=1, kv_floor_blocks=1, policy=Policy.ON_DEMAND)
    with pytest.raises(ValueError, match=field):
        ModelBudget(**{**base, **kwargs})


# -- configuration ----------------------------------------------------------------------------------


def test_budget_must_be_positive():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="budget_bytes"):
            ResidencyManager(bad)


def test_config_time_errors_leave_the_ledger_unchanged():
    mgr = ledger(100, spec("p", 60, "pinned"))
    with pytest.raises(BudgetError, match=r"^'big' needs 101B \(weights 91B \+ 10 KV blocks of 1B\)"):
        mgr.add(spec("big", 91, floor=10))
    with pytest.raises(BudgetError, match=r"^the pinned models \(p, q\) need 101B"):
        mgr.add(spec("q", 41, "pinned"))
    with pytest.raises(BudgetError, match=r"^'a' needs 41B beside the pinned models' 60B"):
        mgr.add(spec("a", 41))
    with pytest.raises(DuplicateModelError, match="'p' is already registered"):
        mgr.add(spec("p", 1))
    assert [m.name for m in mgr.models()] == ["p"]
    mgr.add(spec("a", 40))  # exactly what is left beside the pinned model


def test_remove_only_a_cold_model():
    mgr = ledger(100, spec("a", 10))
    mgr.admit("a")
    with pytest.raises(ResidencyStateError, match="cannot remove 'a': it is loading, not cold"):
        mgr.remove("a")
    mgr.load_failed("a", "oops")
    mgr.remove("a")
    assert mgr.models() == []
    with pytest.raises(UnknownModelError):
        mgr.state("a")


@pytest.mark.parametrize(
    "call", "remove acquire release hold unhold admit loaded begin_unload unloaded kv_blocks state".split()
)
def test_unknown_names_raise_a_lookup_error(call):
    mgr = ledger(10)
    with pytest.raises(UnknownModelError, match="unknown model 'nope'") as info:
        getattr(mgr, call)("nope")
    assert isinstance(info.value, KeyError) and isinstance(info.value, LookupError)


def test_unknown_names_in_calls_with_arguments():
    mgr = ledger(10)
    for call in (
        lambda: mgr.grow_kv("x", 1),
        lambda: mgr.shrink_kv("x", 1),
        lambda: mgr.load_failed("x", "e"),
    ):
        with pytest.raises(UnknownModelError):
            call()


# -- admission with free memory, idempotence, budget arithmetic -------------------------------------


def test_admission_with_free_memory_commits_the_footprint():
    clock = Clock(5.0)
    mgr = ledger(100, spec("a", 30, floor=2, block=5), clock=clock)
    assert mgr.admit("a") == LoadDecision(True, (), {}, "fits in free memory")
    assert mgr.state("a") is State.LOADING
    assert (mgr.committed_bytes(), mgr.free_bytes(), mgr.kv_blocks("a")) == (40, 60, 2)
    clock.now = 7.0
    mgr.loaded("a")
    assert mgr.models() == [
        ModelResidency("a", State.RESIDENT, Policy.ON_DEMAND, 40, 2, 0, 0, 7.0, 1, 0, None)
    ]


def test_admit_is_idempotent_while_loading_or_resident():
    mgr = ledger(100, spec("a", 30))
    mgr.admit("a")
    assert mgr.admit("a") == LoadDecision(True, reason="'a' is already loading")
    mgr.loaded("a")
    assert mgr.admit("a") == LoadDecision(True, reason="'a' is already resident")
    assert mgr.committed_bytes() == 30


def test_committed_bytes_add_up_footprints_and_extra_kv():
    mgr = ledger(1000, spec("a", 100, floor=4, block=10), spec("b", 200, floor=2, block=50), spec("c", 5))
    load(mgr, "a", "b")
    assert mgr.grow_kv("a", 6) == 6
    assert mgr.committed_bytes() == (100 + 40 + 60) + (200 + 100)
    assert mgr.free_bytes() == 1000 - 500
    assert [m.resident_bytes for m in mgr.models()] == [200, 300, 0]


# -- eviction ---------------------------------------------------------------------------------------


def test_cheap_to_reload_long_idle_model_is_evicted_and_its_bytes_go_to_the_load():
    clock = Clock()
    mgr = ledger(
        100, spec("a", 30, cost=1.0), spec("b", 30, cost=1.0), spec("c", 30, cost=4.0), spec("d", 40)
    )
    mgr.clock = clock
    for t, name in enumerate("abc"):
        clock.now = float(t)
        load(mgr, name)
    clock.now = 10.0  # costs: a 1/10, b 1/9, c 4/8
    decision = mgr.admit("d")
    assert decision == LoadDecision(True, ("a",), {}, "fits after evicting a")
    assert states(mgr) == {"a": "unloading", "b": "resident", "c": "resident", "d": "loading"}
    # a keeps its 30 bytes until it is unloaded; d holds the 10 that were free.
    assert mgr.committed_bytes() == 100
    assert mgr.models()[3].resident_bytes == 10 and mgr.models()[3].waiting_on == ("a",)
    with pytest.raises(ResidencyStateError, match=r"'d' cannot be loaded yet: waiting on \('a',\)"):
        mgr.loaded("d")
    mgr.unloaded("a")
    assert mgr.committed_bytes() == 100 and mgr.models()[3].resident_bytes == 40
    assert mgr.models()[3].waiting_on == ()
    mgr.loaded("d")
    assert states(mgr) == {"a": "cold", "b": "resident", "c": "resident", "d": "resident"}
    assert mgr.models()[0].unloads == 1


def test_least_recently_used_goes_first_among_equal_costs():
    clock = Clock()
    mgr = ledger(90, spec("a", 30), spec("b", 30), spec("c", 30), spec("d", 30), clock=clock)
    for t, name in enumerate("abc"):
        clock.now = float(t)
        load(mgr, name)
    clock.now = 5.0
    mgr.acquire("a")  # a request refreshes a: b is now the least recently used
    mgr.release("a")
    assert mgr.admit("d").evict == ("b",)


def test_no_more_is_evicted_than_needed():
    mgr = ledger(
        100, spec("a", 10, cost=1.0), spec("b", 20, cost=2.0), spec("c", 60, cost=3.0), spec("d", 75)
    )
    load(mgr, "a", "b", "c")
    # 65 bytes short: greedy takes a, b, c; b is not needed beside a + c.
    assert mgr.admit("d") == LoadDecision(True, ("a", "c"), {}, "fits after evicting a, c")
    assert mgr.committed_bytes() == 100
    mgr.unloaded("c")
    assert mgr.models()[3].waiting_on == ("a",)
    mgr.unloaded("a")  # 5 of a's 10 bytes were not needed: they are free again
    assert (mgr.committed_bytes(), mgr.free_bytes()) == (95, 5)
    mgr.loaded("d")


def test_one_big_victim_instead_of_two_small_ones_of_the_same_cost():
    mgr = ledger(
        100, spec("a", 25, cost=1.0), spec("b", 25, cost=1.0), spec("big", 50, cost=2.0), spec("d", 50)
    )
    load(mgr, "a", "b", "big")
    assert mgr.admit("d").evict == ("big",)


def test_two_small_victims_when_the_big_one_costs_more():
    mgr = ledger(
        100, spec("a", 25, cost=1.0), spec("b", 25, cost=1.0), spec("big", 50, cost=3.0), spec("d", 50)
    )
    load(mgr, "a", "b", "big")
    assert mgr.admit("d").evict == ("a", "b")


def test_pinned_models_are_never_evicted():
    mgr = ledger(100, spec("p", 50, "pinned"), spec("a", 30, cost=100.0), spec("b", 50))
    load(mgr, "p", "a")
    assert mgr.admit("b").evict == ("a",)  # p would be free to reload, but it is pinned


def test_models_with_requests_in_flight_or_holds_are_not_evicted():
    mgr = ledger(100, spec("p", 50, "pinned"), spec("a", 30), spec("b", 50))
    load(mgr, "p", "a")
    mgr.acquire("a")
    before = mgr.models()
    assert mgr.admit("b") == LoadDecision(
        False,
        reason="'b' needs 50B but only 20B can be freed now; kept by a (1 in flight, 0 held)",
        blocked_by=("a",),
    )
    assert mgr.models() == before  # nothing changed
    mgr.hold("a")
    mgr.release("a")
    assert mgr.admit("b").reason.endswith("kept by a (0 in flight, 1 held)")
    mgr.unhold("a")
    assert mgr.admit("b").evict == ("a",)


def test_a_hold_on_a_cold_model_protects_it_once_loaded():
    mgr = ledger(100, spec("a", 60), spec("b", 60))
    mgr.hold("a")
    load(mgr, "a")
    assert mgr.admit("b").blocked_by == ("a",)
    assert mgr.begin_unload("a") is False and mgr.state("a") is State.RESIDENT


def test_memory_held_by_a_load_in_progress_is_not_obtainable():
    mgr = ledger(100, spec("a", 60), spec("b", 60))
    mgr.admit("a")
    assert mgr.admit("b") == LoadDecision(
        False, reason="'b' needs 60B but only 40B can be freed now; the rest is pinned, loading or promised"
    )


def test_a_model_that_is_unloading_is_admitted_again_only_once_unloaded():
    mgr = ledger(100, spec("a", 60))
    load(mgr, "a")
    assert mgr.begin_unload("a") is True
    assert mgr.admit("a") == LoadDecision(False, reason="'a' is unloading; admit it again once unloaded")
    mgr.unloaded("a")
    assert mgr.admit("a").admitted


def test_a_load_waits_for_a_model_already_unloading_instead_of_evicting_another():
    mgr = ledger(100, spec("a", 60), spec("b", 40), spec("c", 60))
    load(mgr, "a")
    assert mgr.begin_unload("a")
    load(mgr, "b")  # fits beside a: 0 free now
    decision = mgr.admit("c")
    assert decision == LoadDecision(True, reason="fits after waiting for a to unload", wait_for=("a",))
    assert states(mgr) == {"a": "unloading", "b": "resident", "c": "loading"}
    mgr.unloaded("a")
    mgr.loaded("c")
    assert mgr.committed_bytes() == 100


# -- taking back unused KV before evicting ----------------------------------------------------------


def test_unused_extra_kv_is_taken_back_before_any_eviction():
    mgr = ledger(100, spec("a", 30, floor=10), spec("b", 40))
    load(mgr, "a")
    assert mgr.grow_kv("a", 30) == 30
    mgr.report_kv_usage("a", 25)  # 15 blocks past the floor in use: 15 of the 30 extra are not
    assert mgr.admit("b") == LoadDecision(True, (), {"a": 10}, "fits after taking back KV blocks of a")
    assert mgr.kv_blocks("a") == 30 and mgr.committed_bytes() == 100
    mgr.loaded("b")  # nothing to wait for


def test_an_eviction_is_credited_only_with_what_taking_back_kv_would_not_free():
    # a: 40 + 20 extra (15 unused); c: 20. Free 20, d needs 50: 30 short, 15 from KV alone.
    mgr = ledger(100, spec("a", 30, floor=10, cost=5.0), spec("c", 20, cost=1.0), spec("d", 50))
    load(mgr, "a", "c")
    mgr.grow_kv("a", 20)
    mgr.report_kv_usage("a", 15)
    # Evicting c (20) and taking 10 blocks back from a covers the 30, a stays.
    assert mgr.admit("d") == LoadDecision(
        True, ("c",), {"a": 10}, "fits after taking back KV blocks of a; evicting c"
    )
    assert mgr.kv_blocks("a") == 20
    assert mgr.models()[2].resident_bytes == 30 and mgr.models()[2].waiting_on == ("c",)
    mgr.unloaded("c")
    mgr.loaded("d")
    assert mgr.committed_bytes() == 100


def test_a_victim_is_not_also_asked_to_shrink():
    mgr = ledger(100, spec("a", 30, floor=10, cost=1.0), spec("c", 20, cost=5.0), spec("d", 50))
    load(mgr, "a", "c")
    mgr.grow_kv("a", 20)
    mgr.report_kv_usage("a", 15)
    assert mgr.admit("d") == LoadDecision(True, ("a",), {}, "fits after evicting a")


# -- KV that follows demand -------------------------------------------------------------------------


def test_grow_kv_grants_only_from_free_memory():
    mgr = ledger(100, spec("a", 50, floor=5, block=4), spec("b", 10))
    load(mgr, "a")  # 70 committed
    assert mgr.grow_kv("a", 10) == 7  # 30 free: 7 blocks of 4
    assert (mgr.kv_blocks("a"), mgr.free_bytes()) == (12, 2)
    assert mgr.grow_kv("a", 1) == 0
    assert mgr.grow_kv("a", 0) == 0
    assert mgr.admit("b") == LoadDecision(True, (), {"a": 2}, "fits after taking back KV blocks of a")


def test_shrink_kv_bounds():
    mgr = ledger(100, spec("a", 50, floor=5, block=4))
    load(mgr, "a")
    mgr.grow_kv("a", 7)
    with pytest.raises(ValueError, match="'a' cannot give back 8 KV blocks: 7 extra, 0 of 12 in use"):
        mgr.shrink_kv("a", 8)
    mgr.report_kv_usage("a", 10)
    with pytest.raises(ValueError, match="cannot give back 3 KV blocks"):
        mgr.shrink_kv("a", 3)  # 9 blocks left for 10 in use
    mgr.shrink_kv("a", 2)
    assert (mgr.kv_blocks("a"), mgr.committed_bytes()) == (10, 90)
    with pytest.raises(ValueError, match="'a' uses 11 KV blocks but has 10"):
        mgr.report_kv_usage("a", 11)
    for bad in (-1, 1.0, True):
        with pytest.raises(ValueError, match="a number of KV blocks"):
            mgr.grow_kv("a", bad)


def test_kv_calls_need_a_resident_model_and_unloading_clears_the_grant():
    mgr = ledger(100, spec("a", 50, floor=5, block=4))
    assert mgr.kv_blocks("a") == 0
    for call in (
        lambda: mgr.grow_kv("a", 1),
        lambda: mgr.shrink_kv("a", 0),
        lambda: mgr.report_kv_usage("a", 0),
    ):
        with pytest.raises(ResidencyStateError, match="it is cold, not resident"):
            call()
    load(mgr, "a")
    mgr.grow_kv("a", 5)
    mgr.report_kv_usage("a", 8)
    assert mgr.begin_unload("a")
    assert mgr.kv_blocks("a") == 10 and mgr.committed_bytes() == 90  # still in memory until unloaded
    mgr.unloaded("a")
    assert (mgr.kv_blocks("a"), mgr.committed_bytes()) == (0, 0)
    load(mgr, "a")
    assert mgr.kv_blocks("a") == 5 and mgr.committed_bytes() == 70


def test_a_model_without_a_kv_cache_costs_its_weights_only():
    mgr = ledger(100, spec("embed", 30, floor=0, block=0))
    load(mgr, "embed")
    assert (mgr.kv_blocks("embed"), mgr.committed_bytes()) == (0, 30)


# -- transitions ------------------------------------------------------------------------------------


def test_load_failed_frees_the_bytes_and_keeps_the_error_until_a_load_succeeds():
    mgr = ledger(100, spec("a", 60), spec("b", 60))
    load(mgr, "a")
    assert mgr.admit("b").evict == ("a",)
    mgr.load_failed("b", "snapshot checksum mismatch")
    b = mgr.models()[1]
    expected = (State.COLD, 0, "snapshot checksum mismatch", 0, ())
    assert (b.state, b.resident_bytes, b.last_error, b.loads, b.waiting_on) == expected
    # a is leaving anyway; it counts its bytes until unloaded, and they are then simply free.
    assert states(mgr) == {"a": "unloading", "b": "cold"} and mgr.committed_bytes() == 60
    mgr.unloaded("a")
    assert mgr.committed_bytes() == 0
    assert mgr.admit("b") == LoadDecision(True, reason="fits in free memory")
    mgr.loaded("b")
    assert mgr.models()[1].last_error is None  # a model that loads has no error to report


def test_begin_unload_of_a_pinned_model_needs_force():
    mgr = ledger(100, spec("p", 50, "pinned"))
    load(mgr, "p")
    with pytest.raises(PinnedModelError, match="'p' is pinned"):
        mgr.begin_unload("p")
    mgr.acquire("p")
    assert mgr.begin_unload("p", force=True) is False  # force overrides the pin, not a request
    mgr.release("p")
    assert mgr.begin_unload("p", force=True) is True
    assert mgr.state("p") is State.UNLOADING


def test_a_shutdown_unload_takes_a_model_with_requests_in_flight():
    mgr = ledger(100, spec("p", 50, "pinned"), spec("a", 30))
    load(mgr, "p", "a")
    mgr.acquire("p")
    mgr.hold("a")
    assert mgr.begin_unload("p", force=True, abort=True) is True
    assert mgr.begin_unload("a", abort=True) is True
    mgr.unloaded("p")
    mgr.release("p")  # the aborted request ends after the unload
    assert states(mgr) == {"p": "cold", "a": "unloading"}
    assert mgr.committed_bytes() == 30


def test_unload_failed_needs_an_unload_in_progress():
    mgr = ledger(100, spec("a", 50))
    load(mgr, "a")
    with pytest.raises(ResidencyStateError):
        mgr.unload_failed("a")


@pytest.mark.parametrize(
    "setup, call, message",
    [
        ([], "loaded", "cannot mark loaded 'a': it is cold, not loading"),
        ([], "unloaded", "cannot mark unloaded 'a': it is cold, not unloading"),
        ([], "begin_unload", "cannot unload 'a': it is cold, not resident"),
        (["admit"], "begin_unload", "cannot unload 'a': it is loading, not resident"),
        (["admit", "loaded"], "loaded", "cannot mark loaded 'a': it is resident, not loading"),
        (["admit", "loaded"], "unloaded", "cannot mark unloaded 'a': it is resident, not unloading"),
        (["admit", "loaded", "begin_unload"], "begin_unload", "it is unloading, not resident"),
        ([], "release", "'a' released with no request in flight"),
        ([], "unhold", "'a' unheld more often than held"),
    ],
)
def test_invalid_transitions_raise(setup, call, message):
    mgr = ledger(100, spec("a", 10))
    for step in setup:
        getattr(mgr, step)("a")
    before = mgr.models()
    with pytest.raises(ResidencyStateError, match=message):
        getattr(mgr, call)("a")
    assert mgr.models() == before


def test_load_failed_needs_a_loading_model():
    mgr = ledger(100, spec("a", 10))
    with pytest.raises(ResidencyStateError, match="cannot fail loading 'a': it is cold"):
        mgr.load_failed("a", "x")


def test_requests_and_holds_are_counted_and_stamp_last_used():
    clock = Clock(1.0)
    mgr = ledger(100, spec("a", 10), clock=clock)
    mgr.acquire("a")
    mgr.acquire("a")
    mgr.hold("a")
    clock.now = 4.0
    mgr.release("a")
    a = mgr.models()[0]
    assert (a.in_flight, a.holds, a.last_used, a.resident_bytes) == (1, 1, 4.0, 0)


# -- scale to zero ----------------------------------------------------------------------------------


def test_idle_models_expire_after_their_timeout():
    clock = Clock()
    mgr = ledger(
        100,
        spec("a", 10, idle=10.0),
        spec("b", 10, idle=20.0),
        spec("c", 10),
        spec("p", 10, "pinned"),
        clock=clock,
    )
    load(mgr, "a", "b", "c", "p")
    clock.now = 10.0
    assert mgr.expired() == []  # idle exactly as long as the timeout: not yet
    clock.now = 10.5
    assert mgr.expired() == ["a"]
    clock.now = 25.0
    assert mgr.expired() == ["a", "b"]  # c has no timeout, p is pinned
    mgr.acquire("b")
    assert mgr.expired() == ["a"]
    mgr.release("b")  # the release at 25 restarts b's idle time
    mgr.hold("a")
    assert mgr.expired() == []
    mgr.unhold("a")
    assert mgr.expired() == ["a"]
    assert mgr.begin_unload("a") is True
    assert mgr.expired() == []


def test_expired_lists_the_longest_idle_first():
    clock = Clock()
    mgr = ledger(100, spec("x", 10, idle=5.0), spec("y", 10, idle=5.0), spec("z", 10, idle=5.0), clock=clock)
    for t, name in ((2.0, "x"), (0.0, "y"), (2.0, "z")):
        clock.now = t
        load(mgr, name)
    clock.now = 100.0
    assert mgr.expired() == ["y", "x", "z"]


# -- randomized: the invariants hold under any sequence of calls ------------------------------------


def _check_invariants(mgr: ResidencyManager) -> None:
    views = mgr.models()
    assert mgr.committed_bytes() <= mgr.budget_bytes
    assert mgr.committed_bytes() == sum(v.resident_bytes for v in views)
    assert mgr.free_bytes() == mgr.budget_bytes - mgr.committed_bytes()
    entries = mgr._models
    for v in views:
        e = entries[v.name]
        assert v.in_flight >= 0 and v.holds >= 0 and e.owed >= 0
        if v.state is State.COLD:
            assert (v.resident_bytes, v.kv_blocks, e.extra_blocks, e.owed) == (0, 0, 0, 0)
        if v.state is State.RESIDENT:
            assert v.resident_bytes == e.full_bytes and e.owed == 0
            assert e.used_blocks <= v.kv_blocks
        if v.state is not State.UNLOADING:
            assert e.lent_to is None  # only an unloading model lends its bytes
        if e.owed:  # a waiting load is owed no more than its unloading models hold
            assert v.state is State.LOADING
            lenders = [entries[n] for n in v.waiting_on]
            assert all(x.state is State.UNLOADING for x in lenders)
            assert sum(x.full_bytes for x in lenders) >= e.owed
    # What is physically in memory if the driver loads only once a load waits for nothing.
    physical = sum(
        e.full_bytes
        for e in entries.values()
        if e.state in (State.RESIDENT, State.UNLOADING) or (e.state is State.LOADING and not e.owed)
    )
    assert physical <= mgr.budget_bytes


def _random_specs(rng: random.Random, budget: int) -> list[ModelBudget]:
    specs = [
        spec("p0", rng.randint(1, budget // 4), "pinned", floor=rng.randint(0, 4), block=rng.randint(1, 8))
    ]
    for i in range(5):
        block, weights = rng.choice([0, 1, 4, 16]), rng.randint(budget // 10, budget // 2)
        floor, idle, cost = rng.randint(0, 5) if block else 0, rng.choice([None, 1.0, 5.0]), rng.random() * 8
        specs.append(spec(f"m{i}", weights, floor=floor, block=block, idle=idle, cost=cost, priority=i % 2))
    return specs


_OPS = {"admit": 6, "loaded": 4, "unloaded": 4, "acquire": 2, "release": 3, "hold": 1, "unhold": 2}
_OPS |= {"load_failed": 1, "begin_unload": 2, "grow": 2, "shrink": 1, "report": 2, "tick": 2, "expire": 1}


def _random_step(rng: random.Random, mgr: ResidencyManager, clock: Clock) -> None:
    op = rng.choices(list(_OPS), weights=list(_OPS.values()))[0]
    # Mostly calls that make sense (admit a cold model, release a busy one), sometimes any name.
    likely = {
        "admit": [m.name for m in mgr.models() if m.state is State.COLD],
        "release": [m.name for m in mgr.models() if m.in_flight],
        "unhold": [m.name for m in mgr.models() if m.holds],
    }.get(op)
    name = rng.choice(likely if likely and rng.random() < 0.8 else [m.name for m in mgr.models()])
    allowed = (ResidencyStateError, PinnedModelError, ValueError)
    try:
        if op == "admit":
            before = {m.name: m for m in mgr.models()}
            decision = mgr.admit(name)
            if not decision.admitted:
                assert {m.name: m for m in mgr.models()} == before
                return
            assert mgr.state(name) in (State.LOADING, State.RESIDENT)
            for victim in decision.evict:
                was = before[victim]
                assert (was.state, was.policy, was.in_flight, was.holds) == (
                    State.RESIDENT,
                    Policy.ON_DEMAND,
                    0,
                    0,
                )
        elif op == "load_failed":
            mgr.load_failed(name, "boom")
        elif op == "grow":
            mgr.grow_kv(name, rng.randint(0, 20))
        elif op == "shrink":
            mgr.shrink_kv(name, rng.randint(0, 5))
        elif op == "report":
            mgr.report_kv_usage(name, rng.randint(0, mgr.kv_blocks(name)))
        elif op == "tick":
            clock.now += rng.choice([0.0, 0.5, 3.0])
        elif op == "expire":
            for expired in mgr.expired():
                assert mgr.begin_unload(expired) is True
        else:
            getattr(mgr, op)(name)
    except allowed:
        pass


@pytest.mark.parametrize("seed", range(25))
def test_random_sequences_keep_every_invariant(seed):
    rng = random.Random(seed)
    budget = rng.choice([100, 256, 1000])
    clock = Clock()
    mgr = ledger(budget, clock=clock)
    for s in _random_specs(rng, budget):
        try:
            mgr.add(s)
        except BudgetError:
            pass  # could never fit beside the pinned model: refused at config time
    assert len(mgr.models()) >= 3
    for _ in range(400):
        _random_step(rng, mgr, clock)
        _check_invariants(mgr)
    assert all(m.state is not State.UNLOADING for m in mgr.models() if m.policy is Policy.PINNED)


# -- no torch ---------------------------------------------------------------------------------------


def test_the_residency_modules_run_without_torch():
    """A fresh interpreter where torch and numpy cannot be imported loads the four modules (the
    static check of every scheduler/*.py file is in test_batch_scheduler.py) and runs a load."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    scheduler_dir = Path(__file__).resolve().parents[2] / "scheduler"
    code = textwrap.dedent(
        f"""
        import importlib.abc, importlib.util, sys, types

        class NoTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "numpy", "triton"):
                    raise ImportError("the scheduler imported " + name)
                return None

        sys.meta_path.insert(0, NoTorch())
        pkg = types.ModuleType("swiftserve")
        pkg.__path__ = []
        sys.modules["swiftserve"] = pkg
        spec = importlib.util.spec_from_file_location(
            "swiftserve.scheduler", {str(scheduler_dir / "__init__.py")!r},
            submodule_search_locations=[{str(scheduler_dir)!r}])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["swiftserve.scheduler"] = mod
        spec.loader.exec_module(mod)
        from swiftserve.scheduler import eviction, memory_budget, residency, residency_types
        mgr = residency.ResidencyManager(memory_budget.parse_bytes("1KiB"))
        mgr.add(residency_types.ModelBudget("a", 600, 1, 0, "on-demand"))
        mgr.add(residency_types.ModelBudget("b", 600, 1, 0, "on-demand"))
        mgr.admit("a"); mgr.loaded("a")
        assert mgr.admit("b").evict == ("a",)
        assert "torch" not in sys.modules and "numpy" not in sys.modules
        assert residency.__file__.startswith({str(scheduler_dir)!r})
        print("OK")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "OK", proc.stderr


def test_add_all_registers_every_model_or_none():
    mgr = ledger(100, spec("p", 40, "pinned"))
    with pytest.raises(BudgetError, match="the pinned models"):
        mgr.add_all([spec("q", 30, "pinned"), spec("r", 40, "pinned")])  # 110 pinned
    assert [m.name for m in mgr.models()] == ["p"]
    with pytest.raises(DuplicateModelError):
        mgr.add_all([spec("a", 10), spec("a", 10)])
    assert [m.name for m in mgr.models()] == ["p"]
    mgr.add_all([spec("q", 30, "pinned"), spec("a", 30)])
    assert states(mgr) == {"p": "cold", "q": "cold", "a": "cold"}


# -- fits_free: a speculative load's condition --------------------------------------------------------


def test_fits_free_only_within_free_memory_alone():
    mgr = ledger(100, spec("a", 60), spec("b", 40), spec("c", 41))
    assert mgr.fits_free("b") and mgr.fits_free("c")
    load(mgr, "a")  # 40 bytes free
    assert mgr.fits_free("b")
    assert not mgr.fits_free("c")  # 41 would evict the idle a: a guess must not
    assert not mgr.fits_free("a")  # resident already


def test_fits_free_not_while_a_load_waits_for_memory():
    mgr = ledger(100, spec("a", 60), spec("b", 50), spec("c", 10))
    load(mgr, "a")
    mgr.acquire("a")  # busy: b cannot evict it
    ticket = mgr.new_ticket()
    assert not mgr.admit("b", ticket).admitted  # b waits for memory under its ticket
    assert not mgr.fits_free("c")  # 10 fit, but the guess would go ahead of b
    mgr.withdraw("b", ticket)
    assert mgr.fits_free("c")
