"""The ASGI app over fake engines, through real HTTP (uvicorn in a thread): fast, no model."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time

import httpx
import numpy as np
import openai
import pytest
from swiftserve.router.model_pool import ModelPool
from swiftserve.router.router import Router

from swiftserve.server.app import App

from .thread_server import ThreadServer, make_app


def _client(server, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.url + "/v1", api_key=kwargs.pop("api_key", "none"), max_retries=0, **kwargs
    )


def _post(server, path: str, body, **kwargs) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        server.url + path, content=content, headers={"content-type": "application/json"}, **kwargs
    )


def _error(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


CHAT = {"model": "fake-chat", "messages": [{"role": "user", "content": "abc"}], "max_tokens": 5}


def test_chat_plain(fake_server):
    response = _client(fake_server).chat.completions.create(**CHAT)
    assert response.object == "chat.completion"
    assert response.id.startswith("chatcmpl-")
    assert response.model == "fake-chat"
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == ">tnats"[:5]
    assert choice.finish_reason == "length"
    prompt_tokens = len("<user>abc<assistant>")
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (prompt_tokens, 5)
    assert response.usage.total_tokens == prompt_tokens + 5


def test_chat_stream_and_usage(fake_server):
    stream = _client(fake_server).chat.completions.create(
        **CHAT, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ">tnat"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1


def test_sse_wire_format(fake_server):
    with httpx.stream(
        "POST", fake_server.url + "/v1/chat/completions", json={**CHAT, "stream": True}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(response.iter_bytes())
    events = raw.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    for event in events[:-2]:
        assert event.startswith(b"data: ")
        payload = json.loads(event[len(b"data: ") :])
        assert payload["object"] == "chat.completion.chunk"
        assert "usage" not in payload  # only with stream_options.include_usage


def test_chat_n_stop_and_logprobs(fake_server):
    response = _client(fake_server).chat.completions.create(
        **{**CHAT, "max_tokens": 8}, n=2, stop=["a"], logprobs=True, top_logprobs=2
    )
    assert [c.index for c in response.choices] == [0, 1]
    for choice in response.choices:
        assert choice.message.content == ">tn"  # reversed "...<user>abc<assistant>" stopped at "a"
        assert choice.finish_reason == "stop"
        entries = choice.logprobs.content
        assert entries[0].token == ">" and entries[0].logprob == -0.5
        assert [t.token for t in entries[0].top_logprobs] == [">", "z"]
        assert entries[0].bytes == [ord(">")]


def test_content_parts_and_roles(fake_server):
    messages = [
        {"role": "developer", "content": "d"},
        {"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]},
    ]
    response = _client(fake_server).chat.completions.create(
        model="fake-chat", messages=messages, max_tokens=2
    )
    assert response.usage.prompt_tokens == len("<system>d<user>x\ny<assistant>")


def test_completions_prompt_shapes(fake_server):
    client = _client(fake_server)
    one = client.completions.create(model="fake-chat", prompt="hello", max_tokens=3)
    assert one.object == "text_completion" and one.id.startswith("cmpl-")
    assert one.choices[0].text == "oll"
    many = client.completions.create(model="fake-chat", prompt=["ab", "cd"], max_tokens=2, n=2)
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    assert [c.text for c in many.choices] == ["ba", "ba", "dc", "dc"]
    ids = client.completions.create(model="fake-chat", prompt=[104, 105], max_tokens=2)
    assert ids.choices[0].text == "ih"
    nested = client.completions.create(model="fake-chat", prompt=[[104, 105], [106]], max_tokens=1)
    assert [c.text for c in nested.choices] == ["i", "j"]
    assert nested.usage.prompt_tokens == 3


def test_completions_echo_logprobs_stream(fake_server):
    client = _client(fake_server)
    echo = client.completions.create(model="fake-chat", prompt="ab", max_tokens=2, echo=True, logprobs=1)
    choice = echo.choices[0]
    assert choice.text == "abba"
    assert choice.logprobs.tokens == ["a", "b", "b", "a"]
    assert choice.logprobs.token_logprobs == [None, None, -0.5, -0.5]
    assert choice.logprobs.text_offset == [0, 1, 2, 3]
    assert choice.logprobs.top_logprobs[2] == {"b": -0.5, "z": -1.5}
    chunks = list(client.completions.create(model="fake-chat", prompt="xyz", max_tokens=3, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == "zyx"
    assert chunks[-1].choices[0].finish_reason == "length"


def test_embeddings_float_and_base64(fake_server):
    client = _client(fake_server)
    floats = client.embeddings.create(model="fake-embed", input=["ab", "c"], encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1]
    assert floats.data[0].embedding == [2.0, float((97 + 98) % 97), 1.0, -0.25]
    assert floats.usage.prompt_tokens == 3 and floats.usage.total_tokens == 3
    raw = _post(
        fake_server, "/v1/embeddings", {"model": "fake-embed", "input": "ab", "encoding_format": "base64"}
    )
    vector = np.frombuffer(base64.b64decode(raw.json()["data"][0]["embedding"]), dtype="<f4")
    assert vector.tolist() == floats.data[0].embedding
    tokens = client.embeddings.create(model="fake-embed", input=[[1, 2], [3]])
    assert tokens.usage.prompt_tokens == 3


def test_models_health_metrics(fake_server):
    models = _client(fake_server).models.list()
    assert {m.id for m in models.data} == {"fake-chat", "fake-embed"}
    assert all(m.object == "model" and m.owned_by for m in models.data)
    assert httpx.get(fake_server.url + "/health").json() == {"status": "ok"}
    metrics = httpx.get(fake_server.url + "/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for name in (
        "swiftserve_requests_total",
        "swiftserve_time_to_first_token_seconds_bucket",
        "swiftserve_inter_token_latency_seconds_bucket",
        "swiftserve_e2e_request_latency_seconds_bucket",
        "swiftserve_prompt_tokens_total",
        "swiftserve_generation_tokens_total",
        'swiftserve_num_requests_running{model="fake-chat"}',
        'swiftserve_num_requests_waiting{model="fake-chat"}',
        'swiftserve_kv_cache_usage_ratio{model="fake-chat"}',
    ):
        assert name in text, name
    assert 'endpoint="/v1/chat/completions",model="fake-chat",status="200"' in text


def test_sdk_exception_types(fake_server):
    client = _client(fake_server)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(**{**CHAT, "model": "nope"})
    assert info.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**{**CHAT, "max_tokens": 10_000})
    assert "maximum context length is 256" in info.value.message
    assert info.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="fake-chat", input="x")  # a chat model


BAD_CHAT = [
    (b"{not json", None),
    (b'{"model": "fake-chat", "messages": [{"role": "user", "content": "\xff"}]}', None),
    ({"model": "fake-chat"}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "fake-chat", "messages": []}, "messages"),
    ({"model": "fake-chat", "messages": "hi"}, "messages"),
    ({"model": "fake-chat", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"model": "fake-chat", "messages": [{"role": "user"}]}, "messages[0].content"),
    ({"model": "fake-chat", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({**CHAT, "max_tokens": "5"}, "max_tokens"),
    ({**CHAT, "max_tokens": -1}, "max_tokens"),
    ({**CHAT, "max_tokens": 0}, "max_tokens"),
    ({**CHAT, "max_tokens": 10**30}, "max_tokens"),
    ({**CHAT, "temperature": -0.5}, "temperature"),
    ({**CHAT, "temperature": 3}, "temperature"),
    ({**CHAT, "top_p": 0}, "top_p"),
    ({**CHAT, "n": 0}, "n"),
    ({**CHAT, "presence_penalty": 5}, "presence_penalty"),
    ({**CHAT, "top_logprobs": 2}, "top_logprobs"),
    ({**CHAT, "logprobs": True, "top_logprobs": 50}, "top_logprobs"),
    ({**CHAT, "stop": [""]}, "stop"),
    ({**CHAT, "stop": 3}, "stop"),
    ({**CHAT, "logit_bias": {"abc": 1}}, "logit_bias"),
    ({**CHAT, "min_tokens": 9}, "min_tokens"),
    ({**CHAT, "bogus_field": 1}, "bogus_field"),
    ({**CHAT, "messages": [{"role": "user", "content": "x", "extra": 1}]}, "messages[0].extra"),
    ({**CHAT, "tools": [{"type": "function"}]}, "tools[0].function"),
    ({**CHAT, "tool_choice": "required"}, "tool_choice"),
    ({**CHAT, "response_format": {"type": "json_schema"}}, "response_format.json_schema.schema"),
    ({**CHAT, "response_format": {"type": "xml"}}, "response_format.type"),
    ({**CHAT, "response_format": {"type": "json_object"}, "guided_regex": "a+"}, "response_format"),
    ({**CHAT, "guided_choice": []}, "guided_choice"),
    ({**CHAT, "structured_outputs": {"json": {}, "regex": "a"}}, "structured_outputs"),
    ({**CHAT, "structured_outputs": {"jsn": {}}}, "structured_outputs.jsn"),
    ({**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, None),
    ({**CHAT, "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
]


@pytest.mark.parametrize(("body", "param"), BAD_CHAT)
def test_bad_chat_input_is_a_clear_400(fake_server, body, param):
    response = _post(fake_server, "/v1/chat/completions", body)
    assert response.status_code == 400, response.text
    error = _error(response)
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    if param is not None:
        assert error["param"] == param, error
        assert param.split(".")[-1].split("[")[0] in error["message"], error


BAD_OTHER = [
    ("/v1/completions", {"model": "fake-chat"}, "prompt"),
    ("/v1/completions", {"model": "fake-chat", "prompt": []}, "prompt"),
    ("/v1/completions", {"model": "fake-chat", "prompt": ""}, "prompt"),
    ("/v1/completions", {"model": "fake-chat", "prompt": [1, "a"]}, "prompt"),
    ("/v1/completions", {"model": "fake-chat", "prompt": "x", "suffix": "y"}, "suffix"),
    ("/v1/completions", {"model": "fake-chat", "prompt": "x", "logprobs": 99}, "logprobs"),
    ("/v1/embeddings", {"model": "fake-embed"}, "input"),
    ("/v1/embeddings", {"model": "fake-embed", "input": ""}, "input"),
    ("/v1/embeddings", {"model": "fake-embed", "input": [[]]}, "input"),
    ("/v1/embeddings", {"model": "fake-embed", "input": [1.5]}, "input"),
    ("/v1/embeddings", {"model": "fake-embed", "input": "x", "encoding_format": "hex"}, "encoding_format"),
    ("/v1/embeddings", {"model": "fake-embed", "input": "x", "dimensions": 3}, "dimensions"),
]


@pytest.mark.parametrize(("path", "body", "param"), BAD_OTHER)
def test_bad_completion_and_embedding_input(fake_server, path, body, param):
    response = _post(fake_server, path, body)
    assert response.status_code == 400, response.text
    assert _error(response)["param"] == param


def test_routing_errors(fake_server):
    assert httpx.get(fake_server.url + "/v1/nope").status_code == 404
    assert _error(httpx.get(fake_server.url + "/v1/nope"))["message"] == "Invalid URL (GET /v1/nope)"
    assert httpx.get(fake_server.url + "/v1/chat/completions").status_code == 405


def test_body_limit_413_then_still_serving(fake_server):
    body = (
        b'{"model": "fake-chat", "messages": [{"role": "user", "content": "'
        + b"a" * (10 * 1024 * 1024)
        + b'"}]}'
    )
    response = _post(fake_server, "/v1/chat/completions", body, timeout=60)
    assert response.status_code == 413
    assert _error(response)["code"] == "request_too_large"
    assert _client(fake_server).chat.completions.create(**CHAT).choices[0].finish_reason == "length"


def test_queue_full_is_429_with_retry_after():
    app, chat = make_app(max_running=1, max_waiting=1, step_s=0.01)
    with ThreadServer(app) as server:

        async def burst():
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                body = {**CHAT, "max_tokens": 20}
                return await asyncio.gather(
                    *(client.post("/v1/chat/completions", json=body) for _ in range(6))
                )

        responses = asyncio.run(burst())
        statuses = sorted(r.status_code for r in responses)
        assert 200 in statuses and 429 in statuses, statuses
        limited = next(r for r in responses if r.status_code == 429)
        assert limited.headers["retry-after"] == "1"
        assert _error(limited)["type"] == "rate_limit_error"
        sdk_errors = asyncio.run(_sdk_burst(server))
        assert any(isinstance(e, openai.RateLimitError) for e in sdk_errors), sdk_errors
        assert chat.running == set() and chat.waiting == []


async def _sdk_burst(server) -> list:
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    calls = (client.chat.completions.create(**{**CHAT, "max_tokens": 20}) for _ in range(6))
    return await asyncio.gather(*calls, return_exceptions=True)


def test_api_key():
    app, _ = make_app(api_key="sekrit")
    with ThreadServer(app) as server:
        with pytest.raises(openai.AuthenticationError):
            _client(server, api_key="wrong").models.list()
        response = httpx.get(server.url + "/v1/models")
        assert response.status_code == 401 and _error(response)["code"] == "invalid_api_key"
        assert _client(server, api_key="sekrit").models.list().data
        assert httpx.get(server.url + "/health").status_code == 200  # not behind the key


def test_disconnect_mid_stream_aborts_the_request():
    app, chat = make_app(step_s=0.02)
    with ThreadServer(app) as server:
        body = json.dumps({**CHAT, "max_tokens": 200, "stream": True}).encode()
        sock = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while b"data: " not in received:
            received += sock.recv(65536)
        assert chat.running
        sock.close()
        deadline = time.monotonic() + 5
        while chat.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not chat.running and len(chat.aborted) == 1
        metrics = httpx.get(server.url + "/metrics").text
        assert 'swiftserve_num_requests_running{model="fake-chat"} 0.0' in metrics
        assert 'swiftserve_kv_cache_usage_ratio{model="fake-chat"} 0.0' in metrics


def test_disconnect_while_queued_aborts_the_request():
    app, chat = make_app(step_s=0.02, max_running=1)
    with ThreadServer(app) as server:

        async def run():
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                busy = asyncio.create_task(
                    client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 30})
                )
                await asyncio.sleep(0.1)
                queued = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT))
                await asyncio.sleep(0.1)
                assert len(chat.waiting) == 1
                queued.cancel()  # closes its connection
                await asyncio.sleep(0.2)
                assert chat.waiting == []
                assert (await busy).status_code == 200

        asyncio.run(run())
        assert len(chat.aborted) == 1


def test_shutdown_ends_streams_with_an_error_event():
    app, chat = make_app(step_s=0.02)
    with ThreadServer(app) as server:
        with httpx.stream(
            "POST", server.url + "/v1/chat/completions", json={**CHAT, "max_tokens": 200, "stream": True}
        ) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
            asyncio.run_coroutine_threadsafe(app.begin_shutdown(), _server_loop(server)).result(5)
            rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]"
        error = json.loads(rest[-2][len("data: ") :])["error"]
        assert "shutting down" in error["message"]
        assert httpx.get(server.url + "/health").status_code == 503
        assert httpx.get(server.url + "/v1/models").status_code == 503


def _server_loop(server):
    return server.server.loop


def test_health_is_503_until_the_models_are_loaded():
    loaded = threading.Event()

    async def load(app: App) -> None:
        while not loaded.is_set():
            await asyncio.sleep(0.01)
        app.is_ready = True

    with ThreadServer(App(Router(ModelPool(10**9)), on_startup=load)) as server:
        assert httpx.get(server.url + "/health").status_code == 503
        response = httpx.get(server.url + "/v1/models")
        assert response.status_code == 503 and "loading" in _error(response)["message"]
        loaded.set()
        deadline = time.monotonic() + 5
        while httpx.get(server.url + "/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert httpx.get(server.url + "/v1/models").json() == {"data": [], "object": "list"}
