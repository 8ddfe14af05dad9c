"""Automatic snapshots of an embedding model (real MiniLM): written on the first load, mapped on the
next, rebuilt when corrupt, stale, of the other kind or of another config, skipped with a warning
when the cache cannot be written. Every load's embeddings equal the source folder's exactly."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import shutil

import numpy as np
import pytest

from swiftserve.engine.device_executor import DeviceExecutor
from swiftserve.engine.embedding_engine import EmbeddingEngine
from swiftserve.loader import load_config
from swiftserve.loader.snapshot_cache import cache_path
from swiftserve.loader.snapshot_format import PoolingSpec
from swiftserve.loader.snapshot_reader import load_snapshot, read_header

from .snapshot_factory import is_mapped, rewrite_header

SENTENCES = ["A man is eating food.", "The new movie is awesome", "hi"]


@pytest.fixture
def folder(minilm_dir, tmp_path):
    """A private copy of MiniLM that a test may touch; the 87 MiB of weights a link (never touched)."""
    copy = tmp_path / "minilm"
    shutil.copytree(minilm_dir, copy, ignore=shutil.ignore_patterns("*.safetensors"))
    for weights in minilm_dir.glob("*.safetensors"):
        (copy / weights.name).symlink_to(weights)
    return copy


@pytest.fixture(scope="module")
def want(minilm_dir):
    return EmbeddingEngine(str(minilm_dir)).embed_sync(SENTENCES).embeddings


def _embed(folder, cache) -> np.ndarray:
    return EmbeddingEngine(str(folder), snapshot_cache=cache).embed_sync(SENTENCES).embeddings


def test_first_load_writes_it_and_the_next_one_maps_it(folder, tmp_path, want):
    cache = tmp_path / "cache"
    path = cache_path(cache, folder, "float32")
    first = EmbeddingEngine(str(folder), snapshot_cache=cache)
    meta = read_header(path).meta
    assert (meta.kind, meta.source.spec, meta.hf_config) == (
        "embedding",
        str(folder.resolve()),
        load_config(folder),
    )
    assert meta.pooling == PoolingSpec(mode="mean", normalize=True, max_seq_length=256)
    assert not is_mapped(path)  # the first load came from the folder
    assert np.array_equal(first.embed_sync(SENTENCES).embeddings, want)
    del first
    gc.collect()
    written = path.stat().st_mtime_ns
    second = EmbeddingEngine(str(folder), snapshot_cache=cache)
    assert path.stat().st_mtime_ns == written  # read, not rewritten
    assert is_mapped(path)  # its weights are views of the mapped snapshot
    assert np.array_equal(second.embed_sync(SENTENCES).embeddings, want)


def test_corrupt_snapshot_is_rebuilt(folder, tmp_path, caplog, want):
    cache = tmp_path / "cache"
    _embed(folder, cache)
    path = cache_path(cache, folder, "float32")
    entry = read_header(path).entries()["layers.0.attn_out.weight"]
    with open(path, "r+b") as file:  # flip bytes: a new file identity, so the next use verifies
        file.seek(entry.offset)
        file.write(b"\xff\xff\xff\xff")
    with caplog.at_level(logging.WARNING):
        got = _embed(folder, cache)
    assert "rebuilding" in caplog.text and entry.name in caplog.text
    assert np.array_equal(got, want)
    load_snapshot(path, verify=True)  # rewritten whole


def test_stale_snapshot_is_rebuilt(folder, tmp_path, want):
    cache = tmp_path / "cache"
    _embed(folder, cache)
    path = cache_path(cache, folder, "float32")
    before = read_header(path).meta.source.fingerprint
    os.utime(folder / "config.json", ns=(1, 1))  # the source changed (same bytes, another mtime)
    assert np.array_equal(_embed(folder, cache), want)
    assert read_header(path).meta.source.fingerprint != before


def test_unwritable_cache_serves_from_the_source(folder, tmp_path, caplog, want):
    cache = tmp_path / "not-a-dir"
    cache.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING):
        got = _embed(folder, cache)
    assert "cannot write the automatic snapshot" in caplog.text
    assert np.array_equal(got, want)


def test_a_chat_snapshot_at_its_path_is_rebuilt(folder, tmp_path, caplog, want):
    cache = tmp_path / "cache"
    _embed(folder, cache)
    path = cache_path(cache, folder, "float32")
    rewrite_header(path, lambda h: dataclasses.replace(h, meta=dataclasses.replace(h.meta, kind="chat")))
    with caplog.at_level(logging.WARNING):
        got = _embed(folder, cache)
    assert "kind 'chat', expected 'embedding'" in caplog.text
    assert np.array_equal(got, want)
    assert read_header(path).meta.kind == "embedding"


def test_a_snapshot_of_another_config_is_rebuilt(folder, tmp_path, caplog, want):
    cache = tmp_path / "cache"
    _embed(folder, cache)
    path = cache_path(cache, folder, "float32")
    other = {**load_config(folder), "layer_norm_eps": 0.5}  # the same key and shapes, another config
    rewrite_header(path, lambda h: dataclasses.replace(h, meta=dataclasses.replace(h.meta, hf_config=other)))
    with caplog.at_level(logging.WARNING):
        got = _embed(folder, cache)
    assert "config differs" in caplog.text
    assert np.array_equal(got, want)
    assert read_header(path).meta.hf_config == load_config(folder)


def test_a_served_embedding_model_writes_its_snapshot_into_the_model_cache(
    folder, tmp_path, monkeypatch, want
):
    from swiftserve.router.config_file import ModelConfig
    from swiftserve.router.router_config import RouterConfig
    from swiftserve.router.runtime import served_model

    monkeypatch.setenv("SWIFTSERVE_CACHE", str(tmp_path))
    config = RouterConfig.from_flags((str(folder),))
    executor = DeviceExecutor("served")
    executor.start()

    async def main():
        model = served_model(ModelConfig("e", str(folder)), config, executor)
        await model.load()
        try:
            return (await model.embed(SENTENCES)).embeddings
        finally:
            await model.unload()

    try:
        got = asyncio.run(main())
    finally:
        executor.stop()
    assert cache_path(tmp_path, folder, "float32").is_file()
    assert np.array_equal(got, want)
