"""The real server with pinned and on-demand models under one memory budget (`swiftserve launch
--models ... --on-demand ... --idle-timeout ... --memory-budget ...` in a subprocess): cold loads
on first request, scale to zero with the memory really returned, admin load / unload, and a
budget too small for both models at once still answering everyone by eviction."""

from __future__ import annotations

import concurrent.futures
import signal
import subprocess
import sys
import time

import httpx
import pytest

from .live_server import CHAT, EMBED, Server, free_port

pytestmark = pytest.mark.slow

MIB = 2**20


@pytest.fixture(scope="module")
def scaled(smollm_dir, minilm_dir):
    """The chat model pinned, the embedder (and the chat model again, as `chat2`) on demand."""
    server = Server(
        "--models", CHAT, "--on-demand", f"{EMBED},chat2={CHAT}", "--idle-timeout", "3s",
        "--max-model-len", "512", "--kv-cache-memory", "64MiB",
    )  # fmt: skip
    yield server
    server.stop()


def _loads_and_unloads(server: Server, *models: str) -> dict[str, tuple[float, float]]:
    """model -> (swiftserve_model_loads_total, swiftserve_model_unloads_total)."""
    return {
        model: (
            server.metric(f'swiftserve_model_loads_total{{model="{model}"}}'),
            server.metric(f'swiftserve_model_unloads_total{{model="{model}"}}'),
        )
        for model in models
    }


def test_cold_model_loads_on_first_request_then_scales_to_zero(scaled):
    assert scaled.states() == {CHAT: "resident", EMBED: "cold", "chat2": "cold"}
    assert _loads_and_unloads(scaled, EMBED) == {EMBED: (0, 0)}
    reply = scaled.embed("hello")
    assert reply.status_code == 200 and len(reply.json()["data"][0]["embedding"]) == 384
    assert scaled.states()[EMBED] == "resident"
    assert scaled.metric(f'swiftserve_cold_start_seconds_count{{model="{EMBED}"}}') == 1
    assert _loads_and_unloads(scaled, EMBED) == {EMBED: (1, 0)}
    scaled.wait_state(EMBED, "cold", timeout=30)  # idle past 3 s: unloaded
    assert scaled.metric(f'swiftserve_model_resident_bytes{{model="{EMBED}"}}') == 0
    assert _loads_and_unloads(scaled, EMBED) == {EMBED: (1, 1)}
    assert scaled.embed("hello again").status_code == 200  # and back on demand
    assert _loads_and_unloads(scaled, EMBED) == {EMBED: (2, 1)}


def test_scale_to_zero_returns_the_memory(scaled):
    """RSS with chat2 resident (weights ~270 MB in bf16 plus its KV cache) against after its idle
    unload: at least 70% of its weight bytes must come back (allocator slack keeps the rest)."""
    scaled.wait_state("chat2", "cold")
    before = scaled.rss()
    assert scaled.chat("Say hi.", model="chat2").status_code == 200
    loaded = scaled.rss()
    weights = 134_515_008 * 2  # SmolLM2-135M parameters in bfloat16
    assert loaded - before > 0.7 * weights, (before, loaded)
    scaled.wait_state("chat2", "cold", timeout=30)
    time.sleep(0.5)
    after = scaled.rss()
    assert loaded - after > 0.7 * weights, (before, loaded, after)


