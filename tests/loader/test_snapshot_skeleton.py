"""build_from_snapshot: a skeleton built on meta while the file loads, then filled in place."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

from swiftserve.loader.snapshot_errors import SnapshotMismatchError, SnapshotMissingTensorError
from swiftserve.loader.snapshot_modules import build_from_snapshot, tensor_slots

from .snapshot_factory import is_mapped, sample_tensors, write_sample


class _Holder(nn.Module):
    pass


def _tiny(extra: str | None = None, proj_shape: tuple[int, int] = (33, 65)) -> nn.Module:
    """A module whose names and shapes are those of snapshot_factory.sample_tensors."""
    model = _Holder()
    model.embed, model.layer, model.head, model.rope = _Holder(), _Holder(), _Holder(), _Holder()
    model.embed.weight = nn.Parameter(torch.empty(1024, 1536, dtype=torch.bfloat16))
    model.layer.norm = nn.Parameter(torch.empty(7, dtype=torch.bfloat16))
    model.layer.proj = nn.Parameter(torch.empty(*proj_shape, dtype=torch.bfloat16))
    model.head.weight = model.embed.weight  # tied, as lm_head and embed_tokens are
    model.register_buffer("step", torch.empty((), dtype=torch.int64))
    model.empty = nn.Parameter(torch.empty(0, 4, dtype=torch.bfloat16))
    model.rope.register_buffer("a", torch.empty(3, 4), persistent=False)
    model.rope.register_buffer("b", torch.empty(3, 4), persistent=False)
    if extra:
        model.register_buffer(extra, torch.empty(2))
    return model


@pytest.fixture
def snap(tmp_path):
    path = tmp_path / "m.swsnap"
    write_sample(path)
    return path


def _load(path, build, method="auto"):
    return build_from_snapshot(build, path, kind="chat", dtype=torch.bfloat16, device="cpu", method=method)


@pytest.mark.parametrize("method", ["mmap", "read"])
def test_every_tensor_lands_in_its_slot(snap, method):
    model = _load(snap, _tiny, method)
    expected = sample_tensors()
    got = {slot.name: slot.current for slot in tensor_slots(model)}
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    assert model.head.weight is model.embed.weight  # still one parameter
    assert isinstance(model.layer.proj, nn.Parameter) and "step" in model._buffers
    assert not model.training
    assert all(t.device.type == "cpu" for t in got.values())
    assert is_mapped(snap) == (method == "mmap")


def test_skeleton_is_built_on_meta(snap):
    devices = []

    def build():
        devices.append(torch.empty(1).device.type)
        return _tiny()

    _load(snap, build)
    assert devices == ["meta"]


def test_a_failing_build_leaves_nothing_mapped(snap):
    def build():
        raise RuntimeError("no such model class")

    with pytest.raises(RuntimeError, match="no such model class"):
        _load(snap, build)
    gc.collect()
    assert not is_mapped(snap)


def test_a_tensor_the_file_lacks_is_named(snap):
    with pytest.raises(SnapshotMissingTensorError) as info:
        _load(snap, lambda: _tiny(extra="scale"))
    assert info.value.tensor == "scale" and info.value.path == snap
    del info
    gc.collect()
    assert not is_mapped(snap)


def test_a_shape_mismatch_is_named(snap):
    with pytest.raises(SnapshotMismatchError) as info:
        _load(snap, lambda: _tiny(proj_shape=(65, 33)))
    assert info.value.tensor == "layer.proj"
    assert "(33, 65)" in str(info.value) and "(65, 33)" in str(info.value)


def test_a_snapshot_of_another_kind_is_refused(snap):
    with pytest.raises(SnapshotMismatchError, match="a chat model, expected an embedding model"):
        build_from_snapshot(_tiny, snap, kind="embedding", dtype=torch.bfloat16, device="cpu")
