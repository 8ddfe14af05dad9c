"""The host tier's bookkeeping and the ledger's parked state, exactly: what parks, what is dropped
to disk for it (least recently parked first), and how parking changes the eviction order."""

from __future__ import annotations

import pytest
from swiftserve.scheduler.host_tier import HostTier, ParkDecision, ParkedModel
from swiftserve.scheduler.residency import ResidencyManager
from swiftserve.scheduler.residency_types import (
    BudgetError,
    LoadDecision,
    ModelBudget,
    Policy,
    ResidencyStateError,
    State,
    Tier,
    UnknownModelError,
    UnloadTo,
)

AUTO, HOST, DISK = UnloadTo.AUTO, UnloadTo.HOST, UnloadTo.DISK


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def tier(budget: int, *parks: tuple[str, int, UnloadTo]) -> tuple[HostTier, Clock]:
    """A tier with `parks` parked one second apart (a at t=0, b at t=1, ...)."""
    clock = Clock()
    host = HostTier(budget, clock)
    for name, num_bytes, unload_to in parks:
        assert host.park(name, num_bytes, unload_to).tier is Tier.HOST
        clock.now += 1
    return host, clock


# -- HostTier ---------------------------------------------------------------------------------------


def test_a_model_that_fits_is_parked_with_its_bytes_and_time():
    host, clock = tier(100)
    clock.now = 7.0
    assert host.park("a", 60, AUTO) == ParkDecision(Tier.HOST, (), "parked in free host memory")
    assert host.parked() == [ParkedModel("a", 60, 7.0, AUTO)]
    assert (host.used_bytes(), host.free_bytes(), host.parked_bytes("a")) == (60, 40, 60)


def test_the_least_recently_parked_models_are_dropped_to_make_room():
    host, _ = tier(100, ("a", 30, AUTO), ("b", 30, AUTO), ("c", 30, AUTO))
    decision = host.park("d", 60, AUTO)  # free 10: a and b (the oldest) must go, c stays
    assert decision == ParkDecision(Tier.HOST, ("a", "b"), "parked after dropping a, b to disk")
    assert [m.name for m in host.parked()] == ["c", "d"]
    assert host.used_bytes() == 90


def test_disk_policy_and_a_model_larger_than_the_budget_never_park():
    host, _ = tier(100, ("a", 50, AUTO))
    assert host.park("big", 101, HOST) == ParkDecision(
        Tier.DISK, (), "its weights (101B) exceed the host memory budget (100B)"
    )
    assert host.park("d", 10, DISK) == ParkDecision(Tier.DISK, (), "unload_to is disk")
    assert [m.name for m in host.parked()] == ["a"]  # nothing dropped for a refusal
    assert not HostTier(0).can_hold(1, AUTO)  # host_memory 0: the tier is off


def test_an_auto_model_never_drops_a_host_one_but_a_host_model_drops_any():
    host, _ = tier(100, ("pinned-host", 40, HOST), ("x", 40, AUTO))
    assert host.park("y", 70, AUTO) == ParkDecision(  # it could drop only x: 60 free, not 70
        Tier.DISK, (), "the host tier is full of models it may not drop"
    )
    assert [m.name for m in host.parked()] == ["pinned-host", "x"]
    assert host.park("z", 90, HOST).drop == ("pinned-host", "x")  # oldest first, whatever its policy
    assert [m.name for m in host.parked()] == ["z"]


def test_a_model_being_reloaded_is_never_dropped_and_unpark_frees_its_bytes():
    host, _ = tier(100, ("a", 50, AUTO), ("b", 40, AUTO))
    host.begin_reload("a")
    assert host.park("c", 50, AUTO).drop == ("b",)  # a, older, is being copied back
    assert host.unpark("a") == ParkedModel("a", 50, 0.0, AUTO, is_reloading=True)
    assert (host.used_bytes(), [m.name for m in host.parked()]) == (50, ["c"])
    with pytest.raises(UnknownModelError):
        host.unpark("a")
    with pytest.raises(ResidencyStateError):
        host.park("c", 50, AUTO)


def test_unload_to_host_that_can_never_fit_is_a_budget_error():
    with pytest.raises(BudgetError, match="'m' has unload_to host but its weights"):
        HostTier(100).check("m", 101, HOST)
    HostTier(100).check("m", 101, AUTO)  # auto simply goes to disk


# -- the ledger's parked state ----------------------------------------------------------------------


def spec(name, weights, *, unload_to=AUTO, cost=1.0, host_cost=0.1, policy="on-demand"):
    return ModelBudget(
        name, weights, 1, 0, Policy(policy), None, cost, 0, unload_to=unload_to, host_reload_cost_s=host_cost
    )


def ledger(budget: int, host_budget: int, *specs: ModelBudget, clock=None) -> ResidencyManager:
    mgr = ResidencyManager(budget, clock or Clock(), host_budget_bytes=host_budget)
    for s in specs:
        mgr.add(s)
    return mgr


def load(mgr: ResidencyManager, name: str, seconds: float | None = None) -> None:
    assert mgr.admit(name).admitted
    mgr.loaded(name, seconds)


def unload(mgr: ResidencyManager, name: str) -> ParkDecision:
    assert mgr.begin_unload(name)
    decision = mgr.choose_tier(name)
    mgr.unloaded(name, parked=decision.tier is Tier.HOST)
    return decision


