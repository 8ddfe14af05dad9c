"""Unloads right after a client drops its stream, and shutdowns with streams in flight, on real
SmolLM2 engines behind one Router: the unload finds the aborted request gone (the stream's close
returns once the engine dropped it), the ledger and the models never disagree, and a shutdown
aborts what is in flight without an error."""

from __future__ import annotations

import asyncio
import logging

import pytest
from swiftserve.router import errors
from swiftserve.router.model_pool import ModelPool
from swiftserve.router.router import Router
from swiftserve.scheduler.residency_types import State

from swiftserve import SamplingParams
from swiftserve.config import EngineConfig
from swiftserve.engine.chat_model import LocalChatModel

pytestmark = pytest.mark.slow

LONG = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
CONFIG = dict(max_model_len=256, kv_cache_memory=16 << 20)


def _router(smollm_dir, executor) -> tuple[Router, LocalChatModel]:
    chat = LocalChatModel("chat", EngineConfig(model=str(smollm_dir), **CONFIG), executor)
    fp = chat.footprint()
    router = Router(ModelPool(4 * (fp.weight_bytes + fp.kv_floor_blocks * fp.kv_block_bytes)))
    router.add(chat, "on-demand", idle_timeout_s=600.0)
    return router, chat


async def _read_then_drop(router: Router, events: int) -> int:
    stream = router.generate("chat", "Count from one to one hundred:", LONG)
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == events:
            break
    await stream.aclose()
    return seen


def test_unload_right_after_a_dropped_stream_unloads_and_the_ledger_agrees(smollm_dir, executor):
    router, chat = _router(smollm_dir, executor)

    async def main():
        await router.start()
        results = []
        for _ in range(3):
            assert await _read_then_drop(router, events=3) == 3
            results.append(await router.unload("chat"))  # at once: no 500, no ModelInUseError
            assert router.pool.disagreements() == []
            assert (router.pool.state("chat"), chat.is_resident) == (State.COLD, False)
            assert router.pool.ledger.committed_bytes() == 0
        await router.shutdown()
        return results

    assert asyncio.run(main()) == [True, True, True]


def test_a_refused_unload_leaves_the_model_resident_in_the_ledger(smollm_dir, executor):
    """An engine request the ledger does not count (started beside the router) makes the unload
    fail: the admin gets ModelBusyError and the ledger keeps the model resident, as it is."""
    router, chat = _router(smollm_dir, executor)

    async def main():
        await router.start()
        await router.load("chat")
        direct = chat.generate("Count:", LONG)
        await anext(direct)
        with pytest.raises(errors.ModelBusyError):
            await router.unload("chat")
        state = (router.pool.state("chat"), chat.is_resident, router.pool.disagreements())
        await direct.aclose()
        unloaded = await router.unload("chat")
        await router.shutdown()
        return state, unloaded

    state, unloaded = asyncio.run(main())
    assert state == (State.RESIDENT, True, [])
    assert unloaded is True


def test_shutdown_with_a_stream_in_flight_aborts_it_without_an_error(smollm_dir, executor, caplog):
    router, chat = _router(smollm_dir, executor)

    async def main():
        await router.start()
        stream = router.generate("chat", "Count from one to one hundred:", LONG)
        await anext(stream)
        reader = asyncio.ensure_future(_drain(stream))
        await router.shutdown()
        return await reader

    caplog.set_level(logging.INFO)
    outcome = asyncio.run(main())
    assert outcome == "aborted"
    assert not chat.is_resident
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def _drain(stream) -> str:
    try:
        async for output in stream:
            if output.finished:
                return output.outputs[0].finish_reason or "finished"
    except errors.RouterError:
        return "aborted"
    return "ended"
