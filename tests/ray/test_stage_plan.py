"""Tier 1, no Ray: which of a pipeline's models leave the entry replica, and where each one's
pre-warm and stage call go (stage_plan.py with routing.py's rule), with exact expectations."""

from __future__ import annotations

from dataclasses import replace

from swiftserve.router.stage_caller import StageCall

from swiftserve.ray.relay import RelayedRequest
from swiftserve.ray.routing import ReplicaReport, RouteRequest, expect_loading, rank
from swiftserve.ray.stage_plan import elsewhere, route_of
from swiftserve.ray.stage_wire import PrewarmCall

PIPELINES = {"rag": ("embed", "chat", "big")}


def test_models_not_resident_or_loading_here_run_elsewhere():
    here = {"embed": "resident", "small": "loading", "merge": "parked", "big": "cold"}
    assert elsewhere(("embed", "small", "merge", "big", "unknown"), here) == {"merge", "big", "unknown"}
    assert elsewhere(("embed", "small"), here) == frozenset()
    assert elsewhere((), here) == frozenset()


def test_calls_are_routed_by_their_models():
    relayed = RelayedRequest("POST", "/v1/chat/completions", (), b"", "rag", "s1")
    assert route_of(relayed, PIPELINES) == RouteRequest(("embed", "chat", "big"), "s1")
    assert route_of(replace(relayed, model="chat"), PIPELINES) == RouteRequest(("chat",), "s1")
    assert route_of(replace(relayed, model=None), PIPELINES) == RouteRequest(())
    assert route_of(StageCall("chat", "chat", ()), PIPELINES) == RouteRequest(("chat",))
    assert route_of(PrewarmCall(("a", "b")), PIPELINES) == RouteRequest(("a", "b"))
    assert route_of(["chat"], PIPELINES) == RouteRequest(())
    assert route_of(None, PIPELINES) == RouteRequest(())


def _first(arg, reports) -> str:
    return rank(route_of(arg, PIPELINES), reports)[0]


def test_each_stage_model_goes_where_it_is_resident_else_parked_else_most_free():
    a = ReplicaReport("a", {"embed": "resident"}, queue_depth=0, free_budget_bytes=10)
    b = ReplicaReport("b", {"chat": "resident"}, queue_depth=3, free_budget_bytes=20)
    c = ReplicaReport("c", {"chat": "parked", "embed": "parked"}, queue_depth=0, free_budget_bytes=30)
    reports = [a, b, c]
    # The pipeline enters a: every replica's tiers sum to 4 (a 0+2+2, b 2+0+2, c 1+1+2); a and c
    # are the least loaded, a first by id.
    assert _first(RelayedRequest("POST", "/", (), b"", "rag"), reports) == "a"
    assert elsewhere(PIPELINES["rag"], a.models) == {"chat", "big"}
    # chat: resident on b though b is busier; big: cold everywhere, to the most free budget.
    placed = {m: _first(PrewarmCall((m,)), reports) for m in ("chat", "big")}
    assert placed == {"chat": "b", "big": "c"}
    # The pre-warm of big was sent to c: its stage call follows it there, though b reports more
    # free budget now (until c's next report says what is true).
    reports = [a, replace(b, free_budget_bytes=99), expect_loading(c, "big")]
    assert _first(StageCall("big", "chat", ()), reports) == "c"
    assert _first(StageCall("chat", "chat", ()), reports) == "b"
