"""Two tiny real chat models stepping side by side on two chat lanes (each lane's OpenMP team
resized as the other turns busy): greedy outputs are those of each model alone."""

from __future__ import annotations

import asyncio

import pytest

from swiftserve import LLM, EngineConfig, SamplingParams
from swiftserve.engine.async_engine import AsyncEngine
from swiftserve.engine.device_executor import DeviceExecutor

from .tiny_chat import BLOCK_BYTES, make_tiny_chat

CONFIG = dict(max_model_len=128, kv_cache_memory=64 * BLOCK_BYTES, dtype="float32")
GREEDY = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
PROMPTS = [[5 + i, 17, 300 + 7 * i, 4000 + i, 12, 99, 1000 + 3 * i, 8, 77 + i] for i in range(4)]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory, smollm_dir):
    root = tmp_path_factory.mktemp("lanes")
    return {name: make_tiny_chat(root / name, smollm_dir, seed) for seed, name in enumerate(("a", "b"))}


def _alone(folder) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in LLM(str(folder), **CONFIG).generate(PROMPTS, GREEDY)]


async def _generate(engine: AsyncEngine, prompt: list[int]) -> list[int]:
    outputs = [o async for o in engine.generate(prompt, GREEDY)]
    return outputs[-1].outputs[0].token_ids


async def _side_by_side(
    engines: dict[str, AsyncEngine], executor: DeviceExecutor
) -> tuple[dict[str, list[list[int]]], dict[str, str | None]]:
    """Every prompt on both engines at once: their outputs, and the lane each stepped on."""
    names = [name for name in engines for _ in PROMPTS]
    runs = [_generate(engine, prompt) for engine in engines.values() for prompt in PROMPTS]
    got: dict[str, list[list[int]]] = {name: [] for name in engines}
    for name, tokens in zip(names, await asyncio.gather(*runs), strict=True):
        got[name].append(tokens)
    lanes = {name: executor.lane_of(name) for name in engines}
    for engine in engines.values():
        await engine.shutdown()
    return got, lanes


def test_greedy_outputs_are_unchanged_when_two_models_step_side_by_side(tiny_dirs) -> None:
    want = {name: _alone(folder) for name, folder in tiny_dirs.items()}
    executor = DeviceExecutor("greedy", urgent_lane_threads=0, chat_lanes=2, num_threads=2)
    executor.plan_lanes({"a": 2, "b": 1})
    executor.start()
    try:
        engines = {
            name: AsyncEngine(EngineConfig(model=str(folder), **CONFIG), executor, name)
            for name, folder in tiny_dirs.items()
        }
        got, lanes = asyncio.run(_side_by_side(engines, executor))
    finally:
        executor.stop()
    assert got == want
    assert lanes == {"a": "greedy", "b": "greedy-chat1"}
    # Each lane stepped with two threads alone and one beside the other (as the timing fell).
    assert {size for lane in executor.chat for size in lane.team_sizes} <= {1, 2}
