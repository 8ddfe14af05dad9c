"""/v1/models with states and the admin load / unload routes, on a router over fake models."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from swiftserve.router.model_pool import ModelPool
from swiftserve.router.router import Router

from swiftserve.engine.served_model import Footprint
from swiftserve.server.app import App

from .thread_server import ThreadServer

KEY = "k"
AUTH = {"authorization": f"Bearer {KEY}"}


class FakeModel:
    def __init__(self, name: str, kind: str, fail: bool = False) -> None:
        self.name, self.kind, self.fail = name, kind, fail
        self.is_resident = False

    def footprint(self) -> Footprint:
        return Footprint(weight_bytes=1000, kv_block_bytes=10, kv_floor_blocks=2)

    async def load(self) -> None:
        await asyncio.sleep(0.01)
        if self.fail:
            raise OSError("weights missing")
        self.is_resident = True

    async def unload(self, *, force: bool = False) -> None:
        self.is_resident = False

    # The calls of a chat and of an embedding model (engine/served_model.py): these tests make none.
    max_model_len, dim, tokenizer = 64, 4, None

    def apply_chat_template(self, messages, add_generation_prompt=True):
        raise NotImplementedError

    def generate(self, prompt, params, request_id=None, priority=0):
        raise NotImplementedError

    async def embed(self, inputs):
        raise NotImplementedError


@pytest.fixture
def served():
    router = Router(ModelPool(10_000, reap_interval_s=3600))
    for model, policy in (
        (FakeModel("chat", "chat"), "pinned"),
        (FakeModel("embed", "embedding"), "on-demand"),
        (FakeModel("broken", "chat", fail=True), "on-demand"),
    ):
        router.add(model, policy, source="fake")

    async def on_startup(app: App) -> None:
        await router.start()
        app.is_ready = True

    app = App(router, api_key=KEY, on_startup=on_startup)
    with ThreadServer(app) as server:
        for _ in range(200):  # the pinned model loads in the background
            if httpx.get(server.url + "/health").status_code == 200:
                break
            time.sleep(0.01)
        yield server


def _models(server) -> dict:
    body = httpx.get(server.url + "/v1/models", headers=AUTH).json()
    assert body["object"] == "list"
    return {m["id"]: (m["kind"], m["policy"], m["state"]) for m in body["data"]}


def _post(server, path: str, headers=AUTH) -> httpx.Response:
    return httpx.post(server.url + path, headers=headers)


def test_list_shows_kind_policy_and_state(served):
    assert _models(served) == {
        "chat": ("chat", "pinned", "resident"),
        "embed": ("embedding", "on-demand", "cold"),
        "broken": ("chat", "on-demand", "cold"),
    }


def test_load_and_unload_over_http(served):
    loaded = _post(served, "/v1/models/embed/load")
    assert loaded.status_code == 200, loaded.text
    assert loaded.json() == {
        "id": "embed", "action": "load", "result": "loaded", "state": "resident", "object": "model.action"
    }  # fmt: skip
    assert _models(served)["embed"][2] == "resident"
    assert _post(served, "/v1/models/embed/unload").json()["result"] == "unloaded"
    assert _post(served, "/v1/models/embed/unload").json()["result"] == "already cold"
    metrics = httpx.get(served.url + "/metrics").text
    assert 'swiftserve_model_state{model="embed",state="cold"} 1.0' in metrics
    assert 'swiftserve_model_loads_total{model="embed"} 1.0' in metrics
    assert 'swiftserve_model_unloads_total{model="embed"} 1.0' in metrics
    assert 'swiftserve_model_resident_bytes{model="chat"} 1020.0' in metrics


def test_admin_errors_are_openai_errors(served):
    pinned = _post(served, "/v1/models/chat/unload")
    assert pinned.status_code == 409 and pinned.json()["error"]["code"] == "model_pinned"
    unknown = _post(served, "/v1/models/nope/load")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    broken = _post(served, "/v1/models/broken/load")
    assert broken.status_code == 503 and broken.json()["error"]["code"] == "model_load_failed"
    assert "weights missing" in broken.json()["error"]["message"]
    assert _models(served)["broken"][2] == "cold"  # back to cold; the server keeps serving
    assert _post(served, "/v1/models/chat/load", headers={}).status_code == 401
    wrong_method = httpx.get(served.url + "/v1/models/chat/load", headers=AUTH)
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    # Not an action: the path of a model named "chat/reload" (GET /v1/models/{id}), which is not served.
    not_an_action = _post(served, "/v1/models/chat/reload")
    assert not_an_action.status_code == 405 and not_an_action.headers["allow"] == "GET"
    assert httpx.get(served.url + "/v1/models/chat/reload", headers=AUTH).status_code == 404
