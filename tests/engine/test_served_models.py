"""Local served models on one shared device executor: cold handles, load/unload with memory really
returned, refusals while busy, and a chat and an embedding model stepping on one thread."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from swiftserve import LLM, SamplingParams
from swiftserve.config import EngineConfig
from swiftserve.engine.chat_model import LocalChatModel
from swiftserve.engine.device_executor import DeviceExecutor
from swiftserve.engine.embedding_engine import EmbeddingEngine
from swiftserve.engine.embedding_model import LocalEmbeddingModel
from swiftserve.engine.errors import ModelInUseError, ModelNotLoadedError
from swiftserve.engine.served_model import ChatModel, EmbeddingModel

PROMPT = "The capital of France is"
GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
# float32 both sides: in bf16 a batch may flip a greedy near-tie, and the reference runs alone.
CHAT_CONFIG = dict(max_model_len=512, kv_cache_memory=32 << 20, dtype="float32")
# SmolLM2-135M: embeddings (tied) + 30 layers of attention, MLP and norms + the final norm.
SMOLLM_PARAMS = 49152 * 576 + 30 * (576 * (576 + 2 * 192) + 576 * 576 + 3 * 576 * 1536 + 2 * 576) + 576


@pytest.fixture(scope="module")
def want(smollm_dir) -> list[int]:
    reference = LLM(str(smollm_dir), **CHAT_CONFIG)
    return reference.generate([PROMPT], GREEDY)[0].outputs[0].token_ids


def _chat(smollm_dir, executor, name="smol") -> LocalChatModel:
    return LocalChatModel(name, EngineConfig(model=str(smollm_dir), **CHAT_CONFIG), executor)


async def _generate(model, prompt=PROMPT, params=GREEDY) -> list[int]:
    outputs = [o async for o in model.generate(prompt, params)]
    return outputs[-1].outputs[0].token_ids


@pytest.fixture(scope="module")
def executor():
    # Its own name: a test below checks which executor thread steps each model.
    ex = DeviceExecutor("served")
    ex.start()
    yield ex
    ex.stop()


def test_cold_chat_model_validates_but_does_not_serve(smollm_dir, executor) -> None:
    model = _chat(smollm_dir, executor)
    assert isinstance(model, ChatModel) and not model.is_resident
    fp = model.footprint()
    assert fp.weight_bytes == SMOLLM_PARAMS * 4  # float32
    assert fp.kv_block_bytes == 2 * 30 * 3 * 64 * 4 * 16  # K+V, layers, kv heads, head_dim, fp32, block
    assert fp.kv_floor_blocks == 512 // 16
    assert model.max_model_len == 512 and model.tokenizer.encode(PROMPT)
    assert "France" in model.apply_chat_template([{"role": "user", "content": "France?"}])
    with pytest.raises(ModelNotLoadedError):
        model.generate(PROMPT, GREEDY)


def test_load_generate_unload_returns_the_memory_and_reloads(smollm_dir, executor, rss, want) -> None:
    """Unloading must hand back at least 80% of the weight bytes in RSS. Measured on CPU (float32,
    513 MiB of weights): RSS falls by ~746 MiB (weights, the 32 MiB KV cache and the fused-decode
    table's buffers), back to within a few MiB of before the load. 80% leaves room for allocator
    noise while still failing if the weights (the bulk) stayed referenced or untrimmed."""
    model = _chat(smollm_dir, executor)
    weight_bytes = model.footprint().weight_bytes

    async def main() -> None:
        for _ in range(2):  # the second round: a reload after unload works the same
            before = rss()
            await model.load()
            await model.load()  # idempotent
            assert model.is_resident and await _generate(model) == want
            loaded = rss()
            await model.unload()
            await model.unload()  # idempotent
            unloaded = rss()
            assert not model.is_resident
            assert loaded - unloaded >= 0.8 * weight_bytes, (before, loaded, unloaded)
            assert unloaded - before <= 0.2 * weight_bytes, (before, loaded, unloaded)
            with pytest.raises(ModelNotLoadedError):
                model.generate(PROMPT, GREEDY)

    asyncio.run(main())


def test_concurrent_loads_share_one_build(smollm_dir, executor, monkeypatch) -> None:
    model = _chat(smollm_dir, executor, name="shared")
    builds = []
    real_build = model._build
    monkeypatch.setattr(model, "_build", lambda: builds.append(1) or real_build())

    async def main() -> None:
        await asyncio.gather(*(model.load() for _ in range(4)))
        assert builds == [1] and model.is_resident
        await model.unload()

    asyncio.run(main())


def test_unload_with_a_request_in_flight_refuses(smollm_dir, executor) -> None:
    model = _chat(smollm_dir, executor, name="busy")

    async def main() -> None:
        await model.load()
        stream = model.generate(PROMPT, SamplingParams(max_tokens=200, ignore_eos=True))
        await anext(stream)
        with pytest.raises(ModelInUseError, match="in flight"):
            await model.unload()
        assert model.is_resident
        await stream.aclose()  # aborts the request
        for _ in range(200):
            if not model.engine.num_in_flight:
                break
            await asyncio.sleep(0.01)
        await model.unload()
        assert not model.is_resident

    asyncio.run(main())


def test_chat_and_embedding_answer_concurrently_on_the_executor_lanes(
    smollm_dir, minilm_dir, executor, want
) -> None:
    chat = _chat(smollm_dir, executor, name="chat")
    embed = LocalEmbeddingModel("embed", str(minilm_dir), executor)
    assert isinstance(embed, EmbeddingModel) and embed.footprint().kv_block_bytes == 0
    expected = EmbeddingEngine(str(minilm_dir)).embed_sync(["hello", "world"]).embeddings
    stepping: dict[str, set[str]] = {"chat": set(), "embed": set()}

    def record(engine, key: str) -> None:
        step = engine.step
        engine.step = lambda: stepping[key].add(threading.current_thread().name) or step()

    async def main():
        with pytest.raises(ModelNotLoadedError):
            await embed.embed(["cold"])
        await asyncio.gather(chat.load(), embed.load())
        record(chat.engine.engine, "chat")
        record(embed.engine, "embed")
        chats = [_generate(chat) for _ in range(3)]
        embeds = [embed.embed(["hello", "world"]) for _ in range(5)]
        results = await asyncio.gather(*chats, *embeds)
        threads = {t.name for t in threading.enumerate()}
        await asyncio.gather(chat.unload(), embed.unload())
        return results, threads

    results, threads = asyncio.run(main())
    assert results[:3] == [want] * 3
    for result in results[3:]:
        np.testing.assert_allclose(result.embeddings, expected, atol=1e-5)
    # Chat decodes on the main lane; embedding batches on the urgent lane beside it (2+ cores).
    assert stepping["chat"] == {"executor-served"}
    urgent = "executor-served-urgent" if executor.urgent is not None else "executor-served"
    assert stepping["embed"] == {urgent}
    assert not [t for t in threads if t.startswith(("engine-", "embed-"))]  # no per-engine threads


def test_embedding_reload_reuses_its_input_tokenizer(minilm_dir, executor) -> None:
    embed = LocalEmbeddingModel("embed-reload", str(minilm_dir), executor)
    texts = ["hello", "a sentence long enough to be truncated " * 60]

    async def load_embed() -> tuple[object, np.ndarray]:
        await embed.load()
        tokenizer = embed.engine.input_tokenizer
        result = await embed.embed(texts)
        await embed.unload()
        return tokenizer, result

    async def main():
        return [await load_embed() for _ in range(2)]

    (first, before), (second, after) = asyncio.run(main())
    assert second is first  # built once, by the first load
    assert before.num_prompt_tokens == after.num_prompt_tokens == 3 + 256  # still truncates at max_seq_length
    np.testing.assert_array_equal(before.embeddings, after.embeddings)


def test_an_input_tokenizer_that_truncates_elsewhere_is_not_reused(minilm_dir) -> None:
    other = EmbeddingEngine(str(minilm_dir)).input_tokenizer
    other.enable_truncation(max_length=8)
    engine = EmbeddingEngine(str(minilm_dir), input_tokenizer=other)
    assert engine.input_tokenizer is not other
    assert engine.embed_sync(["word " * 40]).num_prompt_tokens == 42
