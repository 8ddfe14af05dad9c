"""Memory granted in arrival order: the queue of waiting loads, FIFO admission with non-blocking
backfill, leases that keep a model only from newer requests, and a pipeline whose models do not
fit together. Pure ledger, exact values."""

from __future__ import annotations

from swiftserve.scheduler.arrival_queue import ArrivalQueue
from swiftserve.scheduler.residency import ResidencyManager
from swiftserve.scheduler.residency_types import LoadDecision, ModelBudget, Policy, State


def spec(name: str, weights: int, policy: str = "on-demand") -> ModelBudget:
    return ModelBudget(name, weights, 1, 0, Policy(policy))


def ledger(budget: int, *specs: ModelBudget) -> ResidencyManager:
    mgr = ResidencyManager(budget, lambda: 0.0)
    mgr.add_all(list(specs))
    return mgr


def resident(mgr: ResidencyManager, *names: str) -> None:
    for name in names:
        assert mgr.admit(name).admitted
        mgr.loaded(name)


def states(mgr: ResidencyManager) -> dict[str, str]:
    return {m.name: m.state.value for m in mgr.models()}


# -- the queue ----------------------------------------------------------------------------------


def test_tickets_count_up_and_a_model_waits_in_its_oldest_requests_place():
    queue = ArrivalQueue()
    assert [queue.new_ticket() for _ in range(3)] == [1, 2, 3]
    queue.wait(3, "a", ("big",))
    queue.wait(2, "b", ())
    queue.wait(1, "a", ("big",))
    assert queue.waiting() == [(1, "a"), (2, "b"), (3, "a")]
    assert queue.ahead_of(3, "b") == [(1, "a")]
    assert queue.ahead_of(4, "c") == [(1, "a"), (2, "b")]
    assert queue.ahead_of(1, "c") == []
    assert (queue.is_wanted("big", 2), queue.is_wanted("big", 1), queue.is_wanted("b", 9)) == (
        True,
        False,
        False,
    )
    queue.withdraw(1, "a")
    queue.withdraw(1, "a")  # twice: a no-op
    assert queue.ahead_of(4, "c") == [(2, "b"), (3, "a")]
    queue.admitted("a")
    assert queue.waiting() == [(2, "b")]


# -- arrival order of admissions ----------------------------------------------------------------


def test_loads_waiting_for_memory_are_admitted_oldest_first():
    mgr = ledger(100, spec("busy", 60), spec("a", 50), spec("b", 50))
    resident(mgr, "busy")
    mgr.acquire("busy")
    a, b = mgr.new_ticket(), mgr.new_ticket()
    assert mgr.admit("a", a) == LoadDecision(
        False,
        reason="'a' needs 50B but only 40B can be freed now; kept by busy (1 in flight, 0 held)",
        blocked_by=("busy",),
    )
    assert mgr.admit("b", b) == LoadDecision(False, reason="queued behind a, asked for earlier")
    mgr.release("busy")
    # b asks first once busy is free, yet a was queued earlier and can load now: a goes first.
    assert mgr.admit("b", b) == LoadDecision(False, reason="'a' was queued earlier and loads first")
    assert mgr.admit("a", a) == LoadDecision(True, ("busy",), {}, "fits after evicting busy")
    assert mgr.queue.waiting() == [(b, "b")]
    assert states(mgr) == {"busy": "unloading", "a": "loading", "b": "cold"}


def test_a_later_load_backfills_only_where_it_never_delays_an_older_one():
    mgr = ledger(100, spec("busy", 60), spec("a", 70), spec("c", 10), spec("d", 30))
    resident(mgr, "busy")
    mgr.acquire("busy")
    a, c, d = mgr.new_ticket(), mgr.new_ticket(), mgr.new_ticket()
    assert not mgr.admit("a", a).admitted  # 70 needs busy's 60
    # c fits in the 40 free bytes, and without c's 10 the 100 that a could get once busy is
    # free still covers a's 70: c goes ahead.
    assert mgr.admit("c", c) == LoadDecision(True, reason="fits in free memory")
    # d (30) fits in the 30 left free, but then 100 - 10 (c loading) - 30 = 60 < 70: a would
    # wait for d. It stays behind a.
    assert mgr.admit("d", d) == LoadDecision(False, reason="queued behind a, asked for earlier")
    assert (mgr.free_bytes(), mgr.queue.waiting()) == (30, [(a, "a"), (d, "d")])


def test_a_load_without_a_ticket_queues_behind_every_waiter_but_is_not_queued():
    mgr = ledger(100, spec("busy", 60), spec("a", 50), spec("e", 50))
    resident(mgr, "busy")
    mgr.acquire("busy")
    a = mgr.new_ticket()
    assert not mgr.admit("a", a).admitted
    assert mgr.admit("e") == LoadDecision(False, reason="queued behind a, asked for earlier")
    assert mgr.queue.waiting() == [(a, "a")]


