"""The Python API on the real default model: validation, seeds, stops, logprobs, n, aborts, async."""

from __future__ import annotations

import asyncio
import math
import shutil

import pytest
from swiftserve.scheduler.config import SchedulerConfig

from swiftserve import LLM, AsyncEngine, EngineConfig, SamplingParams
from swiftserve.engine.errors import ContextLengthError, InvalidRequestError, QueueFullError

from .engine_checks import all_free

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llm(smollm_dir) -> LLM:
    return LLM(str(smollm_dir), max_model_len=512, kv_cache_memory=64 << 20)


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(temperature=-0.5), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(max_tokens=0), "max_tokens"),
        (dict(n=0), "n must"),
        (dict(logprobs=99), "logprobs"),
    ],
)
def test_bad_sampling_params_name_the_field(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_bad_prompts_are_rejected_and_nothing_leaks(llm: LLM) -> None:
    with pytest.raises(InvalidRequestError, match="prompt is empty") as info:
        llm.generate([""])
    assert info.value.param == "prompt"
    with pytest.raises(ValueError, match="prompt is empty"):
        llm.generate([[]])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        llm.generate([[1, 2, 10**9]])
    with pytest.raises(ContextLengthError, match="maximum context length is 512 tokens") as info:
        llm.generate([[5] * 600])
    assert (info.value.num_prompt_tokens, info.value.param) == (600, "prompt")
    with pytest.raises(
        ContextLengthError, match=r"needs 600 \(100 in the prompt, 500 for the completion\)"
    ) as info:
        llm.generate([[5] * 100], SamplingParams(max_tokens=500))
    assert info.value.param == "max_tokens"
    # a bad prompt among good ones: nothing runs, nothing leaks
    with pytest.raises(ValueError, match="prompt is empty"):
        llm.generate(["fine", ""])
    assert all_free(llm)
    assert llm.generate(["still serving"], SamplingParams(max_tokens=3))[0].outputs[0].token_ids


def test_unknown_model() -> None:
    with pytest.raises(ValueError, match="unknown model 'no-such-model'"):
        LLM("no-such-model")


def test_truncated_weights_name_the_file(smollm_dir, tmp_path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(smollm_dir, broken)
    weights = next(broken.glob("*.safetensors"))
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=weights.name):
        LLM(str(broken))


# -- sampling ------------------------------------------------------------------------------------
def test_seeded_sampling_is_reproducible_alone_and_in_a_batch(smollm_dir) -> None:
    # float32: in bfloat16 a different batch shape rounds matmuls differently, which can flip a
    # sampled token that sits on a boundary (the sampler itself draws per row, batch-independently).
    llm = LLM(str(smollm_dir), dtype="float32", max_model_len=512, kv_cache_memory=64 << 20)
    seeded = SamplingParams(temperature=1.0, top_p=0.9, seed=1234, max_tokens=24, ignore_eos=True)
    other = SamplingParams(temperature=1.2, max_tokens=30, ignore_eos=True)
    alone = llm.generate(["Tell me a story about a cat"], seeded)[0].outputs[0].token_ids
    again = llm.generate(["Tell me a story about a cat"], seeded)[0].outputs[0].token_ids
    batched = llm.generate(["Hello there", "Tell me a story about a cat", "1, 2, 3,"], [other, seeded, other])
    assert alone == again == batched[1].outputs[0].token_ids
    different = SamplingParams(temperature=1.0, top_p=0.9, seed=4321, max_tokens=24, ignore_eos=True)
    assert llm.generate(["Tell me a story about a cat"], different)[0].outputs[0].token_ids != alone


def test_n_completions_differ_and_are_indexed(llm: LLM) -> None:
    out = llm.generate(
        ["Write a word:"], SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=12, ignore_eos=True)
    )[0]
    assert [c.index for c in out.outputs] == [0, 1, 2]
    assert len({tuple(c.token_ids) for c in out.outputs}) > 1
    assert all_free(llm)


