"""The device executor's choice of which engine steps next: exact expectations."""

import pytest
from swiftserve.scheduler.step_policy import Candidate, StepPolicy


def _policy(*names: str, slack: float = 0.25, **weights: float) -> StepPolicy:
    policy = StepPolicy(urgent_slack_s=slack)
    for name in names:
        policy.register(name, weights.get(name, 1.0))
    return policy


def _run(
    policy: StepPolicy,
    steps: int,
    cost: dict[str, float],
    urgent: frozenset = frozenset(),
    demand: dict[str, int] | None = None,
) -> list:
    order, demand = [], demand or {}
    for _ in range(steps):
        name = policy.pick(Candidate(n, n in urgent, demand.get(n, 1)) for n in cost)
        order.append(name)
        policy.charge(name, cost[name])
    return order


def test_a_lone_busy_engine_gets_every_step():
    policy = _policy("a", "b")
    assert _run(policy, 4, {"a": 0.1}) == ["a", "a", "a", "a"]


def test_no_candidates_picks_nothing():
    assert _policy("a").pick([]) is None
    assert _policy("a").pick([Candidate("unregistered")]) is None


def test_equal_weights_share_device_time_not_step_count():
    # b's steps cost 3x a's: a runs three steps for each of b's.
    policy = _policy("a", "b")
    order = _run(policy, 8, {"a": 0.25, "b": 0.75})  # binary fractions: exact sums
    # At a tie (0.75 after four steps) b goes first: it has waited longer.
    assert order == ["a", "b", "a", "a", "b", "a", "a", "a"]
    assert policy.virtual_time("a") == 1.5
    assert policy.virtual_time("b") == 1.5


def test_device_time_is_shared_per_request_not_per_model():
    # a serves 6 sequences per step, b 2; steps cost the same: a gets 3 steps for each of b's.
    policy = _policy("a", "b")
    order = _run(policy, 8, {"a": 0.75, "b": 0.75}, demand={"a": 6, "b": 2})
    # At each tie b goes first: it has waited longer.
    assert order == ["a", "b", "a", "a", "b", "a", "a", "a"]
    assert policy.virtual_time("a") == 0.75  # six steps of 0.75 s over 6 sequences
    assert policy.virtual_time("b") == 0.75  # two steps of 0.75 s over 2 sequences


def test_demand_is_the_one_of_the_step_charged():
    policy = _policy("a")
    assert policy.pick([Candidate("a", demand=4)]) == "a"
    policy.charge("a", 1.0)
    assert policy.virtual_time("a") == 0.25
    assert policy.pick([Candidate("a", demand=1)]) == "a"
    policy.charge("a", 1.0)
    assert policy.virtual_time("a") == 1.25


def test_weights_scale_the_share():
    policy = _policy("a", "b", a=2.0)
    order = _run(policy, 6, {"a": 0.02, "b": 0.02})
    assert order.count("a") == 4 and order.count("b") == 2


def test_ties_go_to_the_engine_that_waited_longest_then_name():
    policy = _policy("b", "a")
    assert _run(policy, 4, {"a": 0.0, "b": 0.0}) == ["a", "b", "a", "b"]


def test_an_idle_engine_banks_no_credit():
    policy = _policy("a", "b")
    _run(policy, 10, {"a": 0.1})  # b idle meanwhile: a's virtual time is 1.0
    # b comes back at a's virtual time instead of 0, so it does not get 10 steps in a row.
    order = _run(policy, 4, {"a": 0.1, "b": 0.1})
    assert policy.virtual_time("b") >= 1.0
    assert sorted(order) == ["a", "a", "b", "b"]


def test_urgent_work_jumps_the_fair_order_within_the_slack():
    policy = _policy("decoder", "embedder", slack=0.25)
    _run(policy, 2, {"decoder": 0.05, "embedder": 0.1})  # decoder 0.05, embedder 0.1
    # embedder is 0.05 ahead (within the slack): its urgent batch runs first.
    assert policy.pick([Candidate("decoder"), Candidate("embedder", is_urgent=True)]) == "embedder"


