"""Two tiny chat models in one ModelPool on one executor: the busy one's KV cache grows while it
serves, the idle one's shrinks to its floor, as the ledger counts; greedy outputs are unchanged and
an engine never has more usable blocks than the ledger grants it."""

from __future__ import annotations

import asyncio

import pytest
from swiftserve.router.model_pool import ModelPool
from swiftserve.scheduler.kv_demand import IDLE_TICKS

from swiftserve import LLM, EngineConfig, SamplingParams
from swiftserve.engine.chat_model import LocalChatModel

from .tiny_chat import BLOCK_BYTES, make_tiny_chat

CONFIG = dict(max_model_len=128, kv_cache_memory=256 * BLOCK_BYTES, dtype="float32")
FLOOR = 128 // 16
GREEDY = SamplingParams(temperature=0, max_tokens=100, ignore_eos=True)
PROMPTS = [[5 + i, 17, 300 + 7 * i, 4000 + i, 12, 99, 1000 + 3 * i, 8, 77 + i] for i in range(12)]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, smollm_dir):
    return make_tiny_chat(tmp_path_factory.mktemp("tiny") / "chat", smollm_dir)


async def _generate(model: LocalChatModel, prompt: list[int]) -> list[int]:
    outputs = [o async for o in model.generate(prompt, GREEDY)]
    return outputs[-1].outputs[0].token_ids


def test_a_busy_models_kv_grows_and_an_idle_ones_shrinks(tiny_dir, executor) -> None:
    config = EngineConfig(model=str(tiny_dir), **CONFIG)
    want = [o.outputs[0].token_ids for o in LLM(str(tiny_dir), **CONFIG).generate(PROMPTS, GREEDY)]
    busy, idle = LocalChatModel("busy", config, executor), LocalChatModel("idle", config, executor)
    fp = busy.footprint()
    pool = ModelPool(2 * fp.weight_bytes + 200 * fp.kv_block_bytes, reap_interval_s=3600)
    pool.add(busy, "pinned")
    pool.add(idle, "pinned")

    async def blocks(model: LocalChatModel) -> tuple[int, int]:
        """(usable blocks in the engine, blocks the ledger counts)."""
        return (await model.kv_usage()).num_blocks, pool.ledger.kv_blocks(model.name)

    async def main():
        await pool.start()
        assert await blocks(busy) == await blocks(idle) == (FLOOR + 4, FLOOR + 4)
        # 12 sequences of 109 tokens want 84 blocks: only a growing cache avoids queueing them
        tasks = [asyncio.ensure_future(_generate(busy, p)) for p in PROMPTS]
        seen = []
        while not all(t.done() for t in tasks):
            await pool.follow_kv_demand()
            engine_blocks, granted = await blocks(busy)
            assert engine_blocks <= granted
            seen.append(granted)
            await asyncio.sleep(0.02)
        got = [t.result() for t in tasks]
        assert await blocks(idle) == (FLOOR, FLOOR)  # quiet for far longer than IDLE_TICKS ticks
        for _ in range(IDLE_TICKS):
            await pool.follow_kv_demand()
        after = await blocks(busy)
        await pool.shutdown()
        return got, seen, after

    got, seen, after = asyncio.run(main())
    assert got == want
    assert len(seen) > IDLE_TICKS and max(seen) > 3 * (FLOOR + 4)  # grew (to 84 it holds all at once)
    assert after == (FLOOR, FLOOR)  # all done: back to the floor after a quiet window