def test_stop_string_is_caught_and_not_emitted(llm: LLM) -> None:
    free = llm.generate(["Count: 1, 2, 3,"], SamplingParams(temperature=0, max_tokens=20, ignore_eos=True))[0]
    text = free.outputs[0].text
    stop = text[3:7]  # a piece of what greedy decoding writes, likely spanning tokens
    out = llm.generate(["Count: 1, 2, 3,"], SamplingParams(temperature=0, max_tokens=20, stop=[stop]))[0]
    assert out.outputs[0].finish_reason == "stop" and out.outputs[0].stop_reason == stop
    assert out.outputs[0].text == text[: text.index(stop)]
    kept = llm.generate(
        ["Count: 1, 2, 3,"],
        SamplingParams(temperature=0, max_tokens=20, stop=[stop], include_stop_str_in_output=True),
    )[0]
    assert kept.outputs[0].text == text[: text.index(stop) + len(stop)]


def test_stop_token_ids_and_max_tokens(llm: LLM) -> None:
    free = llm.generate(["Count: 1, 2, 3,"], SamplingParams(temperature=0, max_tokens=10, ignore_eos=True))[0]
    ids = free.outputs[0].token_ids
    assert free.outputs[0].finish_reason == "length" and len(ids) == 10
    out = llm.generate(
        ["Count: 1, 2, 3,"], SamplingParams(temperature=0, max_tokens=10, stop_token_ids=[ids[4]])
    )[0]
    assert out.outputs[0].token_ids == ids[: ids.index(ids[4]) + 1]
    assert out.outputs[0].stop_reason == ids[4]


def test_logprobs_are_consistent(llm: LLM) -> None:
    out = llm.generate(["The sky is"], SamplingParams(temperature=0, max_tokens=5, logprobs=5))[0].outputs[0]
    assert len(out.logprobs) == len(out.token_ids)
    for token_id, lp in zip(out.token_ids, out.logprobs, strict=True):
        assert lp.token_id == token_id
        assert len(lp.top) == 5
        assert lp.logprob == pytest.approx(lp.top[0][1])  # greedy picks a most likely token (ties: any)
        assert token_id in [t for t, v in lp.top if v == pytest.approx(lp.top[0][1])]
        assert all(a[1] >= b[1] for a, b in zip(lp.top, lp.top[1:], strict=False))
        assert sum(math.exp(v) for _, v in lp.top) <= 1.0 + 1e-4


def test_chat_uses_the_template(llm: LLM) -> None:
    out = llm.chat(
        [{"role": "user", "content": "What is the capital of France?"}],
        SamplingParams(temperature=0, max_tokens=20),
    )[0]
    assert "Paris" in out.outputs[0].text
    assert out.outputs[0].finish_reason == "stop"


# -- async ---------------------------------------------------------------------------------------
def _async_engine(smollm_dir, **scheduler) -> AsyncEngine:
    return AsyncEngine(
        EngineConfig(
            model=str(smollm_dir),
            max_model_len=512,
            kv_cache_memory=32 << 20,
            scheduler=SchedulerConfig(**scheduler),
        )
    )


def test_async_streams_cancels_and_isolates_bad_requests(smollm_dir, llm: LLM) -> None:
    async def main() -> None:
        engine = _async_engine(smollm_dir, max_num_waiting=64)
        await engine.start()
        greedy = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)

        async def collect(prompt):
            outs = [o async for o in engine.generate(prompt, greedy)]
            return outs

        async def cancel_midway():
            async for out in engine.generate(
                "Write a long essay about the sea.", SamplingParams(max_tokens=200, ignore_eos=True)
            ):
                if len(out.outputs[0].token_ids) >= 3:
                    break  # closing the generator aborts the request

        async def bad():
            with pytest.raises(ValueError, match="prompt is empty"):
                async for _ in engine.generate("", greedy):
                    pass

        good, _, _ = await asyncio.gather(collect("The capital of France is"), cancel_midway(), bad())
        assert good[-1].finished and len(good[-1].outputs[0].token_ids) == 16
        assert [len(o.outputs[0].token_ids) for o in good] == sorted(
            len(o.outputs[0].token_ids) for o in good
        )
        want = llm.generate(["The capital of France is"], greedy)[0].outputs[0].token_ids
        assert good[-1].outputs[0].token_ids == want
        for _ in range(100):  # the abort is applied by the worker thread
            if engine.stats().num_running == 0:
                break
            await asyncio.sleep(0.02)
        stats = engine.stats()
        assert stats.num_free_blocks == stats.num_total_blocks
        await engine.shutdown()

    asyncio.run(main())


