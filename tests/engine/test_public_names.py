"""What a new user imports from `swiftserve` (issue #24): every engine the README names is there
and works as the README shows it."""

from __future__ import annotations

import subprocess
import sys

import swiftserve


def test_embedding_engine_is_importable_from_the_package(minilm_dir) -> None:
    assert "EmbeddingEngine" in swiftserve.__all__
    from swiftserve import EmbeddingEngine

    vectors = EmbeddingEngine(str(minilm_dir)).embed_sync(["a text", "another"]).embeddings
    assert len(vectors) == 2 and len(vectors[0]) == 384


def test_every_public_name_imports_in_a_fresh_process() -> None:
    names = ", ".join(swiftserve.__all__)
    subprocess.run([sys.executable, "-c", f"from swiftserve import {names}"], check=True)


def test_async_engine_as_the_readme_shows_it(smollm_dir) -> None:
    """The README's AsyncEngine example: generate() without a start() of its own starts the
    engine on first use; once shut down it stays down, with an error that says so."""
    import asyncio

    from swiftserve import AsyncEngine, EngineConfig, SamplingParams
    from swiftserve.engine.async_engine import EngineDeadError

    async def main() -> tuple[list[str], str]:
        engine = AsyncEngine(EngineConfig(model=str(smollm_dir), max_model_len=256, kv_cache_memory=16 << 20))
        params = SamplingParams(temperature=0, max_tokens=4)

        async def text(prompt: str) -> str:
            outputs = [out async for out in engine.generate(prompt, params)]
            return outputs[-1].outputs[0].text

        texts = await asyncio.gather(text("Hello"), text("The sea is"))  # both on first use
        await engine.shutdown()
        try:
            await text("Again")
        except EngineDeadError as exc:
            return texts, str(exc)
        return texts, ""

    texts, error = asyncio.run(main())
    assert all(texts) and "shut down" in error
