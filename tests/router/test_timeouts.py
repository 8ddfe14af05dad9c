"""Request timeouts and failing stages on real SmolLM2 engines behind one Router: a request that
runs past its timeout ends with RequestTimeoutError, streamed or not, and lets go of everything
it held in every stage (engine requests aborted, KV blocks back, leases ended, its pipeline's gate
left); a failing stage aborts the engine requests of the stages still running beside it."""

from __future__ import annotations

import asyncio

import pytest
from swiftserve.router import errors
from swiftserve.router.model_pool import ModelPool
from swiftserve.router.pipeline_spec import Message, PipelineSpec, StageSpec
from swiftserve.router.router import Router

from swiftserve.config import EngineConfig
from swiftserve.engine.chat_model import LocalChatModel

pytestmark = pytest.mark.slow

# Far more than any stage makes in the timeouts below on a CPU (tens of tokens per second).
ENDLESS = {"max_tokens": 440, "temperature": 0, "ignore_eos": True}
QUESTION = [{"role": "user", "content": "Tell me about the sea."}]


def _router(smollm_dir, executor, names=("small", "merge")) -> Router:
    router = Router(ModelPool(4 << 30))
    for name in names:
        config = EngineConfig(model=str(smollm_dir), max_model_len=512, kv_cache_memory=16 << 20)
        router.add(LocalChatModel(name, config, executor), "pinned")
    return router


def _engine(router: Router, name: str):
    return router.pool.get(name).engine.engine


def _in_flight(router: Router, names) -> dict[str, int]:
    return {name: len(_engine(router, name).requests) for name in names}


def _freed(router: Router, names) -> dict[str, tuple[int, int, int]]:
    """Per model: (engine requests, KV blocks in use, leases held)."""
    return {
        name: (
            len(_engine(router, name).requests),
            _engine(router, name).stats().num_used_blocks,
            router.pool.ledger._get(name).holds,
        )
        for name in names
    }


def _chat_stage(stage_id: str, model: str, after=(), fan_out: int = 1) -> StageSpec:
    messages = (Message("user", f"{stage_id} {{{{ i }}}}: {{{{ input }}}}"),)
    return StageSpec(stage_id, "chat", model, tuple(after), messages, fan_out=fan_out, sampling=ENDLESS)


# Two stages in parallel on two models (one a fan-out of two), then a final one.
WIDE = PipelineSpec(
    "wide",
    (
        _chat_stage("drafts", "small", fan_out=2),
        _chat_stage("notes", "merge"),
        _chat_stage("final", "merge", after=("drafts", "notes")),
    ),
)


async def _watch(router: Router, names, seen: dict[str, int]) -> None:
    """Records the most engine requests each model had at once, until cancelled."""
    while True:
        for name, count in _in_flight(router, names).items():
            seen[name] = max(seen.get(name, 0), count)
        await asyncio.sleep(0.005)


def test_a_pipeline_timeout_frees_every_stage(smollm_dir, executor):
    router = _router(smollm_dir, executor)
    outcomes: list[str] = []
    router.on_pipeline = lambda name, outcome: outcomes.append(outcome.kind)
    names = ("small", "merge")

    async def main():
        await router.start()
        await router.add_pipeline(WIDE)
        seen: dict[str, int] = {}
        watcher = asyncio.ensure_future(_watch(router, names, seen))
        with pytest.raises(errors.RequestTimeoutError) as info:
            await router.run_pipeline("wide", QUESTION, timeout=1.5)
        watcher.cancel()
        freed = _freed(router, names)
        gate = router.pipelines.get("wide").gate.num_inside
        await router.shutdown()
        return info.value, seen, freed, gate

    error, seen, freed, gate = asyncio.run(main())
    assert (error.name, error.seconds) == ("wide", 1.5)
    assert seen == {"small": 2, "merge": 1}  # both upstream stages were generating when it fired
    assert freed == {"small": (0, 0, 0), "merge": (0, 0, 0)} and gate == 0
    assert outcomes == ["timeout"]


