"""Constrained decoding on the real SmolLM2, through the Python API: every output validates against
its JSON schema (greedy and sampled), regexes and choices match, free rows in the same batch are
unchanged, and n, logprobs, stop strings, penalties, preemption and aborts keep working."""

from __future__ import annotations

import asyncio
import json
import re

import jsonschema
import pytest
import torch

from swiftserve import LLM, AsyncEngine, EngineConfig, SamplingParams
from swiftserve.engine.errors import GrammarError
from swiftserve.structured_outputs import StructuredOutputs

from .engine_checks import all_free

pytest.importorskip("llguidance")
pytestmark = pytest.mark.slow

SCHEMAS = {
    "object": {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    # Bounded integers: a sampled reply (temperature 1) then ends within max_tokens whatever it draws.
    "array": {
        "type": "array",
        "items": {"type": "integer", "minimum": -999999, "maximum": 999999},
        "minItems": 2,
        "maxItems": 4,
    },
    "enum": {
        "type": "object",
        "properties": {"color": {"enum": ["red", "green", "blue"]}},
        "required": ["color"],
        "additionalProperties": False,
    },
    "nested": {
        "type": "object",
        "properties": {
            "city": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 20},
                    "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3},
                },
                "required": ["name", "tags"],
                "additionalProperties": False,
            }
        },
        "required": ["city"],
        "additionalProperties": False,
    },
    "optional": {
        "type": "object",
        "properties": {"title": {"type": "string", "maxLength": 20}, "year": {"type": "integer"}},
        "required": ["title"],
        "additionalProperties": False,
    },
    "pattern": {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"}},
        "required": ["code"],
        "additionalProperties": False,
    },
    "bounded": {
        "type": "object",
        "properties": {
            "score": {"type": "number", "minimum": 0, "maximum": 10},
            "count": {"type": "integer", "minimum": 5, "maximum": 9},
        },
        "required": ["score", "count"],
        "additionalProperties": False,
    },
}
QUESTION = "Answer in JSON: describe something you like."


@pytest.fixture(scope="module")
def llm(smollm_dir) -> LLM:
    return LLM(str(smollm_dir), max_model_len=512, kv_cache_memory=64 << 20)


def _chat(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _json(schema: dict, **kwargs) -> SamplingParams:
    kwargs = {"temperature": 0, "max_tokens": 120, **kwargs}
    return SamplingParams(structured_outputs=StructuredOutputs(json=schema), **kwargs)


@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
def test_every_output_validates_against_its_schema(llm: LLM, sampled: bool) -> None:
    extra = {"temperature": 1.0, "seed": 7} if sampled else {}
    names = list(SCHEMAS)
    params = [_json(SCHEMAS[name], **extra) for name in names]
    outputs = llm.chat([_chat(QUESTION)] * len(names), params)
    for name, output in zip(names, outputs, strict=True):
        completion = output.outputs[0]
        assert completion.finish_reason == "stop", (name, completion.text)
        jsonschema.validate(json.loads(completion.text), SCHEMAS[name])
    assert all_free(llm)


def test_fast_forwarded_outputs_validate_too(smollm_dir) -> None:
    fast = LLM(str(smollm_dir), max_model_len=512, kv_cache_memory=64 << 20, grammar_fast_forward=True)
    names = list(SCHEMAS)
    outputs = fast.chat([_chat(QUESTION)] * len(names), [_json(SCHEMAS[name]) for name in names])
    for name, output in zip(names, outputs, strict=True):
        completion = output.outputs[0]
        assert completion.finish_reason == "stop", (name, completion.text)
        jsonschema.validate(json.loads(completion.text), SCHEMAS[name])
    assert fast.engine.num_forced_tokens > 0 and all_free(fast)
    fast.engine.close()


def test_json_object_regex_and_choice(llm: LLM) -> None:
    regex = r"[A-Z][a-z]{1,12} is [0-9]{1,2} years old\."
    specs = [
        StructuredOutputs(regex=regex),
        StructuredOutputs(choice=("yes", "no", "maybe")),
        StructuredOutputs(grammar='start: "The answer is " NUMBER\nNUMBER: /[0-9]{1,3}/'),
        StructuredOutputs(json_object=True),
    ]
    for seed in (None, 3):
        params = [
            SamplingParams(
                temperature=0 if seed is None else 0.9, seed=seed, max_tokens=80, structured_outputs=s
            )
            for s in specs
        ]
        outs = [o.outputs[0] for o in llm.chat([_chat("Tell me about a person.")] * len(specs), params)]
        assert re.fullmatch(regex, outs[0].text)
        assert outs[1].text in ("yes", "no", "maybe")
        assert re.fullmatch("The answer is [0-9]{1,3}", outs[2].text)
        assert all(o.finish_reason == "stop" for o in outs[:3])
        # Any JSON object is unbounded: sampled, a small model may run to max_tokens inside one.
        if outs[3].finish_reason == "stop" or seed is None:
            assert isinstance(json.loads(outs[3].text), dict)
        else:
            assert outs[3].text.startswith("{")


def test_free_rows_are_unchanged_next_to_constrained_ones(llm: LLM) -> None:
    free = SamplingParams(temperature=0, max_tokens=24)
    prompts = [_chat("What is the capital of France?"), _chat("Name three fruits.")]
    alone = [o.outputs[0].token_ids for o in llm.chat(prompts, free)]
    mixed_prompts = [prompts[0], _chat(QUESTION), prompts[1], _chat(QUESTION)]
    mixed_params = [free, _json(SCHEMAS["object"]), free, _json(SCHEMAS["enum"], temperature=0.7, seed=1)]
    mixed = llm.chat(mixed_prompts, mixed_params)
    assert [mixed[0].outputs[0].token_ids, mixed[2].outputs[0].token_ids] == alone
    jsonschema.validate(json.loads(mixed[1].outputs[0].text), SCHEMAS["object"])
    jsonschema.validate(json.loads(mixed[3].outputs[0].text), SCHEMAS["enum"])
    assert llm.engine.runner.mask_timings.num_constrained_rows > 0


def test_n_logprobs_penalties_and_stop_strings_on_constrained_rows(llm: LLM) -> None:
    schema = SCHEMAS["array"]
    params = _json(
        schema, n=2, temperature=0.8, seed=5, logprobs=2, repetition_penalty=1.3, presence_penalty=0.5
    )
    out = llm.chat([_chat("List some numbers as JSON.")], params)[0]
    for completion in out.outputs:
        jsonschema.validate(json.loads(completion.text), schema)
        assert len(completion.logprobs) == len(completion.token_ids)
        # logprobs are of the masked logits: the chosen token is always an allowed one
        assert all(math_finite(lp.logprob) for lp in completion.logprobs)
    # A stop string inside the constrained text ends it there, with "stop".
    stopped = llm.chat([_chat(QUESTION)], _json(SCHEMAS["object"], stop=['"age"']))[0].outputs[0]
    assert stopped.finish_reason == "stop" and stopped.text.startswith('{"name": ')
    assert '"age"' not in stopped.text
    assert all_free(llm)


def math_finite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))