def states(mgr: ResidencyManager) -> dict[str, str]:
    return {m.name: m.state.value for m in mgr.models()}


def test_an_unload_parks_the_weights_outside_the_budget_and_a_reload_takes_them_back():
    mgr = ledger(100, 60, spec("a", 50))
    load(mgr, "a")
    assert unload(mgr, "a") == ParkDecision(Tier.HOST, (), "parked in free host memory")
    assert (mgr.state("a"), mgr.committed_bytes(), mgr.host.used_bytes()) == (State.PARKED, 0, 50)
    assert mgr.models()[0].parked_bytes == 50
    assert mgr.admit("a") == LoadDecision(True, reason="fits in free memory")
    assert (mgr.committed_bytes(), mgr.host.used_bytes()) == (50, 50)  # both, while it is copied back
    mgr.loaded("a", 0.02)
    assert (mgr.state("a"), mgr.committed_bytes(), mgr.host.used_bytes()) == (State.RESIDENT, 50, 0)
    m = mgr.models()[0]
    assert (m.loads, m.unloads, m.parked_bytes) == (2, 1, 0)


def test_parking_b_drops_the_oldest_parked_model_to_cold():
    clock = Clock()
    mgr = ledger(100, 60, spec("a", 40), spec("b", 40), clock=clock)
    for name in ("a", "b"):
        load(mgr, name)
    assert unload(mgr, "a").tier is Tier.HOST
    clock.now = 1.0
    assert unload(mgr, "b") == ParkDecision(Tier.HOST, ("a",), "parked after dropping a to disk")
    assert states(mgr) == {"a": "cold", "b": "parked"}
    assert mgr.host.used_bytes() == 40


def test_unload_to_disk_never_parks_and_a_failed_park_goes_cold():
    mgr = ledger(100, 60, spec("d", 40, unload_to=DISK), spec("a", 40))
    load(mgr, "d")
    load(mgr, "a")
    assert unload(mgr, "d") == ParkDecision(Tier.DISK, (), "unload_to is disk")
    assert mgr.begin_unload("a") and mgr.choose_tier("a").tier is Tier.HOST
    mgr.unloaded("a", parked=False)  # the driver could not keep the weights after all
    assert states(mgr) == {"d": "cold", "a": "cold"}
    assert mgr.host.used_bytes() == 0


def test_drop_and_a_failed_reload_free_the_parked_weights():
    mgr = ledger(100, 60, spec("a", 40), spec("b", 10))
    for name in ("a", "b"):
        load(mgr, name)
        unload(mgr, name)
    mgr.drop("a")
    assert mgr.admit("b").admitted
    mgr.load_failed("b", "OSError: boom")
    assert states(mgr) == {"a": "cold", "b": "cold"} and mgr.host.used_bytes() == 0
    with pytest.raises(ResidencyStateError):
        mgr.drop("a")


def test_the_eviction_order_prefers_the_model_that_would_come_back_from_host_memory():
    # Same bytes, same idle time: the disk-only model would cost 1 s to reload, the other 0.1 s.
    mgr = ledger(100, 60, spec("disk-only", 40, unload_to=DISK), spec("parks", 40), spec("new", 40))
    load(mgr, "disk-only")
    load(mgr, "parks")
    decision = mgr.admit("new")
    assert decision.evict == ("parks",)
    mgr.unloaded("parks", parked=mgr.choose_tier("parks").tier is Tier.HOST)
    mgr.loaded("new")
    assert states(mgr) == {"disk-only": "resident", "parks": "parked", "new": "resident"}


def test_measured_load_times_become_the_reload_costs_of_their_tier():
    mgr = ledger(100, 60, spec("a", 40, cost=1.0, host_cost=0.1))
    entry = mgr._models["a"]
    assert entry.reload_cost_s == 0.1  # it would be parked: the host estimate
    load(mgr, "a", 0.5)
    unload(mgr, "a")
    load(mgr, "a", 0.03)
    assert entry.measured_reload_s == {Tier.DISK: 0.5, Tier.HOST: 0.03}
    assert entry.reload_cost_s == 0.03
    assert ledger(100, 0, spec("b", 40)).models()[0].parked_bytes == 0  # host_memory 0: disk costs
    assert ledger(100, 0, spec("b", 40))._models["b"].reload_cost_s == 1.0


def test_unload_to_host_beyond_the_host_budget_is_refused_when_added():
    with pytest.raises(BudgetError, match="unload_to host"):
        ledger(100, 30, spec("a", 40, unload_to=HOST))


def test_a_failed_unload_is_resident_again_and_gives_back_its_host_place():
    clock = Clock()
    mgr = ledger(100, 60, spec("a", 50), clock=clock)
    load(mgr, "a")
    assert mgr.begin_unload("a") and mgr.choose_tier("a").tier is Tier.HOST
    assert mgr.host.used_bytes() == 50
    clock.now = 7.0
    mgr.unload_failed("a")  # the driver found requests in flight after all
    assert (mgr.state("a"), mgr.committed_bytes(), mgr.host.used_bytes()) == (State.RESIDENT, 50, 0)
    m = mgr.models()[0]
    assert (m.loads, m.unloads, m.last_used) == (1, 0, 7.0)
    assert unload(mgr, "a").tier is Tier.HOST  # and a later unload goes through as usual
