"""Tier 1, no Ray: the replica class (replica.py) called directly, with the default chat and
embedding models, behind the ingress app; the unchanged openai SDK as the client."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from swiftserve.router.router_config import RouterConfig

from swiftserve.ray.ingress_app import UNARY_METHOD, IngressApp
from swiftserve.ray.replica import SwiftServeReplica
from swiftserve.ray.replica_config import ReplicaGroup, ReplicaSetConfig
from swiftserve.ray.spec import ServeSpec
from swiftserve.ray.stage_wire import PrewarmCall

# Ray awaits the async __del__; the garbage collector's later call makes an unawaited coroutine.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:coroutine .*__del__:RuntimeWarning")]

CHAT, EMBED = "smollm2-135m-instruct", "all-minilm-l6-v2"


def _spec() -> ServeSpec:
    router = RouterConfig.from_flags(
        (CHAT, EMBED), memory_budget=2 << 30, max_model_len=512, kv_cache_memory=32 << 20
    )
    # Rank 1 is in no group: the chat model, which group "chatters" pins, is on-demand there.
    replicas = ReplicaSetConfig(num_replicas=2, groups=(ReplicaGroup("chatters", 1, (CHAT,)),))
    return ServeSpec(router, replicas)


async def _scenario() -> None:
    replica = SwiftServeReplica.__new__(SwiftServeReplica)
    await replica.__init__(_spec(), rank=1)  # as Ray calls an async constructor
    try:
        assert replica.group is None
        stats = replica.record_routing_stats()
        assert stats["models"] == {CHAT: "cold", EMBED: "resident"}
        assert (stats["queue_depth"], stats["group"], stats["seq"]) == (0, None, 1)
        assert stats["free_budget_bytes"] > 0

        async def send(method, request):
            if method == UNARY_METHOD:  # a unary call: every part in one answer
                for part in await replica.answer(request):
                    yield part
                return
            async for part in getattr(replica, method)(request):
                yield part

        ingress = IngressApp(send, lambda: True, lambda e: False, 1 << 20)
        transport = httpx.ASGITransport(app=ingress)
        async with httpx.AsyncClient(transport=transport, base_url="http://i") as http:
            client = openai.AsyncOpenAI(base_url="http://i/v1", api_key="x", http_client=http, max_retries=0)
            messages = [{"role": "user", "content": "Say hi"}]
            reply = await client.chat.completions.create(model=CHAT, messages=messages, max_tokens=4)
            assert reply.choices[0].message.content and reply.usage.completion_tokens <= 4
            stream = await client.chat.completions.create(
                model=CHAT, messages=messages, max_tokens=4, stream=True, temperature=0
            )
            chunks = [c async for c in stream]
            assert chunks[0].choices[0].delta.role == "assistant"
            vectors = await client.embeddings.create(model=EMBED, input=["a text"])
            assert len(vectors.data[0].embedding) == 384
            with pytest.raises(openai.BadRequestError) as error:
                await client.embeddings.create(model=CHAT, input=["x"])
            assert error.value.body["code"] == "model_not_supported"
        after = replica.record_routing_stats()
        assert after["models"][CHAT] == "resident" and after["seq"] == 2
        assert after["num_requests"] == {CHAT: 3, EMBED: 1}
        assert await replica.prewarm(PrewarmCall((CHAT, "unknown"))) == []  # resident already
        scaling = await replica.record_autoscaling_stats()
        assert scaling["queue_depth"] == 0.0 and scaling["ttft_s"] > 0
        assert (await replica.record_autoscaling_stats())["ttft_s"] == 0.0  # nothing new since
        await replica.check_health()
    finally:
        await replica.__del__()


def test_the_replica_serves_the_openai_api_and_reports_its_state():
    asyncio.run(_scenario())