def test_constrained_rows_survive_preemption(smollm_dir) -> None:
    from swiftserve.loader import load_config
    from swiftserve.model_runner.kv_cache import bytes_per_block
    from swiftserve.models.llama_config import LlamaConfig

    # 12 blocks of 16 tokens cannot hold four ~60-token sequences at once: some are preempted.
    per_block = bytes_per_block(LlamaConfig.from_hf(load_config(smollm_dir)), 16, torch.bfloat16)
    small = LLM(str(smollm_dir), max_model_len=192, kv_cache_memory=12 * per_block)
    params = [_json(SCHEMAS[name]) for name in ("object", "nested", "bounded", "pattern")]
    outs = small.chat([_chat(QUESTION)] * 4, params)
    assert small.engine.stats().num_preemptions > 0
    for out, name in zip(outs, ("object", "nested", "bounded", "pattern"), strict=True):
        jsonschema.validate(json.loads(out.outputs[0].text), SCHEMAS[name])
    assert all_free(small)


def test_bad_constraints_are_refused_and_nothing_leaks(llm: LLM) -> None:
    with pytest.raises(GrammarError, match="uniqueItems") as info:
        llm.chat([_chat("x")], _json({"type": "array", "uniqueItems": True}))
    assert info.value.param == "structured_outputs"
    with pytest.raises(GrammarError, match="matches nothing"):
        bad = StructuredOutputs(regex=r"a[^\x00-\x{10FFFF}]")
        llm.chat([_chat("x")], SamplingParams(structured_outputs=bad))
    assert all_free(llm)


def test_async_engine_compiles_off_the_loop_and_aborts_free_everything(smollm_dir) -> None:
    async def main() -> None:
        engine = AsyncEngine(EngineConfig(model=str(smollm_dir), max_model_len=512, kv_cache_memory=32 << 20))
        try:
            prompt = engine.apply_chat_template(_chat(QUESTION))

            async def run(params: SamplingParams) -> str:
                outs = [o async for o in engine.generate(prompt, params)]
                return outs[-1].outputs[0].text

            async def cancel_midway() -> None:
                async for out in engine.generate(prompt, _json(SCHEMAS["nested"])):
                    if len(out.outputs[0].token_ids) >= 3:
                        break

            async def bad() -> None:
                with pytest.raises(GrammarError, match="strng"):
                    await run(_json({"type": "strng"}))

            text, free, _, _ = await asyncio.gather(
                run(_json(SCHEMAS["object"])), run(SamplingParams(max_tokens=8)), cancel_midway(), bad()
            )
            jsonschema.validate(json.loads(text), SCHEMAS["object"])
            for _ in range(100):
                if engine.stats().num_running == 0:
                    break
                await asyncio.sleep(0.02)
            stats = engine.stats()
            assert stats.num_free_blocks == stats.num_total_blocks and not engine.engine.requests
        finally:
            await engine.shutdown()

    asyncio.run(asyncio.wait_for(main(), timeout=240))
