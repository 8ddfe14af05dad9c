"""Hot-adding models from the config file without a restart (POST /v1/models/reload), on the real
server: a new model appears cold and answers, a changed or removed entry is reported and left as
it is, a bad file is a 400 naming the key and changes nothing, and a server started from flags
has no file to reload."""

from __future__ import annotations

import httpx
import pytest

from .live_server import CHAT, EMBED, Server

pytestmark = pytest.mark.slow

FIRST = f"""
models:
  - name: emb
    source: {EMBED}
    policy: pinned
"""

SECOND = (
    FIRST
    + f"""
  - name: chat
    source: {CHAT}
    policy: on-demand
    max_model_len: 512
"""
)


# chat's policy changed, emb left the file
THIRD = f"""
models:
  - name: chat
    source: {CHAT}
    policy: pinned
    max_model_len: 512
"""


def _reload(server: Server) -> httpx.Response:
    return httpx.post(server.url + "/v1/models/reload", timeout=300)


def test_reload_adds_the_new_models_of_the_file(smollm_dir, minilm_dir, tmp_path):
    path = tmp_path / "swiftserve.yaml"
    path.write_text(FIRST)
    server = Server("--config", str(path), "--kv-cache-memory", "32MiB")
    try:
        assert server.states() == {"emb": "resident"}
        assert _reload(server).json() == {
            "added": [],
            "unchanged": ["emb"],
            "needs_restart": [],
            "settings_need_restart": [],
            "object": "config.reload",
        }

        path.write_text(SECOND)
        body = _reload(server).json()
        assert (body["added"], body["unchanged"], body["needs_restart"]) == (["chat"], ["emb"], [])
        assert server.states() == {"emb": "resident", "chat": "cold"}
        reply = server.chat("Say hello.", model="chat")
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"]
        assert server.states()["chat"] == "resident"

        path.write_text(THIRD)
        body = _reload(server).json()  # both reported, neither touched
        assert (body["added"], body["unchanged"]) == ([], [])
        assert sorted(body["needs_restart"]) == ["chat", "emb"]
        assert server.embed("still here", model="emb").status_code == 200

        path.write_text(FIRST + "    colour: blue\n")
        bad = _reload(server)
        assert bad.status_code == 400
        assert "colour" in bad.json()["error"]["message"]
        assert set(server.states()) == {"emb", "chat"}
    finally:
        server.stop()


def test_a_server_started_from_flags_has_no_file_to_reload(minilm_dir):
    server = Server("--models", EMBED)
    try:
        answer = _reload(server)
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "no_config_file"
        assert server.embed("still serving").status_code == 200
    finally:
        server.stop()


TWO_PINNED_CHATS = FIRST + "".join(
    f"""
  - name: {name}
    source: {CHAT}
    policy: pinned
    max_model_len: 512
"""
    for name in ("chat1", "chat2")
)


def test_a_reload_that_does_not_fit_adds_nothing_and_settings_are_reported(smollm_dir, minilm_dir, tmp_path):
    """Was: the 400 for the budget came after chat1 had been added and loaded, and every later
    reload repeated it. Now none of the file's new models is added; top-level changes are
    reported as needing a restart."""
    path = tmp_path / "swiftserve.yaml"
    path.write_text("memory_budget: 450MiB\n" + FIRST)
    server = Server("--config", str(path), "--kv-cache-memory", "32MiB")
    try:
        rss = server.rss()
        path.write_text("memory_budget: 450MiB\n" + TWO_PINNED_CHATS)  # one chat fits, not two
        refused = _reload(server)
        assert refused.status_code == 400, refused.text
        assert "budget" in refused.json()["error"]["message"]
        assert server.states() == {"emb": "resident"}
        assert server.rss() - rss < 100 * 2**20  # no chat model's 270 MB of weights came in

        path.write_text("memory_budget: 2GiB\nidle_timeout: 5m\n" + FIRST)
        body = _reload(server).json()
        assert body["added"] == [] and body["unchanged"] == ["emb"]
        assert body["settings_need_restart"] == ["memory_budget", "idle_timeout"]
    finally:
        server.stop()
