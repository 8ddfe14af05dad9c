"""One RNG per engine: unseeded random sampling depends on EngineConfig.seed only."""

from __future__ import annotations

import torch

from swiftserve import LLM, SamplingParams

PROMPTS = ["Once upon a time", "The sea is"]
UNSEEDED = SamplingParams(temperature=1.0, max_tokens=12, ignore_eos=True)


def _sample(llm: LLM) -> list[list[int]]:
    return [out.outputs[0].token_ids for out in llm.generate(PROMPTS, UNSEEDED)]


def test_same_engine_seed_same_unseeded_tokens_whatever_the_global_seed(smollm_dir) -> None:
    config = dict(max_model_len=256, kv_cache_memory=16 << 20, dtype="float32", seed=7)
    first, second = LLM(str(smollm_dir), **config), LLM(str(smollm_dir), **config)
    torch.manual_seed(1)
    a = _sample(first)
    torch.manual_seed(2)  # moves the global generator only: the engines' own ones are untouched
    torch.rand(1000)
    b = _sample(second)
    assert a == b
    other = LLM(str(smollm_dir), **{**config, "seed": 8})
    assert _sample(other) != a  # and the seed does matter


def test_unseeded_sampling_draws_fresh_entropy_on_every_load(smollm_dir) -> None:
    """Issue #24: with no EngineConfig.seed, each load (a new engine: a restart, a scale from zero)
    must not repeat the last one's "random" answers; a request's own seed still reproduces."""
    config = dict(max_model_len=256, kv_cache_memory=16 << 20, dtype="float32")
    first, second = LLM(str(smollm_dir), **config), LLM(str(smollm_dir), **config)
    assert _sample(first) != _sample(second)
    seeded = SamplingParams(temperature=1.0, max_tokens=12, ignore_eos=True, seed=11)
    assert [o.outputs[0].token_ids for o in first.generate(PROMPTS, seeded)] == [
        o.outputs[0].token_ids for o in second.generate(PROMPTS, seeded)
    ]
