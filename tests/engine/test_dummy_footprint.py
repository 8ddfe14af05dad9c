"""Dummy weights (load_format "dummy") are served from a folder without weight files: the
footprint counts the parameters the config builds, exactly what the safetensors headers count."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from swiftserve.config import EngineConfig
from swiftserve.engine.chat_model import LocalChatModel
from swiftserve.engine.footprint import chat_footprint
from swiftserve.loader import load_config, resolve_model
from swiftserve.loader.snapshot_modules import meta_skeleton
from swiftserve.models.llama import LlamaForCausalLM
from swiftserve.models.llama_config import LlamaConfig

from .tiny_chat import TINY_CONFIG

ARGS = (16, 64)  # block_size, max_model_len
# TINY_CONFIG by hand: tied embeddings once; per layer q, k, v, o, gate, up, down and two norms.
_H, _I, _Q, _KV = 64, 128, 4 * 32, 2 * 32
TINY_PARAMS = 49152 * _H + 2 * (_H * _Q * 2 + 2 * _H * _KV + 3 * _H * _I + 2 * _H) + _H


def _meta_bytes(hf_config: dict, dtype: torch.dtype) -> int:
    with meta_skeleton():
        model = LlamaForCausalLM(LlamaConfig.from_hf(hf_config)).to(dtype)
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _config_only(folder: Path, hf_config: dict) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(hf_config))
    return folder


def test_a_config_only_folder_has_the_footprint_of_the_model_it_builds(tmp_path) -> None:
    folder = _config_only(tmp_path / "tiny", TINY_CONFIG)
    fp = chat_footprint(folder, TINY_CONFIG, torch.bfloat16, *ARGS, load_format="dummy")
    assert fp.weight_bytes == TINY_PARAMS * 2 == _meta_bytes(TINY_CONFIG, torch.bfloat16)
    with pytest.raises(FileNotFoundError):  # real weights are still read from the files
        chat_footprint(folder, TINY_CONFIG, torch.bfloat16, *ARGS)


def test_untied_embeddings_count_twice(tmp_path) -> None:
    untied = TINY_CONFIG | {"tie_word_embeddings": False}
    folder = _config_only(tmp_path / "untied", untied)
    fp = chat_footprint(folder, untied, torch.float32, *ARGS, load_format="dummy")
    assert fp.weight_bytes == (TINY_PARAMS + 49152 * _H) * 4 == _meta_bytes(untied, torch.float32)


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma-3-270m"])
def test_the_config_count_is_the_safetensors_count(name) -> None:
    folder = resolve_model(name)
    hf_config = load_config(folder)
    dummy = chat_footprint(folder, hf_config, torch.bfloat16, *ARGS, load_format="dummy")
    assert dummy == chat_footprint(folder, hf_config, torch.bfloat16, *ARGS)


def test_a_dummy_chat_model_needs_no_weight_files(smollm_dir, tmp_path, executor) -> None:
    folder = _config_only(tmp_path / "tiny", TINY_CONFIG)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(smollm_dir / name, folder / name)
    config = EngineConfig(model=str(folder), load_format="dummy", dtype="float32", max_model_len=64)
    model = LocalChatModel("tiny", config, executor)
    assert model.footprint().weight_bytes == TINY_PARAMS * 4
