"""Issue #24 on the real server (`swiftserve launch` in a subprocess, an API key, the embedder
pinned): what a new user's requests leave in /metrics and find under /v1/models."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from .live_server import EMBED, Server

pytestmark = pytest.mark.slow

KEY = "k"
AUTH = {"authorization": f"Bearer {KEY}"}
# Every endpoint label the request counter may carry: route templates, never a raw path.
TEMPLATES = {
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
    "/v1/models/{id}",
    "/v1/models/reload",
    "/v1/models/{name}/load",
    "/v1/models/{name}/unload",
    "unmatched",
}
_REQUESTS = re.compile(
    r'^swiftserve_requests_total\{endpoint="([^"]*)",model="([^"]*)",status="(\d+)"\}', re.MULTILINE
)


@pytest.fixture(scope="module")
def server(minilm_dir):
    live = Server("--api-key", KEY, "--models", EMBED)
    yield live
    live.stop()


def _counted(server: Server) -> set[tuple[str, str, str]]:
    return set(_REQUESTS.findall(httpx.get(server.url + "/metrics").text))


def test_unknown_paths_and_models_add_no_metric_series(server: Server) -> None:
    junk = uuid.uuid4().hex
    chat = {"model": junk, "messages": [{"role": "user", "content": "hi"}]}
    answers = [
        httpx.get(f"{server.url}/v1/{junk}", headers=AUTH),  # 404, no such route
        httpx.post(f"{server.url}/v1/{junk}/x", headers={"authorization": "Bearer wrong"}),  # 404
        httpx.post(f"{server.url}/v1/models/{junk}/load"),  # 401: no key
        httpx.post(f"{server.url}/v1/models/{junk}/load", headers=AUTH),  # 404: no such model
        httpx.post(f"{server.url}/v1/chat/completions", json=chat),  # 401
        httpx.post(f"{server.url}/v1/chat/completions", json=chat, headers=AUTH),  # 404 model
        httpx.post(f"{server.url}/v1/embeddings", json={"model": EMBED, "input": "x"}, headers=AUTH),
    ]
    assert [a.status_code for a in answers] == [404, 404, 401, 404, 401, 404, 200]
    text = httpx.get(server.url + "/metrics").text
    assert junk not in text
    counted = _counted(server)
    assert {endpoint for endpoint, _, _ in counted} <= TEMPLATES, counted
    assert {model for _, model, _ in counted} <= {"", EMBED}, counted
    assert ("unmatched", "", "404") in counted and ("/v1/models/{name}/load", "", "401") in counted
    assert ("/v1/embeddings", EMBED, "200") in counted
