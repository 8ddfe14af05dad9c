"""The KV cache costs memory only for blocks in use: measured, not assumed.

The cache's resident pages are counted with mincore(2) over the reserved range, and the process's
RSS is read from /proc/self/statm. The tiny model's block is one 4 KiB page in each of its four
(layer, K/V) slabs, so the resident bytes must equal the blocks ever written, exactly.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import random

import pytest

from swiftserve import EngineConfig, SamplingParams
from swiftserve.engine.llm_engine import LLMEngine

from .tiny_chat import BLOCK_BYTES, make_tiny_chat

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")

MAX_BLOCKS = 4096  # 64 MiB reserved
CONFIG = dict(max_model_len=1024, kv_cache_memory=MAX_BLOCKS * BLOCK_BYTES, dtype="float32")
PARAMS = SamplingParams(temperature=0, max_tokens=60, ignore_eos=True)
_libc = ctypes.CDLL(None, use_errno=True)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, smollm_dir):
    return make_tiny_chat(tmp_path_factory.mktemp("tiny") / "chat", smollm_dir)


def kv_resident_bytes(engine: LLMEngine) -> int:
    """Bytes of the KV cache's reserved range that are backed by physical pages now."""
    tensor = engine.runner.kv_cache.tensor
    length = tensor.numel() * tensor.itemsize
    pages = (ctypes.c_ubyte * (length // mmap.PAGESIZE))()
    if _libc.mincore(ctypes.c_void_p(tensor.data_ptr()), ctypes.c_size_t(length), pages) != 0:
        raise OSError(ctypes.get_errno(), "mincore failed")
    return sum(p & 1 for p in pages) * mmap.PAGESIZE


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * mmap.PAGESIZE


def run(engine: LLMEngine, num_requests: int, num_prompt_tokens: int, tag: str) -> int:
    """Generates num_requests distinct prompts to the end; the peak number of blocks in use."""
    rng = random.Random(tag)
    for i in range(num_requests):
        engine.add_request(f"{tag}{i}", [rng.randrange(3, 49152) for _ in range(num_prompt_tokens)], PARAMS)
    peak = 0
    while engine.has_unfinished():
        engine.step()
        peak = max(peak, engine.kv_usage().num_used_blocks)
    return peak


def test_kv_memory_rises_only_with_use_and_falls_after_a_shrink(tiny_dir) -> None:
    engine = LLMEngine(EngineConfig(model=str(tiny_dir), **CONFIG))
    assert engine.kv_usage().num_blocks == MAX_BLOCKS
    assert kv_resident_bytes(engine) == 0  # 64 MiB reserved, nothing committed

    peak = run(engine, 16, 900, "a")  # 960 tokens each: 60 blocks, 960 in all
    assert peak == 960
    assert kv_resident_bytes(engine) == peak * BLOCK_BYTES  # exactly the blocks written (15 MiB)

    before = rss()
    assert engine.resize_kv(64) == 64  # all free: down to the floor at once
    fallen = before - rss()
    assert kv_resident_bytes(engine) == 64 * BLOCK_BYTES
    assert fallen >= 0.9 * (peak - 64) * BLOCK_BYTES, fallen  # the process really got it back

    assert engine.resize_kv(MAX_BLOCKS) == MAX_BLOCKS
    assert kv_resident_bytes(engine) == 64 * BLOCK_BYTES  # growth itself commits nothing
    assert run(engine, 2, 900, "b") == 120
    # the 64 kept blocks are reused first, then 56 new ones are written
    assert kv_resident_bytes(engine) == 120 * BLOCK_BYTES
    engine.scheduler.check_integrity()


def test_a_shrink_held_up_by_one_sequence_frees_everything_else_at_once(tiny_dir) -> None:
    engine = LLMEngine(EngineConfig(model=str(tiny_dir), **CONFIG))
    rng = random.Random("c")
    for i in range(16):
        engine.add_request(f"c{i}", [rng.randrange(3, 49152) for _ in range(900)], PARAMS)
    while engine.scheduler.waiting or any(s.num_uncomputed_tokens > 1 for s in engine.scheduler.running):
        engine.step()  # every prompt prefilled: about 900 blocks written
    last = max(engine.scheduler.running, key=lambda s: max(s.block_ids))
    for request_id in list(engine.requests):
        if request_id != engine._completions[last.seq_id].request_id:
            engine.abort_request(request_id)
    held = len(last.block_ids)
    assert min(last.block_ids) >= 64
    backed = engine.resize_kv(64)
    assert backed == max(last.block_ids) + 1  # the live sequence holds the tail
    # the floor's 64 blocks and the live sequence's stay; every other retired block's memory went
    assert kv_resident_bytes(engine) == (64 + held) * BLOCK_BYTES
    while engine.has_unfinished():
        engine.step()
    assert engine.resize_kv(64) == 64
    assert kv_resident_bytes(engine) == 64 * BLOCK_BYTES
    engine.scheduler.check_integrity()