def test_a_withdrawn_waiter_no_longer_holds_back_the_later_ones():
    mgr = ledger(100, spec("busy", 60), spec("a", 70), spec("b", 40))
    resident(mgr, "busy")
    mgr.acquire("busy")
    a, b = mgr.new_ticket(), mgr.new_ticket()
    mgr.admit("a", a)
    assert not mgr.admit("b", b).admitted  # b fits the 40 free, but 100 - 40 = 60 < a's 70
    mgr.withdraw("a", a)
    assert mgr.admit("b", b) == LoadDecision(True, reason="fits in free memory")
    assert mgr.queue.waiting() == []


# -- leases -------------------------------------------------------------------------------------


def test_a_newer_lease_does_not_keep_an_older_waiter_from_the_memory():
    mgr = ledger(100, spec("big", 60), spec("gemma", 50))
    resident(mgr, "big")
    p0 = mgr.hold("big")  # a pipeline that arrived before gemma's request
    gemma = mgr.new_ticket()
    assert mgr.admit("gemma", gemma) == LoadDecision(
        False,
        reason="'gemma' needs 50B but only 40B can be freed now; kept by big (0 in flight, 1 held)",
        blocked_by=("big",),
    )
    p1 = mgr.hold("big")  # pipelines arriving after it lease big too
    p2 = mgr.hold("big")
    assert (p0, gemma, p1, p2) == (2, 3, 4, 5)  # ticket 1 went to the load of big
    assert not mgr.may_start("big", p1)  # p1's stage waits: gemma's load wants big's memory
    assert mgr.may_start("big", p0)  # p0 arrived first: its stages run
    mgr.unhold("big", p0)
    assert mgr.admit("gemma", gemma) == LoadDecision(True, ("big",), {}, "fits after evicting big")
    assert (mgr.models()[0].holds, mgr.may_start("big", p1)) == (2, True)
    # A load newer than p1 and p2 (an admin load: no ticket) may not take it.
    mgr.unloaded("big")
    mgr.loaded("gemma")
    mgr.acquire("gemma")
    assert mgr.admit("big", p1).blocked_by == ("gemma",)


def test_a_lease_keeps_its_model_from_every_newer_request_and_idle_unloads():
    mgr = ledger(100, spec("big", 60), spec("gemma", 50))
    resident(mgr, "big")
    lease = mgr.hold("big")
    later = mgr.new_ticket()
    assert mgr.admit("gemma", later).blocked_by == ("big",)
    assert mgr.admit("gemma").blocked_by == ("big",)  # no ticket: newer than every lease
    assert mgr.begin_unload("big") is False
    mgr.unhold("big", lease)
    assert mgr.admit("gemma", later).evict == ("big",)


def test_unhold_ends_the_lease_of_its_ticket():
    mgr = ledger(100, spec("big", 60))
    first, second = mgr.hold("big"), mgr.hold("big", 7)
    mgr.unhold("big", first)
    assert mgr.models()[0].holds == 1
    assert mgr.admit("big", 8).admitted  # cold: a lease on a cold model changes nothing here
    mgr.unhold("big")  # the latest
    assert second == 7 and mgr.models()[0].holds == 0


# -- a pipeline whose models do not fit together --------------------------------------------------


def test_a_pipeline_whose_models_do_not_fit_together_never_deadlocks():
    # p needs a (first stage) then b; 60 + 60 > 100. Its own lease on a keeps a from its own
    # load of b until a's last stage ends; a newer request queues behind p's load of b.
    mgr = ledger(100, spec("a", 60), spec("b", 60), spec("c", 50))
    p = mgr.new_ticket()
    mgr.hold("a", p)
    mgr.hold("b", p)
    assert mgr.admit("a", p) == LoadDecision(True, reason="fits in free memory")
    mgr.loaded("a")
    assert mgr.admit("b", p).blocked_by == ("a",)
    newer = mgr.new_ticket()
    assert mgr.admit("c", newer) == LoadDecision(False, reason="queued behind b, asked for earlier")
    assert mgr.may_start("a", p)  # p's own first stage is never held back by its own load
    mgr.acquire("a")
    mgr.release("a")
    mgr.unhold("a", p)  # a's last stage ended
    assert mgr.admit("c", newer) == LoadDecision(False, reason="'b' was queued earlier and loads first")
    assert mgr.admit("b", p) == LoadDecision(True, ("a",), {}, "fits after evicting a")
    mgr.unloaded("a")
    mgr.loaded("b")
    assert mgr.admit("c", newer).blocked_by == ("b",)  # p's lease on b: c is newer
    mgr.unhold("b", p)
    assert mgr.admit("c", newer).evict == ("b",)
    assert mgr.state("c") is State.LOADING and mgr.queue.waiting() == []


def test_pinned_models_stay_out_of_what_waiting_loads_could_get():
    mgr = ledger(100, spec("pin", 30, "pinned"), spec("busy", 40), spec("a", 60), spec("c", 30))
    resident(mgr, "pin", "busy")
    mgr.acquire("busy")
    a, c = mgr.new_ticket(), mgr.new_ticket()
    assert not mgr.admit("a", a).admitted
    # c fits the 30 free, but 100 - 30 (pinned) - 30 = 40 < 60: it would make a wait.
    assert mgr.admit("c", c) == LoadDecision(False, reason="queued behind a, asked for earlier")