def test_abort_from_outside_ends_the_stream_with_an_abort_output(smollm_dir) -> None:
    async def main() -> None:
        engine = _async_engine(smollm_dir)
        await engine.start()
        outs = []
        async for out in engine.generate(
            "Write a long essay about the sea.", SamplingParams(max_tokens=200, ignore_eos=True), "essay"
        ):
            outs.append(out)
            if len(out.outputs[0].token_ids) == 3:
                engine.abort("essay")  # not the reader closing: someone else stops it
        last = outs[-1]
        assert last.finished and last.outputs[0].finish_reason == "abort"
        assert 3 <= len(last.outputs[0].token_ids) < 200
        stats = engine.stats()
        assert stats.num_running == 0 and stats.num_free_blocks == stats.num_total_blocks
        await engine.shutdown()

    asyncio.run(asyncio.wait_for(main(), timeout=120))


def test_async_queue_bound(smollm_dir) -> None:
    async def main() -> None:
        engine = _async_engine(smollm_dir, max_num_waiting=1, max_num_seqs=1)
        await engine.start()
        params = SamplingParams(max_tokens=8, ignore_eos=True)

        async def run(prompt):
            return [o async for o in engine.generate(prompt, params)]

        results = await asyncio.gather(*(run(f"prompt {i}") for i in range(6)), return_exceptions=True)
        assert any(isinstance(r, QueueFullError) for r in results)
        assert any(isinstance(r, list) and r[-1].finished for r in results)
        await engine.shutdown()

    asyncio.run(main())


def test_a_request_whose_sampling_fails_fails_alone(smollm_dir, monkeypatch) -> None:
    """One row's sampling raising (as a 1e-40 temperature once did) ends that request with
    RequestFailedError and frees its blocks; its neighbours in the same steps finish normally."""
    from swiftserve.engine.errors import RequestFailedError
    from swiftserve.model_runner import sampler as sampler_module

    real = sampler_module.sample_rows

    def faulty(logits, temperature, *args):
        if bool((temperature == 0.123).any()):
            raise IndexError("index 192 is out of bounds for dimension 1 with size 192")
        return real(logits, temperature, *args)

    monkeypatch.setattr(sampler_module, "sample_rows", faulty)
    greedy = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    seeded = SamplingParams(max_tokens=12, temperature=0.8, seed=3, ignore_eos=True)
    bad = SamplingParams(max_tokens=12, temperature=0.123, ignore_eos=True)
    # float32: batched and alone then round alike (in bf16 a batch may flip a greedy near-tie)
    config = dict(model=str(smollm_dir), max_model_len=512, kv_cache_memory=32 << 20, dtype="float32")
    alone = LLM(**config, enable_prefix_caching=False)
    want = [alone.generate([p], s)[0].outputs[0].token_ids for p, s in (("Hello", greedy), ("Once", seeded))]

    async def main() -> None:
        scheduler = SchedulerConfig(enable_prefix_caching=False)
        engine = AsyncEngine(EngineConfig(**config, scheduler=scheduler))
        await engine.start()

        async def run(prompt, params):
            return [o async for o in engine.generate(prompt, params)]

        results = await asyncio.gather(
            run("Hello", greedy), run("Bad", bad), run("Once", seeded), return_exceptions=True
        )
        assert isinstance(results[1], RequestFailedError) and "out of bounds" in str(results[1])
        assert [r[-1].outputs[0].token_ids for r in (results[0], results[2])] == want
        stats = engine.stats()
        assert stats.num_free_blocks == stats.num_total_blocks and not engine.engine.requests
        await engine.shutdown()

    asyncio.run(main())
