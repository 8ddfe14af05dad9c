"""Pipelines on real models behind one Router (MiniLM retrieves, SmolLM2 fans out and merges):
stage outputs equal the same calls made one by one, usage and timings add up, the final stage
streams, pre-warming starts every load on arrival (and without it each load waits for its stage),
and a failing stage fails the request cleanly with every lease released."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from swiftserve.router import errors
from swiftserve.router.model_pool import ModelPool
from swiftserve.router.pipeline_spec import Message, PipelineError, PipelineSpec, StageSpec
from swiftserve.router.router import Router
from swiftserve.scheduler.residency_types import State

from swiftserve.config import EngineConfig
from swiftserve.engine.chat_model import LocalChatModel
from swiftserve.engine.embedding_model import LocalEmbeddingModel
from swiftserve.structured_outputs import StructuredOutputs

pytestmark = pytest.mark.slow

FACTS = [
    "Paris is the capital of France.",
    "The Nile is a river in Africa.",
    "Python is a programming language.",
    "Mount Everest is the highest mountain on Earth.",
    "The Moon orbits the Earth.",
]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"max_tokens": 10, "temperature": 0, "ignore_eos": True}
DRAFT = "Facts: {{ stages.context }}\nQuestion: {{ input }} Answer #{{ i }}:"
MERGE = "Merge these answers into one: {{ stages.drafts }}"
CHAT = dict(max_model_len=512, kv_cache_memory=16 << 20)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "facts.jsonl"
    path.write_text("\n".join(json.dumps({"text": fact}) for fact in FACTS))
    return path


def rag(corpus, prewarm: bool = True, merge_content: str = MERGE) -> PipelineSpec:
    return PipelineSpec(
        "rag",
        (
            StageSpec("context", "retrieve", "embed", corpus=str(corpus), top_k=2),
            StageSpec(
                "drafts", "chat", "small", ("context",), (Message("user", DRAFT),), fan_out=3, sampling=GREEDY
            ),
            StageSpec(
                "final", "chat", "merge", ("drafts",), (Message("user", merge_content),), sampling=GREEDY
            ),
        ),
        prewarm=prewarm,
    )


@pytest.fixture
def make_router(executor, smollm_dir, minilm_dir):
    """A Router with embed (MiniLM), small and merge (SmolLM2), all on demand."""

    def make() -> Router:
        router = Router(ModelPool(4 << 30))
        embed = LocalEmbeddingModel("embed", EngineConfig(model=str(minilm_dir)), executor)
        router.add(embed, "on-demand", 600.0)
        for name in ("small", "merge"):
            chat = LocalChatModel(name, EngineConfig(model=str(smollm_dir), **CHAT), executor)
            router.add(chat, "on-demand", 600.0)
        return router

    return make


async def _all_cold(router: Router) -> None:
    for name in router.names():
        await router.unload(name)
        await router.unload(name)  # a parked model's weights too
    assert {router.pool.state(n) for n in router.names()} == {State.COLD}


def _holds(router: Router) -> int:
    return sum(router.pool.ledger._get(n).holds for n in router.names())


def test_stage_outputs_usage_and_timings_equal_the_calls_made_one_by_one(make_router, corpus):
    router = make_router()

    async def main():
        await router.start()
        await router.add_pipeline(rag(corpus))
        result = await router.run_pipeline("rag", QUESTION)
        # The same calls, one by one.
        vectors = (await router.embed("embed", [*FACTS, QUESTION[0]["content"]])).embeddings
        scores = (
            vectors[:-1] @ vectors[-1] / np.linalg.norm(vectors[:-1], axis=1) / np.linalg.norm(vectors[-1])
        )
        context = [FACTS[i] for i in np.argsort(-scores)[:2]]
        facts = "\n\n".join(context)
        drafts = []
        for i in range(3):
            content = f"Facts: {facts}\nQuestion: {QUESTION[0]['content']} Answer #{i}:"
            drafts.append(await router.chat("small", [{"role": "user", "content": content}], **GREEDY))
        merged = "Merge these answers into one: " + "\n\n".join(d.text for d in drafts)
        final = await router.chat("merge", [{"role": "user", "content": merged}], **GREEDY)
        await router.shutdown()
        return result, context, drafts, final

    result, context, drafts, final = asyncio.run(main())
    by_id = {stage.id: stage for stage in result.stages}
    assert context[0] == FACTS[0]
    assert list(by_id["context"].output) == context
    assert list(by_id["drafts"].output) == [d.text for d in drafts]
    assert by_id["final"].output == final.text == result.final.choices[0].text
    assert by_id["drafts"].usage.completion_tokens == 30 and by_id["final"].usage.completion_tokens == 10
    assert by_id["drafts"].usage.prompt_tokens == sum(d.usage.prompt_tokens for d in drafts)
    assert result.usage.total_tokens == sum(s.usage.total_tokens for s in result.stages)
    for stage in result.stages:
        t = stage.timing
        assert 0 <= t.start_s <= t.end_s <= result.latency_s and t.cold_wait_s >= 0 and t.run_s > 0
    assert by_id["drafts"].timing.start_s >= by_id["context"].timing.end_s
    assert by_id["final"].timing.start_s >= by_id["drafts"].timing.end_s
    assert by_id["context"].timing.first_token_s is None and by_id["final"].timing.first_token_s > 0


def test_the_final_stage_streams_and_a_pipeline_answers_as_a_chat_model(make_router, corpus):
    router = make_router()

    async def main():
        await router.start()
        await router.add_pipeline(rag(corpus))
        whole = await router.chat("rag", QUESTION)
        stream = await router.open_pipeline("rag", QUESTION)
        text = "".join([delta.text async for step in stream for delta in step.deltas])
        streamed = stream.result()
        holds = _holds(router)
        await router.shutdown()
        return whole, text, streamed, holds

    whole, text, streamed, holds = asyncio.run(main())
    assert whole.model == "rag" and text == whole.text == streamed.output
    assert whole.usage == streamed.usage and whole.usage.completion_tokens == 40
    assert holds == 0


async def _states_after_arrival(router: Router, prewarm: bool, corpus) -> dict[str, State]:
    """The models' states once the first stage's model is loading (the pipeline just arrived)."""
    request = asyncio.ensure_future(router.run_pipeline("rag" if prewarm else "rag-cold", QUESTION))
    for _ in range(2000):
        if router.pool.state("embed") is not State.COLD:
            break
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.02)  # a few milliseconds for the pre-warm to reach every model
    states = {name: router.pool.state(name) for name in ("embed", "small", "merge")}
    result = await request
    return states, result


def test_prewarm_starts_every_load_on_arrival_and_without_it_each_waits_for_its_stage(make_router, corpus):
    router = make_router()

    async def main():
        await router.start()
        await router.add_pipeline(rag(corpus))
        cold = rag(corpus, prewarm=False)
        await router.add_pipeline(PipelineSpec("rag-cold", cold.stages, prewarm=False))
        await _all_cold(router)
        warm_states, warm = await _states_after_arrival(router, True, corpus)
        await _all_cold(router)
        cold_states, cold_result = await _states_after_arrival(router, False, corpus)
        await router.shutdown()
        return warm_states, warm, cold_states, cold_result

    warm_states, warm, cold_states, cold_result = asyncio.run(main())
    loading = {State.LOADING, State.RESIDENT}
    assert set(warm_states.values()) <= loading, warm_states
    assert [s.timing.load_started_by for s in warm.stages] == ["prewarm"] * 3
    assert cold_states["small"] is State.COLD and cold_states["merge"] is State.COLD
    assert [s.timing.load_started_by for s in cold_result.stages] == ["stage"] * 3
    assert all(s.timing.cold_wait_s > 0 for s in cold_result.stages)


def test_a_failing_stage_fails_the_request_and_releases_everything(make_router, corpus):
    router = make_router()

    async def broken_load():
        raise OSError("disk on fire")

    async def main():
        await router.start()
        await router.add_pipeline(rag(corpus))
        bad = rag(corpus, merge_content="{{ messages[3].content }}")
        await router.add_pipeline(PipelineSpec("bad-template", bad.stages))
        with pytest.raises(errors.PipelineStageError) as template:
            await router.run_pipeline("bad-template", QUESTION)
        merge = router.pool.get("merge")
        await router.unload("merge")
        await router.unload("merge")
        original, merge.load = merge.load, broken_load
        with pytest.raises(errors.PipelineStageError) as load:
            await router.run_pipeline("rag", QUESTION)
        holds = _holds(router)
        merge.load = original
        again = await router.run_pipeline("rag", QUESTION)
        await router.shutdown()
        return template.value, load.value, holds, again

    template, load, holds, again = asyncio.run(main())
    assert template.stage == "final" and isinstance(template.cause, errors.InvalidParameterError)
    assert load.stage == "final" and isinstance(load.cause, errors.ModelLoadError)
    assert "stage 'final'" in str(load) and "disk on fire" in str(load)
    assert holds == 0
    assert again.output


def test_a_pipeline_over_a_missing_or_wrong_kind_model_is_refused_naming_the_stage(make_router, corpus):
    router = make_router()
    wrong = PipelineSpec("p", (StageSpec("look", "retrieve", "small", corpus=str(corpus)),))
    missing = PipelineSpec("q", (StageSpec("ask", "chat", "nope", messages=(Message("user", "x"),)),))

    async def main():
        found = []
        for spec in (wrong, missing, PipelineSpec("small", missing.stages)):
            with pytest.raises(PipelineError) as info:
                await router.add_pipeline(spec)
            found.append(str(info.value))
        return found

    found = asyncio.run(main())
    assert found[0].startswith("pipelines[p].stages[look]: model:") and "needs an embedding model" in found[0]
    assert found[1].startswith("pipelines[q].stages[ask]: model:") and "'nope' does not exist" in found[1]
    assert "a model or another pipeline is served under this name" in found[2]


def test_a_json_stage_hands_its_parsed_reply_to_the_next_stage(make_router):
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (the `test` extra) validates the reply")
    pytest.importorskip("llguidance", reason="llguidance (the `structured` extra) constrains the reply")
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 16}, "sure": {"type": "boolean"}},
        "required": ["city", "sure"],
        "additionalProperties": False,
    }
    constraint = StructuredOutputs(json=schema)
    extract = StageSpec(
        "extract", "chat", "small", messages=(Message("user", "Which city? {{ input }}"),),
        sampling={"max_tokens": 40, "temperature": 0}, structured_outputs=constraint,
    )  # fmt: skip
    answer = "City: {{ stages.extract.city }} (sure: {{ stages.extract.sure }}); all: {{ stages.extract }}"
    final = StageSpec("final", "chat", "merge", ("extract",), (Message("user", answer),), sampling=GREEDY)
    router = make_router()

    async def main():
        await router.start()
        await router.add_pipeline(PipelineSpec("extract", (extract, final)))
        result = await router.run_pipeline("extract", QUESTION)
        ask = [{"role": "user", "content": f"Which city? {QUESTION[0]['content']}"}]
        one = await router.chat("small", ask, max_tokens=40, temperature=0, structured_outputs=constraint)
        value = json.loads(one.text)
        content = f"City: {value['city']} (sure: {value['sure']}); all: {json.dumps(value)}"
        direct = await router.chat("merge", [{"role": "user", "content": content}], **GREEDY)
        await router.shutdown()
        return result, one, direct

    result, one, direct = asyncio.run(main())
    by_id = {stage.id: stage for stage in result.stages}
    parsed = by_id["extract"].output
    jsonschema.validate(parsed, schema)
    assert parsed == json.loads(one.text)  # the same reply as the direct constrained call
    assert by_id["final"].output == direct.text
