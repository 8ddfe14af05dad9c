"""Tier 1, no Ray: the ingress app (ingress_app.py) relaying to the server's app run in process
(relay.py), over fake engines; the unchanged openai SDK as the client."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json

import httpx
import openai
import pytest

from swiftserve.ray.ingress_app import UNARY_METHOD, IngressApp
from swiftserve.ray.relay import RelayedRequest, ResponseHead, collect, peek, peek_model, relayed, run_in_app

from ..server.thread_server import make_app


def _sync(test):
    """Runs an async test body on a fresh loop (the suite's way: asyncio.run, no plugin)."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


class _Lost(Exception):
    """Stands for Ray's ActorDiedError."""


class _Replicas:
    """Sends to one in-process app; can fail the next calls before or after their first part.
    A unary call (UNARY_METHOD) answers every part at once, as Ray's unary handle call does: it
    fails before the ingress sees any part."""

    def __init__(self, app) -> None:
        self.app = app
        self.calls: list[tuple[str, RelayedRequest]] = []
        self.fail_before = 0
        self.fail_after_parts: int | None = None

    async def send(self, method: str, request: RelayedRequest):
        self.calls.append((method, request))
        if self.fail_before:
            self.fail_before -= 1
            raise _Lost("replica died")
        parts = self._parts(request)
        if method == UNARY_METHOD:
            parts = _replay(await collect(parts))
        async with contextlib.aclosing(parts) as opened:
            async for part in opened:
                yield part

    async def _parts(self, request: RelayedRequest):
        count = 0
        async with contextlib.aclosing(run_in_app(self.app, request)) as parts:
            async for part in parts:
                if self.fail_after_parts is not None and count >= self.fail_after_parts:
                    self.fail_after_parts = None
                    raise _Lost("replica died mid-answer")
                count += 1
                yield part


async def _until(condition, tries: int = 50) -> None:
    """Polls condition every 10 ms, up to tries times; the caller asserts what it then expects."""
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.01)


async def _replay(parts: list):
    for part in parts:
        yield part


@contextlib.asynccontextmanager
async def _ingress(ready: bool = True):
    app, chat = make_app()
    await app.router.start()
    app.is_ready = True
    replicas = _Replicas(app)
    state = {"ready": ready}
    ingress = IngressApp(replicas.send, lambda: state["ready"], lambda e: isinstance(e, _Lost), 1 << 20)
    transport = httpx.ASGITransport(app=ingress)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as http:
        client = openai.AsyncOpenAI(
            base_url="http://ingress/v1", api_key="x", http_client=http, max_retries=0
        )
        try:
            yield client, http, replicas, state
        finally:
            await app.router.shutdown()


def test_peek_model_and_relayed_request():
    assert peek_model(b'{"model": "m", "messages": []}') == "m"
    assert peek_model(b"{not json") is None
    assert peek_model(b'{"model": 3}') is None
    request = relayed("POST", "/v1/chat/completions", {"x-session-id": "s1"}, b'{"model": "m"}')
    assert (request.model, request.session_id, request.stream) == ("m", "s1", False)
    assert relayed("POST", "/v1/completions", {}, b'{"model": "m", "stream": true}').stream
    assert relayed("GET", "/v1/models/chat", {}, b"").model == "chat"
    assert relayed("POST", "/v1/models/reload", {}, b"").model is None


def test_peek_reads_stream_only_when_it_is_true():
    assert (peek(b'{"model": "m", "stream": true}').model, peek(b'{"stream": true}').stream) == ("m", True)
    assert not peek(b'{"model": "m", "stream": false}').stream
    assert not peek(b'{"model": "m"}').stream
    # A bad stream value is the replica's 400 to give; the model is still peeked for routing.
    assert peek(b'{"model": "m", "stream": "yes"}') == peek(b'{"model": "m"}')
    assert not peek(b"[1, 2]").stream and peek(b"[1, 2]").model is None


