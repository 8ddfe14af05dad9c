"""Issue #24 on the real server (`swiftserve launch` in a subprocess, an API key, the embedder
pinned, and SmolLM2 on demand under the name "flaky", whose weights are broken until a test mends
them): what a new user's requests leave in /metrics and find under /v1/models."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
import openai
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


FLAKY = "flaky"
WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def flaky_dir(smollm_dir, tmp_path_factory) -> Path:
    """SmolLM2's files as links, the weights a link to their first 1 MiB (the header, so the
    footprint reads) until mend() points it at the real file."""
    folder = tmp_path_factory.mktemp(FLAKY)
    for file in Path(smollm_dir).iterdir():
        (folder / file.name).symlink_to(file)
    head = folder.parent / "head.safetensors"
    with (Path(smollm_dir) / WEIGHTS).open("rb") as f:
        head.write_bytes(f.read(1 << 20))
    (folder / WEIGHTS).unlink()
    (folder / WEIGHTS).symlink_to(head)
    return folder


def mend(folder: Path, smollm_dir) -> None:
    (folder / WEIGHTS).unlink()
    (folder / WEIGHTS).symlink_to(Path(smollm_dir) / WEIGHTS)


@pytest.fixture(scope="module")
def server(minilm_dir, flaky_dir):
    small = ("--max-model-len", "256", "--kv-cache-memory", "32MiB", "--no-snapshots")
    live = Server("--api-key", KEY, "--models", EMBED, "--on-demand", f"{FLAKY}={flaky_dir}", *small)
    yield live
    live.stop()


def _card(server: Server, name: str) -> dict:
    return next(
        m for m in httpx.get(server.url + "/v1/models", headers=AUTH).json()["data"] if m["id"] == name
    )


def _chat(server: Server, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    return httpx.post(server.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=300)


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
    assert {model for _, model, _ in counted} <= {"", EMBED, FLAKY}, counted
    assert ("unmatched", "", "404") in counted and ("/v1/models/{name}/load", "", "401") in counted
    assert ("/v1/embeddings", EMBED, "200") in counted


def test_a_model_that_loads_after_a_failed_load_shows_no_stale_error(server: Server, flaky_dir, smollm_dir):
    failed = _chat(server, FLAKY)
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "model_load_failed"
    assert _card(server, FLAKY)["state"] == "cold" and WEIGHTS in _card(server, FLAKY)["error"]
    mend(flaky_dir, smollm_dir)
    assert _chat(server, FLAKY).status_code == 200
    card = _card(server, FLAKY)
    assert card["state"] == "resident" and "error" not in card, card


def test_the_openai_sdk_retrieves_one_model(server: Server) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    model = client.models.retrieve(EMBED)
    assert (model.id, model.object, model.owned_by) == (EMBED, "model", "swiftserve")
    assert model.model_extra["kind"] == "embedding" and model.model_extra["state"] == "resident"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert info.value.body["code"] == "model_not_found" and "no-such-model" in info.value.body["message"]
    assert httpx.get(server.url + f"/v1/models/{EMBED}").status_code == 401  # behind the key too


def test_a_call_to_a_model_of_the_other_kind_says_an_embedding_model(server: Server) -> None:
    answer = _chat(server, EMBED)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "model_not_supported"
    message = answer.json()["error"]["message"]
    assert "is an embedding model; this call needs a chat model" in message, message
