"""End to end on the real default model (SmolLM2-135M-Instruct), float32 on CPU: swiftserve's
greedy tokens must equal Hugging Face transformers' on the same weights, alone, batched, with
chunked prefill, under preemption and with prefix-cache hits."""

from __future__ import annotations

import pytest
import torch
import transformers

from swiftserve import LLM, SamplingParams

pytestmark = pytest.mark.slow

NUM_NEW = 64
PROMPTS = [
    "The capital of France is",
    'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
    "Once upon a time, in a small village by the sea, there lived an old fisherman who " * 3,
    "Q: What is 17 times 23?\nA:",
]
# transformers masks eos until min_new_tokens; min_tokens does the same here.
GREEDY = SamplingParams(temperature=0.0, max_tokens=NUM_NEW, min_tokens=NUM_NEW)


@pytest.fixture(scope="module")
def hf(smollm_dir):
    tok = transformers.AutoTokenizer.from_pretrained(smollm_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(smollm_dir, torch_dtype=torch.float32).eval()
    return tok, model


@pytest.fixture(scope="module")
def prompt_ids(hf):
    tok, _ = hf
    return [tok(p)["input_ids"] for p in PROMPTS]


@pytest.fixture(scope="module")
def expected(hf, prompt_ids, hf_greedy):
    return hf_greedy(hf[1], prompt_ids, NUM_NEW)


def _llm(smollm_dir, **kwargs) -> LLM:
    return LLM(str(smollm_dir), dtype="float32", device="cpu", **kwargs)


def _check(llm: LLM, prompt_ids, expected) -> None:
    outputs = llm.generate(prompt_ids, GREEDY)
    for out, want in zip(outputs, expected, strict=True):
        assert out.outputs[0].token_ids == want
        assert out.outputs[0].finish_reason == "length"
    stats = llm.engine.stats()
    assert stats.num_free_blocks == stats.num_total_blocks, "blocks leaked"
    llm.engine.scheduler.check_integrity()


def test_each_prompt_alone(smollm_dir, prompt_ids, expected) -> None:
    llm = _llm(smollm_dir)
    for ids, want in zip(prompt_ids, expected, strict=True):
        _check(llm, [ids], [want])


def test_one_batch_of_mixed_lengths(smollm_dir, prompt_ids, expected) -> None:
    _check(_llm(smollm_dir), prompt_ids, expected)


def test_chunked_prefill(smollm_dir, prompt_ids, expected) -> None:
    # 16 tokens per step: every prompt but the first is prefilled in several chunks, mixed with decodes
    _check(_llm(smollm_dir, max_num_batched_tokens=16), prompt_ids, expected)


def test_preemption(smollm_dir, prompt_ids, expected) -> None:
    # 16 blocks of 16 tokens cannot hold all four sequences at full length: some are preempted and recomputed
    from swiftserve.loader import load_config
    from swiftserve.model_runner.kv_cache import bytes_per_block
    from swiftserve.models.llama_config import LlamaConfig

    per_block = bytes_per_block(LlamaConfig.from_hf(load_config(smollm_dir)), 16, torch.float32)
    llm = _llm(smollm_dir, kv_cache_memory=16 * per_block, max_model_len=256)
    _check(llm, prompt_ids, expected)
    assert llm.engine.stats().num_preemptions > 0


def test_prefix_cache_hits(smollm_dir, prompt_ids, expected) -> None:
    llm = _llm(smollm_dir)
    _check(llm, [prompt_ids[2]], [expected[2]])
    again = llm.generate([prompt_ids[2]], GREEDY)[0]
    assert again.num_cached_tokens >= 16 * ((len(prompt_ids[2]) - 1) // 16)
    assert again.outputs[0].token_ids == expected[2]


def test_first_step_logprobs_close(smollm_dir, hf, prompt_ids) -> None:
    """Tolerance: 1e-3 absolute on the top-20 log-probabilities (float32, different kernels)."""
    _, model = hf
    llm = _llm(smollm_dir)
    params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=20)
    for ids, out in zip(prompt_ids, llm.generate(prompt_ids, params), strict=True):
        with torch.no_grad():
            want = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), dim=-1)
        top = out.outputs[0].logprobs[0].top
        assert len(top) == 20
        got_ids = [t for t, _ in top]
        assert got_ids[0] == int(want.argmax())
        torch.testing.assert_close(torch.tensor([lp for _, lp in top]), want[got_ids], atol=1e-3, rtol=0)