@_sync
async def test_chat_stream_embeddings_through_the_sdk():
    async with _ingress() as (client, _, replicas, _):
        reply = await client.chat.completions.create(
            model="fake-chat", messages=[{"role": "user", "content": "abc"}], max_tokens=3
        )
        assert reply.choices[0].message.content and reply.model == "fake-chat"
        stream = await client.chat.completions.create(
            model="fake-chat", messages=[{"role": "user", "content": "abc"}], max_tokens=3, stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == reply.choices[0].message.content
        vectors = await client.embeddings.create(model="fake-embed", input=["a", "bb"])
        assert [len(d.embedding) for d in vectors.data] == [4, 4]
        # Only the streamed request went through a streaming call; the others in one unary call.
        assert [m for m, _ in replicas.calls] == [UNARY_METHOD, "chat", UNARY_METHOD]


@_sync
async def test_errors_are_the_servers_in_openai_format():
    async with _ingress() as (client, http, _, _):
        with pytest.raises(openai.NotFoundError) as error:
            await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
        assert error.value.body["code"] == "model_not_found"
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="fake-chat", messages="not a list")
        response = await http.post("/v1/chat/completions", content=b"{broken")
        assert response.status_code == 400 and "error" in response.json()
        too_big = await http.post("/v1/embeddings", content=b"x" * ((1 << 20) + 1))
        assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "request_too_large"


@_sync
async def test_no_replica_ready_is_503_with_retry_after():
    async with _ingress(ready=False) as (_, http, replicas, state):
        response = await http.post("/v1/chat/completions", json={"model": "fake-chat", "messages": []})
        assert response.status_code == 503 and response.headers["retry-after"] == "2"
        assert response.json()["error"]["code"] == "service_unavailable"
        assert (await http.get("/health")).status_code == 503
        assert replicas.calls == []
        state["ready"] = True
        assert (await http.get("/health")).status_code == 200


@_sync
async def test_a_replica_lost_before_answering_is_replaced():
    async with _ingress() as (client, _, replicas, _):
        replicas.fail_before = 2
        reply = await client.chat.completions.create(
            model="fake-chat", messages=[{"role": "user", "content": "abc"}], max_tokens=2
        )
        assert reply.choices[0].message.content
        assert len(replicas.calls) == 3


@_sync
async def test_a_replica_lost_while_answering_a_unary_call_is_replaced():
    """Nothing of a unary answer reaches the client before the whole of it: a replica lost after
    it began answering is as if lost before, and the request goes to another one."""
    async with _ingress() as (client, _, replicas, _):
        replicas.fail_after_parts = 1  # the head went, then the replica died
        reply = await client.chat.completions.create(
            model="fake-chat", messages=[{"role": "user", "content": "abc"}], max_tokens=2
        )
        assert reply.choices[0].message.content
        assert [m for m, _ in replicas.calls] == [UNARY_METHOD, UNARY_METHOD]


@_sync
async def test_every_replica_lost_is_a_503_replica_failed():
    async with _ingress() as (_, http, replicas, _):
        replicas.fail_before = 3
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "fake-chat", "messages": [{"role": "user", "content": "a"}]},
        )
        assert response.status_code == 503 and response.json()["error"]["code"] == "replica_failed"


@_sync
async def test_a_replica_lost_mid_stream_ends_it_with_an_error_event():
    async with _ingress() as (_, http, replicas, _):
        replicas.fail_after_parts = 3  # the head and two events
        body = {"model": "fake-chat", "messages": [{"role": "user", "content": "abcdef"}], "stream": True}
        response = await http.post("/v1/chat/completions", json=body)
        events = [line[6:] for line in response.text.split("\n\n") if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["error"]["code"] == "replica_failed"
        assert len(replicas.calls) == 1  # a stream that started is not replayed


@_sync
async def test_closing_the_relay_aborts_the_request_on_the_replica():
    app, chat = make_app(step_s=0.05)
    await app.router.start()
    app.is_ready = True
    body = json.dumps(
        {"model": "fake-chat", "messages": [{"role": "user", "content": "x" * 40}], "stream": True}
    )
    request = relayed("POST", "/v1/chat/completions", {}, body.encode())
    parts = run_in_app(app, request)
    head = await anext(parts)
    assert isinstance(head, ResponseHead) and head.status == 200
    assert (await anext(parts)).startswith(b"data: ")
    await parts.aclose()
    await _until(lambda: chat.aborted)
    assert chat.aborted and not chat.running
    await app.router.shutdown()


@_sync
async def test_cancelling_a_unary_answer_aborts_the_request_on_the_replica():
    """The client left while a replica collected a unary answer (Ray cancels the call)."""
    app, chat = make_app(step_s=0.05)
    await app.router.start()
    app.is_ready = True
    messages = [{"role": "user", "content": "x" * 40}]
    body = json.dumps({"model": "fake-chat", "messages": messages, "max_tokens": 40}).encode()
    request = relayed("POST", "/v1/chat/completions", {}, body)
    answer = asyncio.ensure_future(collect(run_in_app(app, request)))
    await _until(lambda: chat.running)
    answer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await answer
    await _until(lambda: chat.aborted)
    assert chat.aborted and not chat.running
    await app.router.shutdown()
