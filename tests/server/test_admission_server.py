"""Priorities, bounded queues and timeouts on the real server (`swiftserve launch --config`):
past a model's or a pipeline's max_queue a request is answered 429 with Retry-After at once
(the openai SDK's RateLimitError), counted in /metrics, while the admitted ones finish with the
outputs they have alone; `priority` reorders the queue; a `timeout` ends a request with 504
(a stream with an error event) and frees its KV blocks. Orders are observed, never speeds."""

from __future__ import annotations

import concurrent.futures
import json
import time

import httpx
import openai
import pytest

from .live_server import CHAT, Server

pytestmark = pytest.mark.slow

CONFIG = f"""
models:
  - {{name: small, source: {CHAT}, max_model_len: 512, max_num_seqs: 1, max_queue: 2, request_priority: 3}}
pipelines:
  - name: solo
    max_queue: 1
    stages:
      - id: answer
        kind: chat
        model: small
        max_tokens: 40
        sampling: {{temperature: 0, ignore_eos: true}}
        messages: [{{role: user, content: "{{{{ input }}}}"}}]
"""
LONG = {"max_tokens": 40, "temperature": 0, "ignore_eos": True}
ENDLESS = {"max_tokens": 440, "temperature": 0, "ignore_eos": True}


@pytest.fixture(scope="module")
def server(smollm_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("admission") / "swiftserve.yaml"
    path.write_text(CONFIG)
    live = Server("--config", str(path), "--kv-cache-memory", "32MiB")
    yield live
    live.stop()


def _chat(server: Server, content: str, **fields) -> httpx.Response:
    body = {"model": "small", "messages": [{"role": "user", "content": content}], **fields}
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=300)


def _metric(server: Server, line: str) -> float:
    """A counter's value, 0 before its first increment (the series does not exist yet)."""
    try:
        return server.metric(line)
    except AssertionError:
        return 0.0


def _wait_for(server: Server, running: int, waiting: int) -> None:
    deadline = time.monotonic() + 60
    while (
        _metric(server, 'swiftserve_num_requests_running{model="small"}'),
        _metric(server, 'swiftserve_num_requests_waiting{model="small"}'),
    ) != (running, waiting):
        assert time.monotonic() < deadline, "the requests never reached the engine"
        time.sleep(0.02)


def _kv_free(server: Server) -> bool:
    free = server.metric('swiftserve_kv_cache_free_blocks{model="small"}')
    return free == server.metric('swiftserve_kv_cache_total_blocks{model="small"}')


def test_past_the_queue_bound_429_at_once_and_the_admitted_keep_their_outputs(server):
    prompts = [f"List {n} fruits." for n in (3, 4, 5)]
    # Alone, twice: the second run starts from the prefix cache as the runs below do (a cached
    # prompt is computed by another kernel path, whose rounding may change a greedy pick).
    alone = [_text(_chat(server, prompt, **LONG)) for prompt in prompts * 2][3:]
    refusals_before = _metric(server, 'swiftserve_queue_full_total{model="small"}')
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        admitted = [pool.submit(_chat, server, prompts[0], **LONG)]
        _wait_for(server, running=1, waiting=0)
        admitted += [pool.submit(_chat, server, prompt, **LONG) for prompt in prompts[1:]]
        _wait_for(server, running=1, waiting=2)  # the queue is full
        refused = [_chat(server, "One more.", max_tokens=4) for _ in range(2)]
        pending = [sum(not f.done() for f in admitted)]
        with pytest.raises(openai.RateLimitError) as sdk:
            client.chat.completions.create(model="small", messages=[{"role": "user", "content": "And one."}])
        pending.append(sum(not f.done() for f in admitted))
        together = [_text(f.result()) for f in admitted]
    for answer in refused:
        assert answer.status_code == 429 and answer.headers["retry-after"] == "1"
        assert answer.json()["error"]["code"] == "queue_full"
        assert answer.json()["error"]["type"] == "rate_limit_error"
    assert sdk.value.response.headers["retry-after"] == "1"
    assert pending == [3, 3]  # refused while every admitted request was still running or queued
    assert together == alone
    assert _metric(server, 'swiftserve_queue_full_total{model="small"}') == refusals_before + 3
    assert _kv_free(server)


def _text(answer: httpx.Response) -> str:
    assert answer.status_code == 200, answer.text
    return answer.json()["choices"][0]["message"]["content"]


def test_a_pipeline_past_its_max_queue_is_refused_at_arrival(server):
    body = {"model": "solo", "messages": [{"role": "user", "content": "Count to ten."}]}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(httpx.post, server.url + "/v1/chat/completions", json=body, timeout=300)
        _wait_for(server, running=1, waiting=0)
        second = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=300)
        was_running = not first.done()
        assert first.result().status_code == 200
    assert second.status_code == 429 and second.headers["retry-after"] == "1" and was_running
    assert "`solo` has its maximum of 1 requests in flight" in second.json()["error"]["message"]
    assert server.metric('swiftserve_pipeline_requests_total{outcome="queue_full",pipeline="solo"}') == 1
    assert _kv_free(server)


def test_priority_reorders_the_queue_over_the_models_default(server):
    finished: list[str] = []

    def ask(name: str, **fields) -> None:
        _text(_chat(server, f"Say {name}.", **fields))
        finished.append(name)

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        waits = [pool.submit(ask, "blocker", **LONG)]
        _wait_for(server, running=1, waiting=0)
        waits.append(pool.submit(ask, "low", max_tokens=4))  # the model's request_priority: 3
        _wait_for(server, running=1, waiting=1)
        waits.append(pool.submit(ask, "urgent", priority=-5, max_tokens=4))
        _wait_for(server, running=1, waiting=2)
        for future in waits:
            future.result()
    assert finished == ["blocker", "urgent", "low"]


def test_a_timeout_is_a_504_and_a_streamed_one_ends_with_an_error_event(server):
    before = _metric(server, 'swiftserve_request_timeouts_total{model="small"}')
    answer = _chat(server, "Tell me about the sea.", timeout=0.5, **ENDLESS)
    assert answer.status_code == 504 and answer.headers["x-should-retry"] == "false"
    assert answer.json()["error"]["code"] == "request_timeout"
    assert answer.json()["error"]["message"].startswith("Request timed out")
    body = {"model": "small", "messages": [{"role": "user", "content": "Tell me about the sea."}]}
    streamed = httpx.post(
        server.url + "/v1/chat/completions",
        json={**body, **ENDLESS, "stream": True, "timeout": 1.0},
        timeout=300,
    )
    events = [line[len("data: ") :] for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert streamed.status_code == 200 and events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "request_timeout"
    assert any("choices" in json.loads(e) for e in events[:-2])  # it streamed, then timed out
    solo = {"model": "solo", "messages": body["messages"], "timeout": 0.5}
    piped = httpx.post(server.url + "/v1/chat/completions", json=solo, timeout=300)
    assert piped.status_code == 504 and "`solo`" in piped.json()["error"]["message"]
    assert _metric(server, 'swiftserve_request_timeouts_total{model="small"}') == before + 2
    assert server.metric('swiftserve_pipeline_requests_total{outcome="timeout",pipeline="solo"}') == 1
    assert _kv_free(server)
    assert server.metric('swiftserve_num_requests_running{model="small"}') == 0


@pytest.mark.parametrize(
    ("field", "value"), [("priority", "high"), ("priority", 1.5), ("timeout", 0), ("timeout", -1)]
)
def test_bad_priorities_and_timeouts_are_400s_naming_them(server, field, value):
    answer = _chat(server, "Hi", max_tokens=2, **{field: value})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == field
