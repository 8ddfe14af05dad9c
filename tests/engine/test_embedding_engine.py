"""EmbeddingEngine: sentence-transformers parity, batching of concurrent calls, errors, lifecycle."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from swiftserve.engine.embedding_engine import EmbeddingEngine
from swiftserve.engine.errors import QueueFullError

SENTENCES = [
    "Hello world",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France, on the Seine. " * 4,
    "ok",
    "Long inputs are truncated to max_seq_length, as sentence-transformers does. " * 30,
]


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def engine(minilm_dir):
    return EmbeddingEngine(str(minilm_dir), max_batch_size=8, max_batch_tokens=1024)


@pytest.fixture(scope="module")
def reference(minilm_dir):
    import sentence_transformers

    model = sentence_transformers.SentenceTransformer(str(minilm_dir), device="cpu")
    return model.encode(SENTENCES, convert_to_numpy=True)


class _GatedModel:
    """Wraps the engine's model so a test can hold forwards until it has queued its requests."""

    def __init__(self, model) -> None:
        self.model = model
        self.gate = threading.Event()
        self.batches: list[list[list[int]]] = []

    def __call__(self, token_ids):
        self.gate.wait(timeout=30)
        self.batches.append(token_ids)
        return self.model(token_ids)


def test_properties(engine):
    assert (engine.dim, engine.max_seq_length) == (384, 256)


def test_embed_sync_matches_sentence_transformers(engine, reference):
    result = engine.embed_sync(SENTENCES)
    assert result.embeddings.dtype == np.float32 and result.embeddings.shape == (len(SENTENCES), 384)
    assert _cosine(result.embeddings, reference).min() >= 0.999
    one_by_one = np.concatenate([engine.embed_sync([s]).embeddings for s in SENTENCES])
    assert _cosine(one_by_one, reference).min() >= 0.999


def test_token_counts_and_truncation(engine):
    counts = [engine.embed_sync([s]).num_prompt_tokens for s in SENTENCES]
    assert counts[0] == 4  # [CLS] hello world [SEP]
    assert counts[-1] == 256  # truncated, [SEP] kept
    assert engine.embed_sync(SENTENCES).num_prompt_tokens == sum(counts)
    huge = asyncio.run(engine.embed(["word " * 100_000, "tiny"]))  # tokenized off the event loop
    assert huge.num_prompt_tokens == 256 + 3


def test_token_id_inputs_equal_text_inputs(engine):
    ids = [[101, 7592, 2088, 102], [101, 2054, 102]]  # "[CLS] hello world [SEP]", "[CLS] what [SEP]"
    by_ids = engine.embed_sync(ids)
    by_text = engine.embed_sync(["Hello world", "What"])
    np.testing.assert_allclose(by_ids.embeddings, by_text.embeddings, atol=1e-6)
    assert by_ids.num_prompt_tokens == 7
    # A lone string or token-id list is a batch of one.
    np.testing.assert_allclose(engine.embed_sync(ids[0]).embeddings, by_ids.embeddings[:1], atol=1e-6)
    np.testing.assert_allclose(engine.embed_sync("What").embeddings, by_ids.embeddings[1:], atol=1e-6)