def test_a_streamed_pipeline_timeout_ends_its_stream_and_frees_the_final_stage(smollm_dir, executor):
    router = _router(smollm_dir, executor)
    outcomes: list[str] = []
    router.on_pipeline = lambda name, outcome: outcomes.append(outcome.kind)
    short = {"max_tokens": 2, "temperature": 0}
    spec = PipelineSpec(
        "tail",
        (
            StageSpec("draft", "chat", "small", messages=(Message("user", "{{ input }}"),), sampling=short),
            _chat_stage("final", "merge", after=("draft",)),
        ),
    )

    async def main():
        await router.start()
        await router.add_pipeline(spec)
        stream = await router.open_pipeline("tail", QUESTION, timeout=2.0)
        steps = 0
        with pytest.raises(errors.RequestTimeoutError):
            async for _ in stream:
                steps += 1
        freed = _freed(router, ("small", "merge"))
        await router.shutdown()
        return steps, freed

    steps, freed = asyncio.run(main())
    assert steps > 0  # it streamed, then timed out
    assert freed == {"small": (0, 0, 0), "merge": (0, 0, 0)}
    assert outcomes == ["timeout"]


@pytest.mark.parametrize("streamed", [False, True])
def test_a_chat_timeout_aborts_its_engine_request(smollm_dir, executor, streamed):
    router = _router(smollm_dir, executor, names=("small",))
    timed_out: list[str] = []
    router.on_timeout = timed_out.append

    async def main():
        await router.start()
        steps = 0
        with pytest.raises(errors.RequestTimeoutError) as info:
            if streamed:
                async for _ in await router.open_chat("small", QUESTION, timeout=1.0, **ENDLESS):
                    steps += 1
            else:
                await router.chat("small", QUESTION, timeout=1.0, **ENDLESS)
        freed = _freed(router, ("small",))
        after = (await router.chat("small", QUESTION, max_tokens=2)).text  # it serves on
        await router.shutdown()
        return info.value, steps, freed, after

    error, steps, freed, after = asyncio.run(main())
    assert (error.name, error.seconds) == ("small", 1.0)
    assert freed == {"small": (0, 0, 0)} and timed_out == ["small"] and after
    assert (steps > 0) is streamed


def test_the_server_default_timeout_applies_and_a_bad_timeout_is_refused(smollm_dir, executor):
    router = _router(smollm_dir, executor, names=("small",))
    router.request_timeout_s = 0.5

    async def main():
        await router.start()
        with pytest.raises(errors.RequestTimeoutError) as default:
            await router.complete("small", "Once upon a time", **ENDLESS)
        with pytest.raises(errors.InvalidParameterError) as bad:
            await router.complete("small", "Once upon a time", timeout=0, **ENDLESS)
        longer = await router.complete("small", "Once upon a time", timeout=60, max_tokens=4)
        await router.shutdown()
        return default.value, bad.value, longer

    default, bad, longer = asyncio.run(main())
    assert default.seconds == 0.5 and bad.param == "timeout" and longer.choices[0].finish_reason == "length"


def test_a_failing_stage_aborts_the_engine_requests_of_the_stages_beside_it(smollm_dir, executor):
    router = _router(smollm_dir, executor)
    names = ("small", "merge")
    spec = PipelineSpec(
        "split",
        (
            _chat_stage("long", "small", fan_out=2),
            _chat_stage("broken", "merge"),
            _chat_stage("final", "merge", after=("long", "broken")),
        ),
        prewarm=False,
    )
    merge = router.pool.get("merge")

    async def fail_once_long_runs(*args, **kwargs):
        """The broken stage's call fails once the long stage is generating."""
        while not all(r.first_token_time for r in _engine(router, "small").requests.values()) or not (
            _engine(router, "small").requests
        ):
            await asyncio.sleep(0.005)
        raise errors.GenerationFailedError("the broken stage broke")
        yield  # an async generator, as the real one

    async def main():
        await router.start()
        await router.add_pipeline(spec)
        original, merge.generate = merge.generate, fail_once_long_runs
        with pytest.raises(errors.PipelineStageError) as info:
            await router.run_pipeline("split", QUESTION)
        merge.generate = original
        freed = _freed(router, names)
        await router.shutdown()
        return info.value, freed

    error, freed = asyncio.run(main())
    assert error.stage == "broken" and isinstance(error.cause, errors.GenerationFailedError)
    assert freed == {"small": (0, 0, 0), "merge": (0, 0, 0)}
