"""Priorities and bounded queues on real SmolLM2 engines behind one Router: requests run in
priority order (a model's request_priority for those that set none, a pipeline's for its
stages), a full queue refuses at once while the admitted requests finish with the outputs they
have alone, a cold model's wait for its load is bounded too, and a pipeline's max_queue refuses
at arrival, holding nothing. Orders are observed, never wall-clock thresholds."""

from __future__ import annotations

import asyncio

import pytest
from swiftserve.router import errors
from swiftserve.router.model_pool import ModelPool
from swiftserve.router.pipeline_spec import Message, PipelineSpec, StageSpec
from swiftserve.router.router import Router
from swiftserve.scheduler.config import SchedulerConfig
from swiftserve.scheduler.residency_types import State

from swiftserve.config import EngineConfig
from swiftserve.engine.chat_model import LocalChatModel

pytestmark = pytest.mark.slow

GREEDY = {"temperature": 0, "ignore_eos": True}
LONG = {"max_tokens": 48, **GREEDY}
SHORT = {"max_tokens": 4, **GREEDY}


def _chat(name: str, smollm_dir, executor, max_queue: int | None = None) -> LocalChatModel:
    """One sequence at a time: the engine's queue order is the order requests finish in."""
    scheduler = SchedulerConfig(max_num_seqs=1, max_num_waiting=max_queue)
    config = EngineConfig(
        model=str(smollm_dir), max_model_len=256, kv_cache_memory=16 << 20, scheduler=scheduler
    )
    return LocalChatModel(name, config, executor)


def _ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _engine(router: Router, name: str):
    return router.pool.get(name).engine.engine  # the LLMEngine of a resident LocalChatModel


def _all_free(router: Router, name: str) -> bool:
    engine = _engine(router, name)
    stats = engine.stats()
    return not engine.requests and stats.num_free_blocks == stats.num_total_blocks


async def _until(condition, what: str) -> None:
    for _ in range(20_000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"never: {what}")


def test_requests_run_by_priority_with_the_model_default_and_the_pipeline_inherited(smollm_dir, executor):
    router = Router(ModelPool(4 << 30))
    router.add(_chat("small", smollm_dir, executor), "pinned", request_priority=3)
    stage = StageSpec(
        "answer", "chat", "small", messages=(Message("user", "Urgent: {{ input }}"),), sampling=SHORT
    )
    finished: list[str] = []

    async def chat(name: str, **limits) -> None:
        await router.chat(
            "small", _ask(f"Request {name}"), **limits, **(LONG if name == "blocker" else SHORT)
        )
        finished.append(name)

    async def pipeline() -> None:
        await router.run_pipeline("urgent", _ask("hello"))
        finished.append("pipeline")

    async def main():
        await router.start()
        await router.add_pipeline(PipelineSpec("urgent", (stage,), priority=-1))
        blocker = asyncio.ensure_future(chat("blocker", priority=0))
        await _until(lambda: _engine(router, "small").scheduler.running, "the blocker runs")
        queued = [
            asyncio.ensure_future(chat("explicit-5a", priority=5)),
            asyncio.ensure_future(chat("default-3")),  # the model's request_priority
            asyncio.ensure_future(pipeline()),  # its stage at the pipeline's priority, -1
            asyncio.ensure_future(chat("explicit-5b", priority=5)),
            asyncio.ensure_future(chat("explicit-2", priority=2)),
        ]
        await _until(lambda: len(_engine(router, "small").requests) == 6, "every request queued")
        waiting = [s.priority for s in _engine(router, "small").scheduler.waiting]
        await asyncio.gather(blocker, *queued)
        free = _all_free(router, "small")
        await router.shutdown()
        return waiting, free

    waiting, free = asyncio.run(main())
    assert waiting == [-1, 2, 3, 5, 5]
    assert finished == ["blocker", "pipeline", "explicit-2", "default-3", "explicit-5a", "explicit-5b"]
    assert free


