"""Automatic snapshots through the engine config: the first engine of a model writes its
snapshot into the cache, the next one loads from it, and both answer the same greedy tokens."""

from __future__ import annotations

from pathlib import Path

from swiftserve import LLM, SamplingParams
from swiftserve.loader.snapshot_cache import cache_path

CONFIG = dict(max_model_len=256, kv_cache_memory=16 << 20, dtype="float32")
PROMPTS = ["The capital of France is", "List three colours:"]


def test_the_second_engine_loads_the_snapshot_the_first_one_wrote(smollm_dir, tmp_path):
    greedy = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    snapshot = cache_path(tmp_path, smollm_dir, "float32")
    first = LLM(str(smollm_dir), snapshot_cache=str(tmp_path), **CONFIG)
    assert snapshot.is_file()
    written = snapshot.stat().st_mtime_ns
    want = [o.outputs[0].token_ids for o in first.generate(PROMPTS, greedy)]
    del first
    assert str(snapshot) not in Path("/proc/self/maps").read_text()  # written, not mapped
    second = LLM(str(smollm_dir), snapshot_cache=str(tmp_path), **CONFIG)
    assert snapshot.stat().st_mtime_ns == written  # read, not rewritten
    assert str(snapshot) in Path("/proc/self/maps").read_text()  # its weights are the mapped file
    assert [o.outputs[0].token_ids for o in second.generate(PROMPTS, greedy)] == want
    plain = LLM(str(smollm_dir), **CONFIG)
    assert [o.outputs[0].token_ids for o in plain.generate(PROMPTS, greedy)] == want