def _wait_running(server: Server, model: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while server.metric(f'swiftserve_num_requests_running{{model="{model}"}}') < 1:
        assert time.monotonic() < deadline, f"no request of {model} started running"
        time.sleep(0.05)


def test_admin_load_and_unload_with_a_request_in_flight(scaled):
    assert httpx.post(scaled.url + "/v1/models/chat2/load", timeout=120).json()["state"] == "resident"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        body = {"model": "chat2", "prompt": "Count slowly:", "max_tokens": 200, "ignore_eos": True}
        slow = pool.submit(httpx.post, scaled.url + "/v1/completions", json=body, timeout=300)
        _wait_running(scaled, "chat2")  # the request is in flight (not merely sent) before the unload
        busy = httpx.post(scaled.url + "/v1/models/chat2/unload")
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "model_busy"
        assert slow.result().status_code == 200  # the request in flight finished unharmed
    assert httpx.post(scaled.url + "/v1/models/chat2/unload").json()["result"] == "unloaded"
    pinned = httpx.post(scaled.url + "/v1/models/smollm2-135m-instruct/unload")
    assert pinned.status_code == 409 and pinned.json()["error"]["code"] == "model_pinned"


def _stream_then_drop(url: str, model: str, events: int) -> int:
    """A streamed chat request whose client closes the connection after `events` events."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Count from one to one hundred."}],
        "max_tokens": 32,
        "ignore_eos": True,
        "stream": True,
    }
    seen = 0
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            seen += line.startswith("data:")
            if seen == events:
                break
    return seen


def test_unload_right_after_a_dropped_stream_frees_the_memory(scaled):
    """Was: HTTP 500 (ModelInUseError) and /v1/models saying cold while the weights stayed mapped.
    Now the unload answers 200, or 409 model_busy while the server has not yet seen the client
    go (then a retry succeeds); cold always means the memory really came back."""
    weights = 134_515_008 * 2  # SmolLM2-135M parameters in bfloat16
    for _ in range(3):
        assert httpx.post(scaled.url + "/v1/models/chat2/load", timeout=120).status_code == 200
        loaded = scaled.rss()
        assert _stream_then_drop(scaled.url, "chat2", events=3) == 3
        codes = []
        deadline = time.monotonic() + 10
        while not codes or codes[-1] == 409:
            assert time.monotonic() < deadline, codes
            reply = httpx.post(scaled.url + "/v1/models/chat2/unload", timeout=60)
            codes.append(reply.status_code)
            assert reply.status_code in (200, 409), reply.text
            if reply.status_code == 409:
                assert reply.json()["error"]["code"] == "model_busy"
                time.sleep(0.05)
        assert reply.json()["result"] == "unloaded"
        assert scaled.states()["chat2"] == "cold"
        assert scaled.metric('swiftserve_model_resident_bytes{model="chat2"}') == 0
        time.sleep(0.5)
        assert loaded - scaled.rss() > 0.7 * weights, (loaded, scaled.rss())


def test_a_model_that_follows_in_sessions_is_prewarmed(scaled):
    """Three sessions (x-session-id, or the body's `user`) of a chat then an embedding teach the
    server that the embedder follows the chat model (followers' defaults: 3 calls, half of them);
    in the fourth, the chat alone starts the cold embedder's load, counted in the metrics. A chat
    with no session teaches nothing."""
    prewarms = f'swiftserve_follower_prewarms_total{{after="{CHAT}",model="{EMBED}"}}'
    chat = {"model": CHAT, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    for session in ("s1", "s2", "s3", "s4"):
        _unload(scaled, EMBED)
        by_header = session != "s2"
        headers = {"x-session-id": session} if by_header else {}
        body = chat if by_header else {**chat, "user": session}
        reply = httpx.post(scaled.url + "/v1/chat/completions", json=body, headers=headers, timeout=120)
        assert reply.status_code == 200, reply.text
        if session == "s4":
            break
        assert scaled.states()[EMBED] == "cold"
        embed = {"model": EMBED, "input": "hi"} | ({} if by_header else {"user": session})
        assert (
            httpx.post(scaled.url + "/v1/embeddings", json=embed, headers=headers, timeout=120).status_code
            == 200
        )
    assert scaled.states()[EMBED] in ("loading", "resident")
    assert scaled.metric(prewarms) == 1
    scaled.wait_state(EMBED, "resident")
    _unload(scaled, EMBED)
    assert scaled.chat("Hi").status_code == 200  # no session: nothing starts
    assert scaled.states()[EMBED] == "cold" and scaled.metric(prewarms) == 1


def _unload(server: Server, model: str) -> None:
    reply = httpx.post(f"{server.url}/v1/models/{model}/unload", timeout=60)
    assert reply.status_code == 200, reply.text
    assert server.states()[model] == "cold"


def test_shutdown_with_a_stream_in_flight_aborts_it_cleanly(smollm_dir):
    """SIGTERM while a client streams: the client gets an error event, the server exits 0 and
    logs no error (was: `engine shutdown failed` with a ModelInUseError traceback)."""
    server = Server("--models", CHAT, "--max-model-len", "512", "--kv-cache-memory", "64MiB")
    body = {
        "model": CHAT,
        "messages": [{"role": "user", "content": "Count from one to one thousand."}],
        "max_tokens": 400,
        "ignore_eos": True,
        "stream": True,
    }
    events = []
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=120) as reply:
        for line in reply.iter_lines():
            if line.startswith("data:"):
                events.append(line)
            if len(events) == 2 and server.process.poll() is None:
                server.process.send_signal(signal.SIGTERM)
    out = server.stop()
    assert any('"error"' in event for event in events), events[-3:]
    assert "Traceback" not in out and "shutdown failed" not in out, out


def test_a_budget_for_one_model_at_a_time_answers_everyone(smollm_dir, minilm_dir):
    """Two chat models that do not fit together: interleaved and concurrent requests all get
    their answer, by evicting the other model, with every KV block free afterwards. An hour's
    idle timeout: every unload here is an eviction, so the counts follow from the requests."""
    server = Server(
        "--models", EMBED, "--on-demand", f"a={CHAT},b={CHAT}", "--memory-budget", "500MiB",
        "--idle-timeout", "1h", "--max-model-len", "512", "--kv-cache-memory", "64MiB",
    )  # fmt: skip
    try:
        _one_at_a_time(server)
        _concurrent(server)
        for model in ("a", "b"):
            if server.states()[model] == "resident":
                assert server.metric(f'swiftserve_kv_cache_usage_ratio{{model="{model}"}}') == 0
    finally:
        server.stop()


def _one_at_a_time(server: Server) -> None:
    """a, then b (a evicted), then a again (b evicted): each step's exact loads and unloads."""
    question = "What is the capital of France?"
    expected = [("a", {"a": (1, 0), "b": (0, 0)}), ("b", {"a": (1, 1), "b": (1, 0)})]
    expected += [("a", {"a": (2, 1), "b": (1, 1)})]
    for model, counts in expected:
        reply = server.chat(question, model=model)
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]
        other = "b" if model == "a" else "a"
        assert (server.states()[model], server.states()[other]) == ("resident", "cold")
        assert _loads_and_unloads(server, "a", "b") == counts


def _concurrent(server: Server) -> None:
    """a resident, then a, b, a, b and two embeddings at once: everyone answered. Which order the
    chat models take turns in is up to the threads, but b must come in (a evicted) at least once,
    and every load is either still resident or matched by an unload."""
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        jobs = [pool.submit(server.chat, "What is the capital of France?", m) for m in "abab"]
        jobs += [pool.submit(server.embed, "text") for _ in range(2)]
        replies = [job.result() for job in jobs]
    assert [r.status_code for r in replies] == [200] * 6, [r.text for r in replies]
    for reply in replies[:4]:
        assert reply.json()["choices"][0]["message"]["content"]
    counts, states = _loads_and_unloads(server, "a", "b"), server.states()
    assert counts["b"][0] >= 2 and counts["a"][1] >= 2, counts
    for model, (loads, unloads) in counts.items():
        assert loads - unloads == (states[model] == "resident"), (counts, states)
    assert [states["a"], states["b"]].count("resident") <= 1, states


def test_a_budget_too_small_for_a_pinned_model_is_refused_at_start(smollm_dir):
    port = free_port()
    command = [sys.executable, "-m", "swiftserve.cli", "launch", "--port", str(port), "--models", CHAT,
               "--memory-budget", "100MiB"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "budget" in (result.stdout + result.stderr).lower()
