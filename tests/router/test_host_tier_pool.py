"""The host tier on real SmolLM2 engines in one ModelPool: an on-demand model unloaded with
host_memory set is parked, its reload builds the engine around the kept weights (the weight
loader is never called) and greedy tokens are unchanged; a full host tier drops the least
recently parked model to disk (its memory returned); unload_to disk never parks."""

from __future__ import annotations

import asyncio

from swiftserve.router.model_pool import ModelPool
from swiftserve.scheduler.residency_types import State

from swiftserve import SamplingParams
from swiftserve.config import EngineConfig
from swiftserve.engine.chat_model import LocalChatModel
from swiftserve.model_runner import model_runner

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
CONFIG = dict(max_model_len=256, kv_cache_memory=16 << 20)  # bfloat16 weights: ~270 MB


def _models(smollm_dir, executor, *names: str) -> list[LocalChatModel]:
    return [LocalChatModel(n, EngineConfig(model=str(smollm_dir), **CONFIG), executor) for n in names]


def _pool(models: list[LocalChatModel], host_models: float, unload_to: str = "auto") -> ModelPool:
    """A pool with room for every model, and host memory for `host_models` models' weights."""
    fp = models[0].footprint()
    budget = len(models) * (fp.weight_bytes + fp.kv_floor_blocks * fp.kv_block_bytes) * 2
    pool = ModelPool(budget, host_budget_bytes=int(host_models * fp.weight_bytes), reap_interval_s=3600)
    for model in models:
        pool.add(model, "on-demand", idle_timeout_s=60.0, unload_to=unload_to)
    return pool


async def _greedy(pool: ModelPool, name: str) -> list[int]:
    async with pool.use(name) as (model, _):
        outputs = [o async for o in model.generate("The capital of France is", GREEDY)]
    return outputs[-1].outputs[0].token_ids


def _no_weight_loads(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a reload from host memory read the weights again")

    monkeypatch.setattr(model_runner, "load_model", refuse)


def test_an_unloaded_model_parks_and_reloads_without_reading_its_weights(smollm_dir, executor, monkeypatch):
    (chat,) = _models(smollm_dir, executor, "chat")
    pool = _pool([chat], host_models=1.5)

    async def main():
        before = await _greedy(pool, "chat")
        assert await pool.unload("chat")
        assert (pool.state("chat"), chat.is_parked, chat.is_resident) == (State.PARKED, True, False)
        assert pool.ledger.host.used_bytes() == chat.footprint().weight_bytes
        _no_weight_loads(monkeypatch)
        after = await _greedy(pool, "chat")
        entry = pool.entry("chat")
        counts = (entry.num_parks, entry.loads_by_tier, chat.num_weight_loads, chat.num_host_reloads)
        host_left = pool.ledger.host.used_bytes()
        await pool.shutdown()
        return before, after, counts, host_left

    before, after, counts, host_left = asyncio.run(main())
    assert after == before
    assert counts == (1, {"disk": 1, "host": 1}, 1, 1)
    assert host_left == 0  # the reloaded weights are the resident ones again
    assert not chat.is_parked and not chat.is_resident  # shutdown returns everything


def test_a_full_host_tier_drops_the_least_recently_parked_model_to_disk(smollm_dir, executor, rss):
    a, b = _models(smollm_dir, executor, "a", "b")
    pool = _pool([a, b], host_models=1.5)  # room for one parked model

    async def main():
        await _greedy(pool, "a")
        await _greedy(pool, "b")
        await pool.unload("a")
        rss_two_parked_or_resident = rss()
        await pool.unload("b")  # parking b drops a (parked first) to disk
        freed = rss_two_parked_or_resident - rss()
        states = (pool.state("a"), pool.state("b"), a.is_parked, b.is_parked)
        drops = (pool.entry("a").num_drops, pool.entry("b").num_drops)
        assert await _greedy(pool, "a")  # from disk again
        tiers = pool.entry("a").loads_by_tier
        await pool.shutdown()
        return freed, states, drops, tiers

    freed, states, drops, tiers = asyncio.run(main())
    weights = a.footprint().weight_bytes
    assert states == (State.COLD, State.PARKED, False, True)
    assert drops == (1, 0)
    assert tiers == {"disk": 2, "host": 0}
    # a's weights went back to the OS (b's KV cache too); b's stayed, parked.
    assert freed > 0.8 * weights, (
        f"RSS fell {freed / 2**20:.0f} MiB, a's weights are {weights / 2**20:.0f} MiB"
    )


def test_unload_to_disk_never_parks(smollm_dir, executor):
    (chat,) = _models(smollm_dir, executor, "chat")
    pool = _pool([chat], host_models=2, unload_to="disk")

    async def main():
        await _greedy(pool, "chat")
        await pool.unload("chat")
        state = (pool.state("chat"), chat.is_parked, pool.ledger.host.used_bytes())
        await _greedy(pool, "chat")
        await pool.shutdown()
        return state

    assert asyncio.run(main()) == (State.COLD, False, 0)
    assert (chat.num_weight_loads, chat.num_host_reloads, pool.entry("chat").num_parks) == (2, 0, 0)
