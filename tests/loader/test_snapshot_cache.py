"""Automatic snapshots in the model cache (load_model with snapshot_cache) on a tiny Llama folder:
written on the first load, used on the next, rebuilt when corrupt, stale, of the other kind or of
another config, skipped with a warning when the cache cannot be written. Every load's tensors
equal the source's."""

from __future__ import annotations

import dataclasses
import gc
import logging
import os

import pytest
import torch

from swiftserve.loader import load_config
from swiftserve.loader.gguf_convert import convert_gguf
from swiftserve.loader.model_source import resolve_source
from swiftserve.loader.snapshot_cache import cache_path, check_current, source_key
from swiftserve.loader.snapshot_errors import SnapshotMismatchError, SnapshotStaleError
from swiftserve.loader.snapshot_format import PoolingSpec
from swiftserve.loader.snapshot_reader import load_snapshot, read_header
from swiftserve.model_runner.model_loader import load_model

from .gguf_factory import tiny_hf_weights, write_tiny_gguf
from .snapshot_factory import is_mapped, rewrite_header

CPU = torch.device("cpu")


@pytest.fixture
def folder(tmp_path):
    gguf_path = write_tiny_gguf(tmp_path / "tiny.gguf", tiny_hf_weights())
    convert_gguf(gguf_path, tmp_path / "tiny", progress=False)
    return tmp_path / "tiny"


def _load(folder, cache):
    return load_model(resolve_source(folder), torch.float32, CPU, snapshot_cache=cache)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name
    buffers = zip(
        a.named_buffers(remove_duplicate=False), b.named_buffers(remove_duplicate=False), strict=True
    )
    for (name, x), (_, y) in buffers:
        assert torch.equal(x, y), name


def test_first_load_writes_it_and_the_next_one_maps_it(folder, tmp_path):
    cache = tmp_path / "cache"
    reference = _load(folder, None)
    first = _load(folder, cache)
    path = cache_path(cache, folder, "float32")
    assert path.is_file() and read_header(path).meta.source.spec == str(folder.resolve())
    _same(reference, first)
    del first
    gc.collect()
    assert not is_mapped(path)  # the first load came from the folder
    second = _load(folder, cache)
    assert is_mapped(path)  # this one is views of the snapshot
    _same(reference, second)


def test_corrupt_snapshot_is_rebuilt(folder, tmp_path, caplog):
    cache = tmp_path / "cache"
    reference = _load(folder, cache)
    path = cache_path(cache, folder, "float32")
    entry = read_header(path).entries()["layers.0.mlp.down_proj.weight"]
    with open(path, "r+b") as file:  # flip a byte: a new file identity, so the next use verifies
        file.seek(entry.offset)
        file.write(b"\xff\xff")
    with caplog.at_level(logging.WARNING):
        model = _load(folder, cache)
    assert "rebuilding" in caplog.text
    _same(reference, model)
    load_snapshot(path, verify=True)  # rewritten whole


def test_stale_snapshot_is_rebuilt(folder, tmp_path):
    cache = tmp_path / "cache"
    _load(folder, cache)
    path = cache_path(cache, folder, "float32")
    before = read_header(path).meta.source.fingerprint
    config = folder / "config.json"
    config.write_text(config.read_text())  # the source changed (same bytes, a new modification time)
    os.utime(config, ns=(1, 1))
    model = _load(folder, cache)
    assert read_header(path).meta.source.fingerprint != before
    _same(_load(folder, None), model)


def test_unwritable_cache_serves_from_the_source(folder, tmp_path, caplog):
    cache = tmp_path / "not-a-dir"
    cache.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING):
        model = _load(folder, cache)
    assert "cannot write the automatic snapshot" in caplog.text
    _same(_load(folder, None), model)


def _rewrite_meta(path, **changes) -> None:
    rewrite_header(path, lambda h: dataclasses.replace(h, meta=dataclasses.replace(h.meta, **changes)))


def test_an_embedding_snapshot_at_its_path_is_rebuilt(folder, tmp_path, caplog):
    cache = tmp_path / "cache"
    reference = _load(folder, cache)
    path = cache_path(cache, folder, "float32")
    _rewrite_meta(path, kind="embedding", pooling=PoolingSpec("mean", False, 8))
    with caplog.at_level(logging.WARNING):
        model = _load(folder, cache)
    assert "kind 'embedding', expected 'chat'" in caplog.text
    _same(reference, model)
    assert read_header(path).meta.kind == "chat"


def test_a_snapshot_of_another_config_is_rebuilt(folder, tmp_path, caplog):
    cache = tmp_path / "cache"
    reference = _load(folder, cache)
    path = cache_path(cache, folder, "float32")
    # Same key and same shapes: only the config tells this file is of another model.
    _rewrite_meta(path, hf_config={**load_config(folder), "rms_norm_eps": 0.5})
    with caplog.at_level(logging.WARNING):
        model = _load(folder, cache)
    assert "config differs" in caplog.text
    _same(reference, model)
    assert read_header(path).meta.hf_config == load_config(folder)


def test_check_current_names_each_reason_by_its_type(folder, tmp_path):
    cache = tmp_path / "cache"
    _load(folder, cache)
    path, key, config = (
        cache_path(cache, folder, "float32"),
        source_key(folder, "float32"),
        load_config(folder),
    )
    check_current(path, key, "chat", config)  # current: no error
    with pytest.raises(SnapshotStaleError):
        check_current(path, dataclasses.replace(key, fingerprint="another"), "chat", config)
    with pytest.raises(SnapshotMismatchError, match="kind 'chat', expected 'embedding'"):
        check_current(path, key, "embedding", config)
    with pytest.raises(SnapshotMismatchError, match="config differs"):
        check_current(path, key, "chat", {**config, "rms_norm_eps": 0.5})
