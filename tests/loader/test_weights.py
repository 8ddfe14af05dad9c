"""load_config and iter_weights: single and sharded folders, and clear errors on damaged files."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from swiftserve.loader import iter_weights, load_config


def _tensors():
    gen = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(4, 3, generator=gen),
        "b.weight": torch.randn(7, generator=gen).to(torch.bfloat16),
        "c.bias": torch.arange(5, dtype=torch.int64),
        "d.weight": torch.randn(2, 2, 2, generator=gen).to(torch.float16),
    }


def _write_sharded(folder):
    tensors = _tensors()
    shards = {
        "model-00001-of-00002.safetensors": ["a.weight", "c.bias"],
        "model-00002-of-00002.safetensors": ["b.weight", "d.weight"],
    }
    weight_map = {}
    for file_name, names in shards.items():
        save_file({n: tensors[n] for n in names}, str(folder / file_name), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(names, file_name)
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    return tensors


def _assert_same(loaded, expected):
    assert set(loaded) == set(expected)
    for name, tensor in expected.items():
        assert loaded[name].dtype == tensor.dtype and loaded[name].device.type == "cpu"
        assert torch.equal(loaded[name], tensor), name


def test_sharded_folder(tmp_path):
    expected = _write_sharded(tmp_path)
    _assert_same(dict(iter_weights(tmp_path)), expected)


def test_single_file_folder(tmp_path):
    expected = _tensors()
    save_file(expected, str(tmp_path / "model.safetensors"))
    _assert_same(dict(iter_weights(tmp_path)), expected)


def test_real_models_load(smollm_dir, minilm_dir):
    smollm = dict(iter_weights(smollm_dir))
    assert len(smollm) == 2 + 30 * 9 and smollm["model.embed_tokens.weight"].shape == (49152, 576)
    assert all(t.dtype == torch.bfloat16 for t in smollm.values())
    minilm = dict(iter_weights(minilm_dir))
    assert minilm["embeddings.word_embeddings.weight"].shape == (30522, 384)


def test_truncated_file_names_file(tmp_path):
    save_file(_tensors(), str(tmp_path / "model.safetensors"))
    path = tmp_path / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(ValueError, match=r"model\.safetensors.*truncated"):
        list(iter_weights(tmp_path))
    path.write_bytes(data[:20])  # cut inside the header
    with pytest.raises(ValueError, match=r"model\.safetensors.*(corrupt|truncated)"):
        list(iter_weights(tmp_path))
    path.write_bytes(data[:3])
    with pytest.raises(ValueError, match=r"model\.safetensors.*not a safetensors file"):
        list(iter_weights(tmp_path))


def test_garbage_header_names_file(tmp_path):
    path = tmp_path / "model-00001-of-00001.safetensors"
    header = b"this is not json at all!"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)
    with pytest.raises(ValueError, match=r"model-00001-of-00001\.safetensors.*invalid JSON"):
        list(iter_weights(tmp_path))
    path.write_bytes(b"\xff" * 100)  # absurd header length
    with pytest.raises(ValueError, match=r"model-00001-of-00001\.safetensors.*corrupt"):
        list(iter_weights(tmp_path))
    header = json.dumps({"x": {"dtype": "F32", "shape": [2], "data_offsets": "nonsense"}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(ValueError, match=r"model-00001-of-00001\.safetensors.*'x'"):
        list(iter_weights(tmp_path))


def test_bad_tensor_data_is_wrapped(tmp_path):
    # A header that fits the file but describes a tensor whose size disagrees with its shape.
    header = json.dumps({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(ValueError, match=r"model\.safetensors"):
        list(iter_weights(tmp_path))


def test_sharded_index_problems(tmp_path):
    _write_sharded(tmp_path)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ValueError, match=r"model-00002-of-00002\.safetensors.*missing"):
        list(iter_weights(tmp_path))
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    index["weight_map"]["ghost.weight"] = "model-00001-of-00002.safetensors"
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v.startswith("model-00001")}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"model-00001-of-00002\.safetensors.*ghost\.weight"):
        list(iter_weights(tmp_path))
    (tmp_path / "model.safetensors.index.json").write_text("{")
    with pytest.raises(ValueError, match=r"index\.json.*invalid"):
        list(iter_weights(tmp_path))


def test_folder_without_weights(tmp_path):
    with pytest.raises(ValueError, match="no .safetensors"):
        list(iter_weights(tmp_path))


def test_load_config(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text("{ not json")
    with pytest.raises(ValueError, match=r"config\.json: invalid JSON"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    assert load_config(tmp_path) == {"model_type": "llama"}
