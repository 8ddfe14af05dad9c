"""The router on fake models: the request path (load on first use, cold-start timing, release on
close), kinds, admin load / unload, states and the typed errors."""

import asyncio

import pytest
from swiftserve.router import errors
from swiftserve.router.model_pool import ModelPool
from swiftserve.router.router import Router

from swiftserve.engine.served_model import Footprint
from swiftserve.sampling_params import SamplingParams

MB = 1_000_000


class FakeChat:
    kind = "chat"
    max_model_len = 64
    tokenizer = "tok"

    def __init__(self, name, size=10 * MB, load_s=0.01):
        self.name, self.size, self.load_s = name, size, load_s
        self.is_resident = False
        self.in_flight = 0

    def footprint(self):
        return Footprint(weight_bytes=self.size, kv_block_bytes=1000, kv_floor_blocks=4)

    async def load(self):
        await asyncio.sleep(self.load_s)
        self.is_resident = True

    async def unload(self, *, force: bool = False):
        assert self.in_flight == 0 or force, "unloaded under a request"
        self.is_resident = False

    def apply_chat_template(self, messages, add_generation_prompt=True):
        return "|".join(m["content"] for m in messages)

    async def generate(self, prompt, params, request_id=None, priority=0):
        assert self.is_resident, "generate on a cold model"
        self.in_flight += 1
        try:
            for i in range(params.max_tokens):
                await asyncio.sleep(0)
                yield f"{prompt}:{i}"
        finally:
            self.in_flight -= 1

    def stats(self):
        return {"running": self.in_flight}


class FakeEmbed(FakeChat):
    kind = "embedding"
    dim = 8

    async def embed(self, inputs):
        assert self.is_resident
        return [[float(len(x))] * self.dim for x in inputs]


def _router(budget=100 * MB, **models):
    cold_starts = []
    router = Router(ModelPool(budget, reap_interval_s=3600), lambda n, s: cold_starts.append((n, s)))
    for model, policy in models.values():
        router.add(model, policy, idle_timeout_s=5.0)
    return router, cold_starts


async def _collect(router, name, prompt, n):
    return [x async for x in router.generate(name, prompt, SamplingParams(max_tokens=n))]


def test_cold_models_load_on_first_request_and_time_it():
    async def main():
        chat, embed = FakeChat("chat", load_s=0.05), FakeEmbed("embed")
        router, cold = _router(chat=(chat, "on-demand"), embed=(embed, "on-demand"))
        await router.start()
        assert [m.state for m in router.models()] == ["cold", "cold"]
        assert await _collect(router, "chat", "hi", 2) == ["hi:0", "hi:1"]
        assert await router.embed("embed", ["ab"]) == [[2.0] * 8]
        assert [n for n, _ in cold] == ["chat", "embed"] and cold[0][1] >= 0.05
        await _collect(router, "chat", "again", 1)  # resident now: no cold start
        assert len(cold) == 2
        info = router.info("chat")
        assert (info.state, info.policy, info.kind, info.num_loads) == ("resident", "on-demand", "chat", 1)
        assert info.resident_bytes == 10 * MB + 4 * 1000
        await router.shutdown()
        assert not chat.is_resident and not embed.is_resident

    asyncio.run(main())


def test_pinned_models_load_at_start_and_refuse_unload():
    async def main():
        router, _ = _router(chat=(FakeChat("chat"), "pinned"))
        await router.start()
        assert router.info("chat").state == "resident"
        with pytest.raises(errors.ModelPinnedError):
            await router.unload("chat")
        await router.shutdown()

    asyncio.run(main())


def test_unload_with_a_request_in_flight_refuses_then_works():
    async def main():
        chat = FakeChat("chat")
        router, _ = _router(chat=(chat, "on-demand"))
        await router.start()
        stream = router.generate("chat", "x", SamplingParams(max_tokens=3))
        assert await stream.__anext__() == "x:0"  # a request holds the model
        with pytest.raises(errors.ModelBusyError):
            await router.unload("chat")
        await stream.aclose()  # closing early releases it
        assert chat.in_flight == 0
        assert await router.unload("chat") is True
        assert await router.unload("chat") is False  # already cold
        info = router.info("chat")
        assert (info.state, info.resident_bytes, info.num_unloads) == ("cold", 0, 1)
        await router.load("chat")
        assert router.info("chat").state == "resident"
        await router.shutdown()

    asyncio.run(main())


def test_kinds_unknown_names_and_closed_router():
    async def main():
        router, _ = _router(chat=(FakeChat("chat"), "on-demand"), embed=(FakeEmbed("embed"), "on-demand"))
        await router.start()
        with pytest.raises(errors.WrongKindError):
            await router.embed("chat", ["x"])
        with pytest.raises(errors.WrongKindError):
            await _collect(router, "embed", "x", 1)
        with pytest.raises(errors.ModelNotFoundError):
            await _collect(router, "nope", "x", 1)
        with pytest.raises(errors.ModelNotFoundError):
            await router.unload("nope")
        handle = router.handle("chat", "chat")
        assert (handle.tokenizer, handle.max_model_len) == ("tok", 64)  # while cold
        assert handle.apply_chat_template([{"content": "a"}, {"content": "b"}]) == "a|b"
        assert handle.stats() is None  # cold: nothing to report
        assert [x async for x in handle.generate("h", SamplingParams(max_tokens=1))] == ["h:0"]
        assert handle.stats() == {"running": 0}
        with pytest.raises(ValueError, match="two models"):
            router.add(FakeChat("chat"), "on-demand")
        await router.shutdown()
        with pytest.raises(errors.RouterClosedError):
            await _collect(router, "chat", "x", 1)

    asyncio.run(main())


def test_a_budget_for_one_model_at_a_time_serves_both_by_eviction():
    async def main():
        a, b = FakeChat("a", size=60 * MB), FakeChat("b", size=60 * MB)
        router, cold = _router(budget=70 * MB, a=(a, "on-demand"), b=(b, "on-demand"))
        await router.start()
        for name in ("a", "b", "a"):
            assert await _collect(router, name, name, 1) == [f"{name}:0"]
        assert [n for n, _ in cold] == ["a", "b", "a"]
        assert (a.is_resident, b.is_resident) == (True, False)
        assert router.info("b").num_unloads == 1
        await router.shutdown()

    asyncio.run(main())
