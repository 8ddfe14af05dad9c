"""The snapshot layout and a round trip through writer and reader, by both reader paths."""

from __future__ import annotations

import gc

import pytest
import torch

from swiftserve.loader import chunk_read
from swiftserve.loader.snapshot_format import (
    DATA_ALIGN,
    LARGE_TENSOR,
    MAGIC,
    PREAMBLE,
    TENSOR_ALIGN,
)
from swiftserve.loader.snapshot_reader import (
    is_snapshot,
    load_snapshot,
    read_header,
    read_index,
    unique_parameters,
)

from .snapshot_factory import META, is_mapped, sample_tensors, write_sample


def test_layout_alignment_and_sharing(tmp_path):
    path = tmp_path / "m.swsnap"
    header = write_sample(path)
    assert path.read_bytes()[: len(MAGIC)] == MAGIC
    assert header.data_offset % DATA_ALIGN == 0 and header.data_offset >= PREAMBLE.size
    entries = header.entries()
    # The load order is the dict's; a name sharing a stored tensor is listed with it.
    offsets = [e.offset for e in header.tensors]
    assert sorted(entries) == sorted(sample_tensors()) and offsets == sorted(offsets)
    shared = ("head.weight", "rope.b")
    assert [n for n in entries if n not in shared] == [n for n in sample_tensors() if n not in shared]
    for entry in header.tensors:
        assert entry.offset % TENSOR_ALIGN == 0
        assert entry.offset >= header.data_offset and entry.end <= header.file_size
        if entry.nbytes >= LARGE_TENSOR:
            assert entry.offset % DATA_ALIGN == 0
    assert entries["head.weight"].offset == entries["embed.weight"].offset  # tied: stored once
    assert entries["rope.b"].offset == entries["rope.a"].offset  # equal buffers: stored once
    assert entries["rope.a"].is_buffer and not entries["embed.weight"].is_buffer
    assert path.stat().st_size == header.file_size
    # Parameters for the footprint: the tied pair once, buffers not at all.
    names = [e.name for e in unique_parameters(header)]
    assert names == ["embed.weight", "layer.norm", "layer.proj", "step", "empty"]


def test_equal_parameters_are_not_merged(tmp_path):
    zeros = {"a.bias": torch.zeros(8), "b.bias": torch.zeros(8)}
    from swiftserve.loader.snapshot_writer import write_snapshot

    header = write_snapshot(tmp_path / "z.swsnap", zeros, META)
    assert header.entries()["a.bias"].offset != header.entries()["b.bias"].offset


@pytest.mark.parametrize("method", ["mmap", "read"])
def test_round_trip_is_exact(tmp_path, method):
    path = tmp_path / "m.swsnap"
    write_sample(path)
    snapshot = load_snapshot(path, required=sample_tensors(), method=method, verify=True)
    assert snapshot.method == method and snapshot.header.meta.hf_config == META.hf_config
    for name, want in sample_tensors().items():
        got = snapshot.tensors[name]
        assert got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want), name
    tensors = snapshot.tensors
    assert tensors["head.weight"].data_ptr() == tensors["embed.weight"].data_ptr()
    assert is_mapped(path) == (method == "mmap")


def test_the_tensors_own_the_mapping(tmp_path):
    path = tmp_path / "m.swsnap"
    write_sample(path)
    snapshot = load_snapshot(path, method="mmap")
    weight = snapshot.tensors["embed.weight"]
    del snapshot
    gc.collect()
    assert is_mapped(path) and weight.float().abs().sum() > 0  # still readable
    del weight
    gc.collect()
    assert not is_mapped(path)


def test_python_reader_fills_the_destinations(tmp_path, monkeypatch):
    monkeypatch.setattr(chunk_read, "_native_read_chunks", lambda: None)
    path = tmp_path / "m.swsnap"
    write_sample(path)
    snapshot = load_snapshot(path, method="read", verify=True)
    assert torch.equal(snapshot.tensors["layer.proj"], sample_tensors()["layer.proj"])
    for name in ("embed.weight", "layer.proj"):
        assert snapshot.tensors[name].data_ptr() % TENSOR_ALIGN == 0


def test_the_index_is_the_header_without_the_tokenizer(tmp_path):
    path = tmp_path / "m.swsnap"
    write_sample(path)
    full, index = read_header(path), read_index(path)
    assert full.meta == META and index.tensors == full.tensors
    assert (index.data_offset, index.file_size) == (full.data_offset, full.file_size)
    for name in ("kind", "hf_config", "dtype", "source", "pooling", "warm"):
        assert getattr(index.meta, name) == getattr(META, name), name
    assert not hasattr(index.meta, "tokenizer")


def test_auto_is_mmap_on_cpu_and_header_reads_alone(tmp_path):
    path = tmp_path / "m.swsnap"
    write_sample(path)
    assert load_snapshot(path).method == "mmap"
    assert read_header(path).meta.chat_template == "{{ messages }}"
    assert is_snapshot(path)
    renamed = tmp_path / "model.bin"
    path.rename(renamed)
    assert is_snapshot(renamed)  # recognised by its magic too
    (tmp_path / "other.bin").write_bytes(b"not a snapshot")
    assert not is_snapshot(tmp_path / "other.bin") and not is_snapshot(tmp_path)
