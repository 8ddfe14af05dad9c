"""The context length a chat model serves when none is configured (issue #24): the model's own
limit, as `--max-model-len`'s help says, bounded by what the KV cache can hold for one sequence.
A served model knows it while cold (it validates requests before loading) and its engine agrees."""

from __future__ import annotations

import pytest

from swiftserve import LLM, EngineConfig
from swiftserve.engine.chat_model import LocalChatModel

SMOLLM_MAX_POSITIONS = 8192  # SmolLM2-135M-Instruct's max_position_embeddings
# bfloat16 K and V of one token: 2 x 30 layers x 3 KV heads x 64 dims x 2 bytes.
SMOLLM_KV_BYTES_PER_TOKEN = 2 * 30 * 3 * 64 * 2


def test_without_a_setting_the_context_is_the_models_own(smollm_dir, executor) -> None:
    cold = LocalChatModel("chat", EngineConfig(model=str(smollm_dir)), executor)
    assert cold.max_model_len == SMOLLM_MAX_POSITIONS
    assert LLM(str(smollm_dir)).engine.max_model_len == SMOLLM_MAX_POSITIONS


@pytest.mark.parametrize("kv_cache_memory", [64 << 20, 100_000_000])
def test_a_small_kv_cache_bounds_the_default_to_one_sequence_of_whole_blocks(
    smollm_dir, executor, kv_cache_memory: int
) -> None:
    block_bytes = 16 * SMOLLM_KV_BYTES_PER_TOKEN
    expected = kv_cache_memory // block_bytes * 16
    assert expected < SMOLLM_MAX_POSITIONS
    config = EngineConfig(model=str(smollm_dir), kv_cache_memory=kv_cache_memory)
    cold = LocalChatModel("chat", config, executor)
    assert cold.max_model_len == expected
    assert cold.footprint().kv_floor_blocks * block_bytes <= kv_cache_memory
    assert LLM(str(smollm_dir), kv_cache_memory=kv_cache_memory).engine.max_model_len == expected


def test_a_configured_length_still_wins(smollm_dir, executor) -> None:
    config = EngineConfig(model=str(smollm_dir), max_model_len=300)
    assert LocalChatModel("chat", config, executor).max_model_len == 300
