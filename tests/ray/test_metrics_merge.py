"""Tier 1, no Ray: the deployment's /metrics, merged from every replica's (metrics_merge.py)."""

from __future__ import annotations

import asyncio

import httpx

from swiftserve.ray.ingress_app import IngressApp
from swiftserve.ray.metrics_merge import merge_metrics

R1 = """# HELP swiftserve_requests_total Finished HTTP requests
# TYPE swiftserve_requests_total counter
swiftserve_requests_total{model="chat",status="200"} 2.0
# HELP swiftserve_ttft_seconds Time to first token
# TYPE swiftserve_ttft_seconds histogram
swiftserve_ttft_seconds_bucket{le="0.5",model="chat"} 1.0
swiftserve_ttft_seconds_bucket{le="+Inf",model="chat"} 2.0
swiftserve_ttft_seconds_count{model="chat"} 2.0
swiftserve_ttft_seconds_sum{model="chat"} 1.25
"""
R2 = """# HELP swiftserve_requests_total Finished HTTP requests
# TYPE swiftserve_requests_total counter
swiftserve_requests_total{model="chat",status="200"} 5.0
swiftserve_requests_total{model="embed",status="200"} 1.0
# HELP swiftserve_models_resident Models resident
# TYPE swiftserve_models_resident gauge
swiftserve_models_resident 3.0
"""

MERGED = """# HELP swiftserve_requests_total Finished HTTP requests
# TYPE swiftserve_requests_total counter
swiftserve_requests_total{model="chat",replica="r1",status="200"} 2.0
swiftserve_requests_total{model="chat",replica="r2",status="200"} 5.0
swiftserve_requests_total{model="embed",replica="r2",status="200"} 1.0
# HELP swiftserve_ttft_seconds Time to first token
# TYPE swiftserve_ttft_seconds histogram
swiftserve_ttft_seconds_bucket{le="0.5",model="chat",replica="r1"} 1.0
swiftserve_ttft_seconds_bucket{le="+Inf",model="chat",replica="r1"} 2.0
swiftserve_ttft_seconds_count{model="chat",replica="r1"} 2.0
swiftserve_ttft_seconds_sum{model="chat",replica="r1"} 1.25
# HELP swiftserve_models_resident Models resident
# TYPE swiftserve_models_resident gauge
swiftserve_models_resident{replica="r2"} 3.0
# HELP swiftserve_metrics_replicas_missing Replicas left out of this scrape (no answer in time)
# TYPE swiftserve_metrics_replicas_missing gauge
swiftserve_metrics_replicas_missing 1.0
"""


def test_every_family_once_each_sample_labelled_with_its_replica():
    # Given in any order: replicas are merged by id, so two scrapes of the same state are equal.
    assert merge_metrics({"r2": R2, "r1": R1}, missing=1).decode() == MERGED


def test_no_replica_answered_is_only_the_missing_gauge():
    text = merge_metrics({}, missing=2).decode()
    assert text.splitlines()[-1] == "swiftserve_metrics_replicas_missing 2.0"
    assert "swiftserve_requests" not in text


def test_the_ingress_answers_metrics_itself_when_it_can_scrape_the_replicas():
    async def scrape() -> bytes:
        return merge_metrics({"r1": R1})

    async def send(method, request):
        raise AssertionError("/metrics must not go to one replica")
        yield  # an async generator

    async def run() -> httpx.Response:
        app = IngressApp(send, lambda: True, lambda e: False, 1 << 20, metrics=scrape)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://i") as http:
            return await http.get("/metrics")

    response = asyncio.run(run())
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert 'swiftserve_requests_total{model="chat",replica="r1",status="200"} 2.0' in response.text