def test_an_urgent_flood_cannot_starve_the_others_past_the_slack():
    policy = _policy("decoder", "embedder", slack=0.25)
    order = _run(policy, 12, {"decoder": 0.1, "embedder": 0.1}, urgent=frozenset({"embedder"}))
    # embedder runs ahead until it is more than 0.25 s of device time ahead, then they alternate.
    assert order[:4] == ["embedder", "embedder", "embedder", "decoder"]
    assert order.count("decoder") >= 4
    gap = policy.virtual_time("embedder") - policy.virtual_time("decoder")
    assert gap <= 0.25 + 0.1 + 1e-9


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="urgent_slack_s"):
        StepPolicy(urgent_slack_s=-1)
    with pytest.raises(ValueError, match="max_step_gap_s"):
        StepPolicy(max_step_gap_s=0)
    policy = _policy("a")
    with pytest.raises(ValueError, match="already registered"):
        policy.register("a")
    with pytest.raises(ValueError, match="weight"):
        policy.register("b", 0)
    with pytest.raises(ValueError, match="step_seconds"):
        policy.charge("a", -0.1)
    for demand in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="demand"):
            Candidate("a", demand=demand)


def test_charging_a_removed_engine_is_ignored():
    policy = _policy("a")
    policy.remove("a")
    policy.charge("a", 1.0)
    assert policy.pick([Candidate("a")]) is None


def test_a_busy_engine_steps_at_least_every_max_step_gap():
    # big serves 30 sequences, small 1; per request, small would get one step in 30.
    policy = StepPolicy(max_step_gap_s=0.25)
    policy.register("big")
    policy.register("small")
    both = [Candidate("big", demand=30), Candidate("small", demand=1)]
    now, order = 0.0, []
    for _ in range(12):
        name = policy.pick(both, now)
        order.append(name)
        now += 0.1  # every step takes 0.1 s
        policy.charge(name, 0.1, now)
    # small steps first (ties: name), then waits out the gap: 0.1 s steps, so every 3rd step.
    assert order == ["big", "small", "big", "big", "big", "small", "big", "big", "big", "small", "big", "big"]


def test_the_step_gap_counts_from_when_an_engine_became_busy():
    policy = StepPolicy(max_step_gap_s=0.25)
    policy.register("big")
    policy.register("late")
    for step in range(5):
        policy.pick([Candidate("big", demand=30)], now=0.1 * step)
        policy.charge("big", 0.1, now=0.1 * (step + 1))
    both = [Candidate("big", demand=30), Candidate("late", demand=1)]
    assert policy.pick(both, now=0.5) == "late"  # it rejoins at big's virtual time: fair pick
    policy.charge("late", 0.1, now=0.6)
    assert policy.pick(both, now=0.6) == "big"
    policy.charge("big", 0.1, now=0.7)
    assert policy.pick(both, now=0.7) == "big"  # late has waited 0.1 s
    policy.charge("big", 0.1, now=0.8)
    assert policy.pick(both, now=0.86) == "late"  # 0.26 s > 0.25 s


def test_without_a_clock_there_is_no_step_gap_floor():
    policy = StepPolicy(max_step_gap_s=0.01)
    policy.register("big")
    policy.register("small")
    both = [Candidate("big", demand=30), Candidate("small", demand=1)]
    order = []
    for _ in range(6):
        name = policy.pick(both)
        order.append(name)
        policy.charge(name, 0.3)
    assert order == ["big", "small", "big", "big", "big", "big"]


# -- request priority across engines ------------------------------------------------------------


def test_only_the_most_urgent_priority_shares_the_device_and_the_others_step_at_the_floor():
    policy = StepPolicy(max_step_gap_s=0.2)
    for name in ("a", "b", "c"):
        policy.register(name)
    # b serves eight requests, each less urgent than a's and c's one; a first-token rush on b
    # changes nothing either.
    ready = [Candidate("a"), Candidate("b", is_urgent=True, demand=8, priority=5), Candidate("c")]
    order, now = [], 0.0
    for _ in range(12):
        name = policy.pick(ready, now)
        now += 0.05
        policy.charge(name, 0.05, now)
        order.append(name)
    # a and c share the device; b steps once it has waited past the 0.2 s floor (at 0.25, 0.55).
    assert "".join(order) == "acacabcacacb"
    assert policy.pick(ready) in ("a", "c")  # without a clock, no floor: b never
    # The urgent engines done, b gets every step (work-conserving).
    assert [policy.pick([ready[1]], now) for _ in range(3)] == ["b", "b", "b"]


def test_one_priority_everywhere_changes_nothing():
    same = [Candidate("a", demand=2, priority=3), Candidate("b", demand=1, priority=3)]
    default = [Candidate("a", demand=2), Candidate("b", demand=1)]
    orders = []
    for ready in (same, default):
        policy = _policy("a", "b")
        order = []
        for _ in range(9):
            name = policy.pick(ready)
            policy.charge(name, 0.1)
            order.append(name)
        orders.append("".join(order))
    assert orders[0] == orders[1] == "ababaabaa"  # a serves two requests: twice the steps
