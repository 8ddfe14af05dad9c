"""A served chat model starts building its grammar backend once it is resident, not on its first
constrained request, and keeps it across unload, park and reload: every engine gets the same one."""

from __future__ import annotations

import asyncio

import pytest

from swiftserve import EngineConfig, SamplingParams
from swiftserve.engine.chat_model import LocalChatModel
from swiftserve.engine.device_executor import DeviceExecutor
from swiftserve.structured_outputs import StructuredOutputs

from .tiny_chat import BLOCK_BYTES, make_tiny_chat

pytest.importorskip("llguidance")

CONFIG = dict(max_model_len=128, kv_cache_memory=64 * BLOCK_BYTES, dtype="float32")
JSON = SamplingParams(
    temperature=0, max_tokens=8, structured_outputs=StructuredOutputs(json={"type": "integer"})
)


@pytest.fixture(scope="module")
def model(tmp_path_factory, smollm_dir):
    folder = make_tiny_chat(tmp_path_factory.mktemp("grammar") / "tiny", smollm_dir)
    executor = DeviceExecutor("grammar-reuse")
    executor.start()
    yield LocalChatModel("tiny", EngineConfig(model=str(folder), **CONFIG), executor)
    executor.stop()


async def _backend_after_load(model: LocalChatModel):
    await model.load()
    grammars = model.engine.engine.grammars
    build = grammars.backend_slot.build
    assert build is not None and grammars.stats.num_compiles == 0  # started with no request asking
    return await asyncio.wrap_future(build)


async def _generate(model: LocalChatModel) -> str:
    outputs = [o async for o in model.generate([5, 17, 300], JSON)]
    return outputs[-1].outputs[0].text


def test_the_backend_is_built_on_load_and_kept_across_reloads(model) -> None:
    async def run() -> None:
        first = await _backend_after_load(model)
        int(await _generate(model))
        await model.unload()
        assert await _backend_after_load(model) is first
        await model.park()
        assert await _backend_after_load(model) is first
        int(await _generate(model))
        await model.unload()

    asyncio.run(run())
