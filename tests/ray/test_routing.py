"""The routing rule (swiftserve/ray/routing.py) on plain reports: exact orders, no ray needed."""

from __future__ import annotations

from swiftserve.ray.routing import (
    ReplicaReport,
    RouteRequest,
    expect_loading,
    rank,
    rendezvous_weight,
)

GiB = 1 << 30


def _r(rid: str, models: dict[str, str] | None = None, depth: int = 0, free: int = 0) -> ReplicaReport:
    return ReplicaReport(rid, models or {}, depth, free)


def test_resident_first_then_parked_then_the_most_free_budget():
    reports = [
        _r("a", {"chat": "cold"}, depth=0, free=1 * GiB),
        _r("b", {"chat": "parked"}, depth=5, free=0),
        _r("c", {"chat": "resident"}, depth=9, free=0),
        _r("d", {}, depth=0, free=3 * GiB),
        _r("e", {"chat": "loading"}, depth=2, free=0),
    ]
    assert rank(RouteRequest(("chat",)), reports) == ["e", "c", "b", "d", "a"]


def test_least_loaded_within_a_tier_counts_what_this_router_has_in_flight():
    reports = [_r("a", {"m": "resident"}, depth=1), _r("b", {"m": "resident"}, depth=2)]
    assert rank(RouteRequest(("m",)), reports) == ["a", "b"]
    # The reports are a fraction of a second old; this router's own count is fresher.
    assert rank(RouteRequest(("m",)), reports, in_flight={"a": 3}) == ["b", "a"]


def test_ties_break_by_replica_id():
    reports = [_r("b", {"m": "resident"}), _r("a", {"m": "resident"})]
    assert rank(RouteRequest(("m",)), reports) == ["a", "b"]


def test_cold_everywhere_goes_where_the_most_budget_is_free_then_least_loaded():
    reports = [_r("a", free=2 * GiB, depth=4), _r("b", free=2 * GiB, depth=1), _r("c", free=1 * GiB)]
    assert rank(RouteRequest(("m",)), reports) == ["b", "a", "c"]


def test_a_pipeline_sums_its_models_tiers():
    reports = [
        _r("a", {"embed": "resident", "chat": "cold"}),  # 0 + 2
        _r("b", {"embed": "parked", "chat": "parked"}, depth=3),  # 1 + 1
        _r("c", {"embed": "resident", "chat": "parked"}, depth=7),  # 0 + 1
    ]
    assert rank(RouteRequest(("embed", "chat")), reports) == ["c", "a", "b"]


def test_session_affinity_is_stable_and_limited_to_replicas_with_the_model_resident():
    reports = [_r(x, {"m": "resident"}) for x in "abcd"] + [_r("e", {"m": "cold"}, free=GiB)]
    weights = {x: rendezvous_weight("user-7", x) for x in "abcde"}
    expected = max("abcd", key=weights.__getitem__)
    first = rank(RouteRequest(("m",), "user-7"), reports)
    assert first[0] == expected
    assert first[1:] == [x for x in "abcde" if x != expected]
    # The same session, the same replica, whatever the others' loads.
    loaded = [_r(x, {"m": "resident"}, depth=1 if x != expected else 2) for x in "abcd"]
    assert rank(RouteRequest(("m",), "user-7"), loaded)[0] == expected


def test_session_affinity_yields_to_a_large_imbalance():
    reports = [_r("a", {"m": "resident"}, depth=0), _r("b", {"m": "resident"}, depth=0)]
    sticky = rank(RouteRequest(("m",), "s"), reports)[0]
    other = "b" if sticky == "a" else "a"
    busy = [_r(sticky, {"m": "resident"}, depth=9), _r(other, {"m": "resident"}, depth=0)]
    assert rank(RouteRequest(("m",), "s"), busy, max_imbalance=8) == [other, sticky]
    assert rank(RouteRequest(("m",), "s"), busy, max_imbalance=9) == [sticky, other]


def test_rendezvous_weights_are_fixed_values():
    # blake2b, not hash(): every ingress process agrees.
    assert rendezvous_weight("s", "a") == rendezvous_weight("s", "a")
    assert rendezvous_weight("s", "a") != rendezvous_weight("s", "b")
    assert rendezvous_weight("", "a") == int.from_bytes(
        __import__("hashlib").blake2b(b"\0a", digest_size=8).digest(), "big"
    )


def test_expect_loading_makes_a_burst_follow_the_first_request():
    reports = [_r("a", free=2 * GiB), _r("b", free=1 * GiB)]
    assert rank(RouteRequest(("m",)), reports) == ["a", "b"]
    after = [expect_loading(reports[0], "m"), reports[1]]
    assert after[0].models == {"m": "loading"}
    # Even with a request in flight there, a replica loading the model beats a cold one.
    assert rank(RouteRequest(("m",)), after, in_flight={"a": 1}) == ["a", "b"]
    resident = _r("c", {"m": "resident"}, depth=4)
    assert expect_loading(resident, "m") is resident


def test_no_reports_yet_ranks_by_id():
    assert rank(RouteRequest(("m",)), [_r("b"), _r("a")]) == ["a", "b"]
    assert rank(RouteRequest(("m",)), []) == []
