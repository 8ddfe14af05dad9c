"""SamplingParams.prompt_logprobs on the real default model (SmolLM2-135M-Instruct), float32 on
CPU, against Hugging Face transformers' log_softmax over the whole prompt: alone, with chunked
prefill next to ordinary requests, after a prefix-cache hit and under preemption.

Tolerance: 1e-4 absolute on logprobs (measured max |diff| ~1e-5: float32, different kernels).
Top-k ids must match transformers' wherever the k-th and (k+1)-th logprobs are not near-tied.
"""

from __future__ import annotations

import pytest
import torch
import transformers

from swiftserve import LLM, SamplingParams

pytestmark = pytest.mark.slow

K = 5
ATOL = 1e-4
PROMPTS = [
    "The capital of France is",
    'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
    "Once upon a time, in a small village by the sea, there lived an old fisherman who " * 3,
]
SCORE = SamplingParams(temperature=0.0, max_tokens=4, prompt_logprobs=K)
GREEDY = SamplingParams(temperature=0.0, max_tokens=16, min_tokens=16)


@pytest.fixture(scope="module")
def hf(smollm_dir):
    tok = transformers.AutoTokenizer.from_pretrained(smollm_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(smollm_dir, dtype=torch.float32).eval()
    return tok, model


@pytest.fixture(scope="module")
def prompt_ids(hf):
    tok, _ = hf
    return [tok(p)["input_ids"] for p in PROMPTS]


@pytest.fixture(scope="module")
def reference(hf, prompt_ids):
    """transformers' logprobs [P, vocab] for each prompt (row p scores token p + 1)."""
    _, model = hf
    with torch.no_grad():
        return [torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1) for ids in prompt_ids]


def _llm(smollm_dir, **kwargs) -> LLM:
    return LLM(str(smollm_dir), dtype="float32", device="cpu", **kwargs)


def _check_prompt_logprobs(out, ids: list[int], want: torch.Tensor, k: int = K) -> None:
    entries = out.prompt_logprobs
    assert entries is not None and len(entries) == len(ids)
    assert entries[0] is None
    assert [e.token_id for e in entries[1:]] == ids[1:]
    got = torch.tensor([e.logprob for e in entries[1:]])
    expected = want[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    for p, entry in enumerate(entries[1:]):
        row = want[p]
        assert entry.rank == int((row > row[ids[p + 1]] + ATOL).sum()) + 1 or _near_tie(row, entry.rank)
        assert len(entry.top) == k
        top_ids = [t for t, _ in entry.top]
        torch.testing.assert_close(torch.tensor([lp for _, lp in entry.top]), row[top_ids], atol=ATOL, rtol=0)
        want_values = row.topk(k + 1).values
        for j, token_id in enumerate(top_ids):  # the j-th best, up to near-ties
            assert abs(float(row[token_id]) - float(want_values[j])) < ATOL


def _near_tie(row: torch.Tensor, rank: int) -> bool:
    sorted_row = row.sort(descending=True).values
    return abs(float(sorted_row[rank - 1]) - float(sorted_row[rank])) < ATOL


def _check_no_leak(llm: LLM) -> None:
    stats = llm.engine.stats()
    assert stats.num_free_blocks == stats.num_total_blocks, "blocks leaked"
    llm.engine.scheduler.check_integrity()


def test_each_prompt_alone(smollm_dir, prompt_ids, reference, monkeypatch) -> None:
    from swiftserve.model_runner import prompt_logprobs

    monkeypatch.setattr(prompt_logprobs, "ROWS_PER_SLAB", 7)  # several slabs of logits per chunk
    llm = _llm(smollm_dir)
    for ids, want in zip(prompt_ids, reference, strict=True):
        (out,) = llm.generate([ids], SCORE)
        _check_prompt_logprobs(out, ids, want)
        assert out.outputs[0].token_ids[0] == int(want[-1].argmax())
    _check_no_leak(llm)


def test_chunked_prefill_next_to_ordinary_requests(smollm_dir, prompt_ids, reference) -> None:
    """16 tokens a step: the long prompts are scored in several chunks mixed with decodes; the
    ordinary requests beside them produce the same tokens as alone and get no prompt logprobs."""
    alone = [out.outputs[0].token_ids for out in _llm(smollm_dir).generate(prompt_ids, GREEDY)]
    llm = _llm(smollm_dir, max_num_batched_tokens=16)
    outs = llm.generate(prompt_ids + prompt_ids, [GREEDY] * len(prompt_ids) + [SCORE] * len(prompt_ids))
    for i, ids in enumerate(prompt_ids):
        assert outs[i].outputs[0].token_ids == alone[i]
        assert outs[i].prompt_logprobs is None
        _check_prompt_logprobs(outs[len(prompt_ids) + i], ids, reference[i])
    _check_no_leak(llm)


def test_prefix_cache_hit_is_bypassed(smollm_dir, prompt_ids, reference) -> None:
    llm = _llm(smollm_dir)
    ids = prompt_ids[2]
    llm.generate([ids], GREEDY)
    assert llm.generate([ids], GREEDY)[0].num_cached_tokens > 0  # the prompt is cached
    out = llm.generate([ids], SCORE)[0]
    assert out.num_cached_tokens == 0
    _check_prompt_logprobs(out, ids, reference[2])
    _check_no_leak(llm)


def test_preemption(smollm_dir, prompt_ids, reference) -> None:
    from swiftserve.loader import load_config
    from swiftserve.model_runner.kv_cache import bytes_per_block
    from swiftserve.models.llama_config import LlamaConfig

    per_block = bytes_per_block(LlamaConfig.from_hf(load_config(smollm_dir)), 16, torch.float32)
    llm = _llm(smollm_dir, kv_cache_memory=12 * per_block, max_model_len=192, max_num_batched_tokens=32)
    params = SamplingParams(temperature=0.0, max_tokens=64, min_tokens=64, prompt_logprobs=K)
    outs = llm.generate(prompt_ids, params)
    assert llm.engine.stats().num_preemptions > 0
    for out, ids, want in zip(outs, prompt_ids, reference, strict=True):
        _check_prompt_logprobs(out, ids, want)
    _check_no_leak(llm)


def test_k0_n2_and_one_token_prompt(smollm_dir, prompt_ids, reference) -> None:
    llm = _llm(smollm_dir)
    params = SamplingParams(temperature=1.0, seed=0, n=2, max_tokens=2, prompt_logprobs=0)
    out = llm.generate([prompt_ids[0]], params)[0]
    assert len(out.outputs) == 2
    _check_prompt_logprobs(out, prompt_ids[0], reference[0], k=0)
    assert llm.generate([prompt_ids[0][:1]], SCORE)[0].prompt_logprobs == [None]
    _check_no_leak(llm)
