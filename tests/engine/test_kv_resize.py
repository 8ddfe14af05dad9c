"""LLMEngine.resize_kv on a tiny random model (float32): growing and shrinking the KV block pool
in the middle of generation keeps greedy outputs identical and leaks no block."""

from __future__ import annotations

import pytest

from swiftserve import EngineConfig, SamplingParams
from swiftserve.engine.llm_engine import LLMEngine

from .tiny_chat import BLOCK_BYTES, make_tiny_chat

CONFIG = dict(max_model_len=128, kv_cache_memory=64 * BLOCK_BYTES, dtype="float32")
GREEDY = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
PROMPTS = [[5 + i, 17, 300 + 7 * i, 4000 + i, 12, 99, 1000 + 3 * i, 8, 77 + i] for i in range(6)]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, smollm_dir):
    return make_tiny_chat(tmp_path_factory.mktemp("tiny") / "chat", smollm_dir)


def _engine(tiny_dir) -> LLMEngine:
    return LLMEngine(EngineConfig(model=str(tiny_dir), **CONFIG))


def _generate(engine: LLMEngine, resizes: dict[int, int]) -> dict[str, list[int]]:
    """Greedy outputs of every prompt; resizes maps a step number to a resize_kv before it."""
    for i, prompt in enumerate(PROMPTS):
        engine.add_request(str(i), prompt, GREEDY)
    done, step = {}, 0
    while engine.has_unfinished():
        if step in resizes:
            engine.resize_kv(resizes[step])
        for output in engine.step():
            if output.finished:
                done[output.request_id] = output.outputs[0].token_ids
        engine.scheduler.check_integrity()
        step += 1
    return done


def test_a_fresh_engine_uses_its_whole_maximum_and_stays_within_floor_and_maximum(tiny_dir) -> None:
    engine = _engine(tiny_dir)
    usage = engine.kv_usage()
    assert (usage.num_blocks, usage.num_max_blocks, usage.num_floor_blocks) == (64, 64, 8)
    assert usage.commits_on_use and not usage.is_waiting_for_blocks
    assert engine.resize_kv(1) == 8  # never below one max_model_len sequence
    assert engine.resize_kv(1000) == 64  # never past the reserved maximum
    assert engine.stats().num_total_blocks == 64


def test_resizes_during_generation_keep_greedy_outputs_and_leak_nothing(tiny_dir) -> None:
    want = _generate(_engine(tiny_dir), {})
    engine = _engine(tiny_dir)
    engine.resize_kv(8)  # 6 sequences of 49 tokens need 24 blocks: preemptions at first
    starved = []
    engine.step = _recording(engine, starved)
    # grow at step 3, shrink while sequences hold tail blocks at step 12, grow again at step 30
    got = _generate(engine, {3: 20, 12: 10, 30: 40})
    assert got == want
    assert any(starved) and engine.scheduler.num_preemptions > 0  # the small pool was really short
    stats = engine.stats()
    assert stats.num_free_blocks == stats.num_total_blocks == 40 and stats.num_used_blocks == 0
    assert engine.resize_kv(8) == 8  # nothing in use: the shrink completes at once
    engine.scheduler.check_integrity()


def test_a_shrink_under_load_waits_for_the_tail_and_never_exceeds_the_asked_size(tiny_dir) -> None:
    engine = _engine(tiny_dir)
    for i, prompt in enumerate(PROMPTS):
        engine.add_request(str(i), prompt, GREEDY)
    for _ in range(20):  # 6 sequences of 29 tokens: two blocks each, ids 0..11
        engine.step()
    held = {b for seq in engine.scheduler.running for b in seq.block_ids}
    assert held == set(range(12))
    assert engine.resize_kv(8) == 12  # backed up to the last block in use
    usage = engine.kv_usage()
    assert usage.num_blocks == 8 and usage.num_backed_blocks == 12
    while engine.has_unfinished():
        engine.step()
        assert all(b < 8 for seq in engine.scheduler.running for b in seq.block_ids if b not in held)
    assert engine.resize_kv(8) == 8
    engine.scheduler.check_integrity()


def _recording(engine: LLMEngine, starved: list[bool]):
    step = engine.step

    def recorded():
        outputs = step()
        starved.append(engine.kv_usage().is_waiting_for_blocks)
        return outputs

    return recorded