def test_concurrent_calls_are_batched_and_match_one_by_one(engine, monkeypatch, reference):
    short = SENTENCES[:4]
    calls = [short[i % 4 :][:3] for i in range(8)] + [[s] for s in short]
    expected = [engine.embed_sync(c).embeddings for c in calls]
    gated = _GatedModel(engine.model)

    async def main():
        await engine.start()
        monkeypatch.setattr(engine, "model", gated)
        tasks = [asyncio.create_task(engine.embed(c)) for c in calls]
        await asyncio.sleep(0.05)  # all queued behind the first (held) forward
        gated.gate.set()
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    for result, want in zip(results, expected, strict=True):
        np.testing.assert_allclose(result.embeddings, want, atol=1e-5)
    singles = np.concatenate([r.embeddings for r in results[-4:]])
    assert _cosine(singles, reference[:4]).min() >= 0.999
    num_inputs = sum(map(len, calls))
    assert sum(map(len, gated.batches)) == num_inputs
    assert len(gated.batches) < len(calls)  # batched across calls
    assert max(map(len, gated.batches)) <= engine.max_batch_size
    assert max(sum(map(len, b)) for b in gated.batches) <= engine.max_batch_tokens


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ([], "input is empty"),
        ("", "empty string"),
        (["fine", ""], r"input\[1\] is an empty string"),
        ([[]], "empty list of token ids"),
        ([[101, -1]], "token ids must be ints"),
        ([[101, 30522]], "token ids must be ints"),
        ([[101, 2.5]], "token ids must be ints"),
        (["text", [101]], "expected a string"),
        ([[101], "text"], "expected a list of token ids"),
        (["text", None], "expected a string"),
        ([[101], 7], "expected a list of token ids"),
        (None, "input must be"),
        ({"text": 1}, "input must be"),
    ],
)
def test_bad_inputs_raise_value_error(engine, bad, match):
    with pytest.raises(ValueError, match=match):
        engine.embed_sync(bad)
    with pytest.raises(ValueError, match=match):
        asyncio.run(engine.embed(bad))


def test_queue_full_and_cancellation(engine, monkeypatch):
    gated = _GatedModel(engine.model)
    monkeypatch.setattr(engine, "max_num_waiting", 3)
    expected = engine.embed_sync(["a", "b", "c"]).embeddings

    async def main():
        await engine.start()
        monkeypatch.setattr(engine, "model", gated)
        first = asyncio.create_task(engine.embed(["a"]))  # taken by the worker, held at the gate
        await asyncio.sleep(0.02)
        doomed = asyncio.create_task(engine.embed(["b"] * 50))
        last = asyncio.create_task(engine.embed(["c"]))
        await asyncio.sleep(0.02)
        with pytest.raises(QueueFullError):
            await engine.embed(["d"])
        doomed.cancel()
        await asyncio.sleep(0)
        gated.gate.set()
        return await first, await last, doomed

    first, last, doomed = asyncio.run(main())
    assert doomed.cancelled()
    np.testing.assert_allclose(first.embeddings[0], expected[0], atol=1e-5)
    np.testing.assert_allclose(last.embeddings[0], expected[2], atol=1e-5)
    assert [len(b) for b in gated.batches] == [1, 1]  # the cancelled call's 50 inputs never ran
    assert not engine._requests


def test_failed_forward_fails_its_calls_only(engine, monkeypatch):
    def broken(token_ids):
        raise RuntimeError("device on fire")

    async def main():
        await engine.start()
        with monkeypatch.context() as patch:
            patch.setattr(engine, "model", broken)
            with pytest.raises(RuntimeError, match="device on fire"):
                await engine.embed(["x"])
        return await engine.embed(["still serving"])

    assert asyncio.run(main()).embeddings.shape == (1, 384)


def test_shutdown_fails_waiting_calls_and_restarts(engine, monkeypatch):
    gated = _GatedModel(engine.model)

    async def main():
        await engine.start()
        monkeypatch.setattr(engine, "model", gated)
        waiting = asyncio.create_task(engine.embed(["queued"]))
        await asyncio.sleep(0.02)
        await engine.shutdown()
        with pytest.raises(RuntimeError, match="shut down"):
            await waiting
        gated.gate.set()
        monkeypatch.setattr(engine, "model", gated.model)
        return await engine.embed(["after restart"])  # embed() starts the engine again

    assert asyncio.run(main()).embeddings.shape == (1, 384)


def test_bfloat16_close_to_float32(minilm_dir, engine):
    bf16 = EmbeddingEngine(str(minilm_dir), dtype="bfloat16")
    assert (
        _cosine(bf16.embed_sync(SENTENCES).embeddings, engine.embed_sync(SENTENCES).embeddings).min() >= 0.99
    )


def test_constructor_validation(minilm_dir):
    with pytest.raises(ValueError, match="dtype"):
        EmbeddingEngine(str(minilm_dir), dtype="int3")
    with pytest.raises(ValueError, match="max_batch_tokens"):
        EmbeddingEngine(str(minilm_dir), max_batch_tokens=100)
