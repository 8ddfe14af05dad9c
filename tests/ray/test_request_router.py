"""Ray's request router with our rule (request_router.py), on stand-ins for Ray's replica and
request objects: the ranks it returns, the in-flight counts, and the guesses between reports."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'swiftserve[ray]')")

from swiftserve.ray.relay import RelayedRequest  # noqa: E402
from swiftserve.ray.request_router import ResidencyRouter, report_of  # noqa: E402


@dataclass(frozen=True)
class _Id:  # Ray's ReplicaID: hashable, with a unique_id
    unique_id: str


def _replica(rid: str, **stats) -> SimpleNamespace:
    return SimpleNamespace(replica_id=_Id(rid), routing_stats=stats)


def _request(model: str | None, session: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(args=[RelayedRequest("POST", "/v1/chat/completions", (), b"", model, session)])


def _router(*replicas: SimpleNamespace) -> ResidencyRouter:
    router = ResidencyRouter.__new__(ResidencyRouter)  # Ray's constructor wants a deployment
    router.initialize_state(pipelines={"rag": ["embed", "chat"]})
    router._replicas = {r.replica_id: r for r in replicas}
    return router


async def _ids(router: ResidencyRouter, replicas, request) -> list[str]:
    ranks = await router.choose_replicas(list(replicas), request)
    assert all(len(rank) == 1 for rank in ranks)
    return [rank[0].replica_id.unique_id for rank in ranks]


def test_ranks_follow_residency_and_pipelines():
    a = _replica("a", models={"chat": "resident"}, seq=1)
    b = _replica("b", models={"embed": "resident", "chat": "parked"}, seq=1, free_budget_bytes=9)
    router = _router(a, b)
    assert asyncio.run(_ids(router, [a, b], _request("chat"))) == ["a", "b"]
    assert asyncio.run(_ids(router, [a, b], _request("rag"))) == ["b", "a"]  # 0+1 against 2+0
    assert asyncio.run(_ids(router, [a, b], _request(None))) == ["a", "b"]  # /v1/models: any
    assert asyncio.run(_ids(router, [a, b], SimpleNamespace(args=[]))) == ["a", "b"]


def test_a_cold_model_follows_its_first_request_until_the_next_report():
    a = _replica("a", models={}, seq=3, free_budget_bytes=10)
    b = _replica("b", models={}, seq=5, free_budget_bytes=5)
    router = _router(a, b)
    assert asyncio.run(_ids(router, [a, b], _request("big"))) == ["a", "b"]
    router.on_request_routed(_request("big"), a.replica_id, None)
    b.routing_stats["free_budget_bytes"] = 50  # b now has more room, but a is loading it already
    assert asyncio.run(_ids(router, [a, b], _request("big"))) == ["a", "b"]
    a.routing_stats.update(seq=4, models={"big": "cold"})  # a report after the request: the truth
    assert asyncio.run(_ids(router, [a, b], _request("big"))) == ["b", "a"]


def test_in_flight_counts_rise_and_fall():
    a, b = _replica("a", models={"m": "resident"}), _replica("b", models={"m": "resident"})
    router = _router(a, b)
    router.on_request_routed(_request("m"), a.replica_id, None)
    assert router._in_flight["a"] == 1
    router.on_request_completed(a.replica_id, "r1")
    router.on_request_completed(a.replica_id, "r1")  # never below zero
    assert router._in_flight["a"] == 0


def test_report_of_a_replica_that_has_not_reported():
    report = report_of("x", {})
    assert (report.models, report.queue_depth, report.free_budget_bytes, report.seq) == ({}, 0, 0, 0)


def test_stage_calls_follow_their_prewarm_and_a_pipeline_records_no_guess():
    from swiftserve.router.stage_caller import StageCall

    from swiftserve.ray.stage_wire import PrewarmCall

    a = _replica("a", models={"embed": "resident"}, seq=1, free_budget_bytes=10)
    b = _replica("b", models={}, seq=1, free_budget_bytes=20)
    router = _router(a, b)
    router.on_request_routed(_request("rag"), a.replica_id, None)  # its entry replica decides
    assert asyncio.run(_ids(router, [a, b], _request("chat"))) == ["b", "a"]  # no guess on a
    prewarm = SimpleNamespace(args=[PrewarmCall(("chat",))])
    assert asyncio.run(_ids(router, [a, b], prewarm)) == ["b", "a"]
    router.on_request_routed(prewarm, b.replica_id, None)
    a.routing_stats["free_budget_bytes"] = 50  # a has more room now; b is loading chat already
    stage = SimpleNamespace(args=[StageCall("chat", "chat", ())])
    assert asyncio.run(_ids(router, [a, b], stage)) == ["b", "a"]
