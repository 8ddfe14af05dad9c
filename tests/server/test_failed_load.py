"""A model whose files fail to load, on the real server: its requests get a clear 503, it goes
back to cold with the error in /v1/models and in the log, and every other model keeps serving."""

from __future__ import annotations

import shutil

import httpx
import pytest

from .live_server import EMBED, Server

pytestmark = pytest.mark.slow


def test_a_model_that_fails_to_load_goes_back_to_cold_and_the_rest_serve(smollm_dir, minilm_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(smollm_dir, broken)
    weights = broken / "model.safetensors"
    with weights.open("r+b") as f:  # the header (and so the footprint) stays readable
        f.truncate(weights.stat().st_size // 2)
    server = Server("--models", EMBED, "--on-demand", f"broken={broken}", "--max-model-len", "512")
    try:
        for _ in range(2):  # the second request retries the load, and fails the same way
            answer = server.chat("Hello", model="broken")
            assert answer.status_code == 503, answer.text
            error = answer.json()["error"]
            assert error["code"] == "model_load_failed" and "broken" in error["message"]
        card = next(m for m in httpx.get(server.url + "/v1/models").json()["data"] if m["id"] == "broken")
        assert card["state"] == "cold" and "model.safetensors" in card["error"]
        embedder = next(m for m in httpx.get(server.url + "/v1/models").json()["data"] if m["id"] == EMBED)
        assert "error" not in embedder
        assert server.embed("still serving").status_code == 200
        assert server.metric('swiftserve_model_loads_total{model="broken"}') == 0
    finally:
        log = server.stop()
    assert "loading broken failed" in log
