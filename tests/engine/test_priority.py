"""Request priority on the real model: a request submitted behind a queue of less urgent ones
gets its first token before them (the order of first tokens, never a wall-clock threshold)."""

from __future__ import annotations

import asyncio

import pytest
from swiftserve.scheduler.config import SchedulerConfig

from swiftserve import AsyncEngine, EngineConfig, SamplingParams

pytestmark = pytest.mark.slow

PARAMS = SamplingParams(max_tokens=4, temperature=0, ignore_eos=True)


def test_an_urgent_request_behind_a_queue_gets_its_first_token_first(smollm_dir):
    # One sequence at a time: the queue order is the order of first tokens.
    config = EngineConfig(
        model=str(smollm_dir), max_model_len=256, kv_cache_memory=16 << 20,
        scheduler=SchedulerConfig(max_num_seqs=1),
    )  # fmt: skip
    firsts: list[str] = []

    async def request(name: str, priority: int, started: asyncio.Event | None = None) -> str:
        text = ""
        async for out in engine.generate(f"Request {name}:", PARAMS, name, priority=priority):
            if name not in firsts:
                firsts.append(name)
                if started is not None:
                    started.set()
            text = out.outputs[0].text
        return text

    async def queue_then_urgent() -> dict[str, str]:
        running = asyncio.Event()
        first = asyncio.ensure_future(request("low0", 5, running))
        await running.wait()  # low0 runs; the next ones queue behind it
        lows = [asyncio.ensure_future(request(f"low{i}", 5)) for i in (1, 2, 3)]
        await asyncio.sleep(0)
        while len(engine.engine.requests) < 4:  # every low one is in the engine's queue
            await asyncio.sleep(0.001)
        urgent = asyncio.ensure_future(request("urgent", 0))
        texts = await asyncio.gather(first, *lows, urgent)
        return dict(zip(["low0", "low1", "low2", "low3", "urgent"], texts, strict=True))

    async def main() -> dict[str, str]:
        try:
            return await queue_then_urgent()
        finally:
            await engine.shutdown()

    engine = AsyncEngine(config)
    texts = asyncio.run(main())
    assert firsts == ["low0", "urgent", "low1", "low2", "low3"]
    assert all(texts.values())
    stats = engine.engine.stats()
    assert stats.num_free_blocks == stats.num_total_blocks and not engine.engine.requests
