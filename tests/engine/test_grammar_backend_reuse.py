"""A served chat model builds its grammar backend on its first constrained request, not at load (the
build holds the GIL), and keeps it across unload, park and reload: every engine gets the same one."""

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


def _backend(model: LocalChatModel):
    return model.engine.engine.grammars.backend_slot.backend


async def _generate(model: LocalChatModel) -> str:
    outputs = [o async for o in model.generate([5, 17, 300], JSON)]
    return outputs[-1].outputs[0].text


def test_the_backend_is_built_on_first_use_and_kept_across_reloads(model) -> None:
    async def run() -> None:
        await model.load()
        assert model.engine.engine.grammars.backend_slot.build is None  # a load builds nothing
        int(await _generate(model))
        first = _backend(model)
        assert first is not None
        await model.unload()
        await model.load()
        assert _backend(model) is first  # kept: ready before any request of this engine
        await model.park()
        await model.load()
        assert _backend(model) is first
        int(await _generate(model))
        await model.unload()

    asyncio.run(run())