def test_past_the_queue_bound_requests_are_refused_at_once_and_the_admitted_keep_their_outputs(
    smollm_dir, executor
):
    router = Router(ModelPool(4 << 30))
    router.add(_chat("small", smollm_dir, executor, max_queue=2), "pinned", max_queue=2)
    refused: list[str] = []
    router.on_queue_full = refused.append
    prompts = [f"Write a list of {n} colours:" for n in ("three", "four", "five")]

    async def main():
        await router.start()
        # Twice: the second run starts from the prefix cache, as the runs below do.
        alone = [(await router.complete("small", p, **LONG)).text for p in prompts * 2][3:]
        admitted = [asyncio.ensure_future(router.complete("small", prompts[0], **LONG))]
        await _until(lambda: _engine(router, "small").scheduler.running, "the first one runs")
        admitted += [asyncio.ensure_future(router.complete("small", p, **LONG)) for p in prompts[1:]]
        await _until(lambda: len(_engine(router, "small").scheduler.waiting) == 2, "two waiting")
        extra = []
        for _ in range(3):
            with pytest.raises(errors.ModelQueueFullError) as info:
                await router.complete("small", "One more:", **SHORT)
            extra.append((info.value.name, sum(task.done() for task in admitted)))
        together = [(await task).text for task in admitted]
        free = _all_free(router, "small")
        await router.shutdown()
        return alone, together, extra, free

    alone, together, extra, free = asyncio.run(main())
    assert extra == [("small", 0)] * 3  # each refused while every admitted request still ran
    assert together == alone
    assert refused == ["small"] * 3 and free


def test_the_wait_for_a_cold_models_load_is_bounded_by_its_max_queue(smollm_dir, executor):
    router = Router(ModelPool(4 << 30))
    router.add(_chat("small", smollm_dir, executor), "on-demand", 600.0, max_queue=1)

    async def main():
        await router.start()
        first = asyncio.ensure_future(router.complete("small", "Hello", **SHORT))
        await _until(lambda: router.pool.state("small") is State.LOADING, "the load starts")
        with pytest.raises(errors.ModelQueueFullError):
            await router.complete("small", "Hello again", **SHORT)
        state = router.pool.state("small")  # refused before the load was over
        text = (await first).text
        again = (await router.complete("small", "Hello again", **SHORT)).text  # resident: admitted
        await router.shutdown()
        return state, text, again

    state, text, again = asyncio.run(main())
    assert state is State.LOADING and text and again


def test_a_pipeline_past_its_max_queue_is_refused_at_arrival_holding_nothing(smollm_dir, executor):
    router = Router(ModelPool(4 << 30))
    router.add(_chat("small", smollm_dir, executor), "pinned")
    stage = StageSpec("answer", "chat", "small", messages=(Message("user", "{{ input }}"),), sampling=LONG)
    outcomes: list[str] = []
    router.on_pipeline = lambda name, outcome: outcomes.append(outcome.kind)

    def holds() -> int:
        return router.pool.ledger._get("small").holds

    async def main():
        await router.start()
        await router.add_pipeline(PipelineSpec("one", (stage,), max_queue=1))
        first = asyncio.ensure_future(router.run_pipeline("one", _ask("Count to twenty.")))
        await _until(lambda: _engine(router, "small").requests, "the first one's stage runs")
        held = holds()
        with pytest.raises(errors.PipelineQueueFullError) as refused:
            await router.run_pipeline("one", _ask("And again."))
        during = (holds(), first.done())
        await first
        after = (holds(), router.pipelines.get("one").gate.num_inside)
        again = await router.run_pipeline("one", _ask("Once more."))
        await router.shutdown()
        return held, refused.value, during, after, again

    held, refused, during, after, again = asyncio.run(main())
    assert (refused.name, refused.max_queue) == ("one", 1)
    assert held == 1 and during == (1, False) and after == (0, 0)
    assert again.output and outcomes == ["queue_full", "ok", "ok"]


def test_a_request_refused_in_part_aborts_the_part_already_admitted(smollm_dir, executor):
    """Three prompts in one call, room for two: the third's refusal ends the other two before it
    is raised (they held KV blocks and engine steps for nothing)."""
    router = Router(ModelPool(4 << 30))
    router.add(_chat("small", smollm_dir, executor, max_queue=1), "pinned", max_queue=1)

    async def main():
        await router.start()
        with pytest.raises(errors.ModelQueueFullError):
            await router.complete("small", ["One,", "Two,", "Three,"], **LONG)
        free = _all_free(router, "small")
        await router.shutdown()
        return free

    assert asyncio.run(main())
