"""A model's resident bytes, known before it loads: from safetensors headers and its config.

Dummy weights (load_format "dummy") are never read, so the folder may hold none: their count is
that of the model the config builds, on the meta device (model_runner/model_loader.py).

Nothing here reads a tensor: a safetensors file starts with an 8-byte little-endian header
length and a JSON header naming every tensor's shape, so the parameter count is exact (tied
embeddings are stored once, as they are held once) and costs a few kilobytes of reading.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import torch

from swiftserve.engine.served_model import Footprint
from swiftserve.model_runner.model_loader import built_num_parameters

_HEADER_LEN = struct.Struct("<Q")


def num_parameters(folder: Path) -> int:
    """Elements of every tensor in the folder's *.safetensors files (shapes from headers only),
    or of every stored parameter of a snapshot file (its index; tied ones once, buffers not)."""
    if folder.is_file():
        from swiftserve.loader.snapshot_reader import read_index, unique_parameters

        return sum(math.prod(entry.shape) for entry in unique_parameters(read_index(folder)))
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {folder}")
    return sum(_num_elements(path) for path in files)


def chat_num_parameters(folder: Path, hf_config: dict, load_format: str = "auto") -> int:
    """What a chat load holds: a snapshot has its own weights whatever load_format says."""
    if load_format == "dummy" and not folder.is_file():
        return built_num_parameters(hf_config)
    return num_parameters(folder)


def _num_elements(path: Path) -> int:
    with path.open("rb") as f:
        (length,) = _HEADER_LEN.unpack(f.read(_HEADER_LEN.size))
        header = json.loads(f.read(length))
    return sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")


def kv_block_bytes(hf_config: dict, block_size: int, dtype: torch.dtype) -> int:
    """K and V of block_size tokens over all layers, as model_runner/kv_cache.py allocates them."""
    num_heads = hf_config["num_attention_heads"]
    num_kv_heads = hf_config.get("num_key_value_heads") or num_heads
    head_dim = hf_config.get("head_dim") or hf_config["hidden_size"] // num_heads
    per_token = 2 * hf_config["num_hidden_layers"] * num_kv_heads * head_dim * dtype.itemsize
    return per_token * block_size


def max_kv_tokens(hf_config: dict, block_size: int, dtype: torch.dtype, kv_cache_memory: int) -> int:
    """Tokens in the whole blocks that kv_cache_memory holds, as the model runner sizes its cache."""
    return kv_cache_memory // kv_block_bytes(hf_config, block_size, dtype) * block_size


def chat_footprint(
    folder: Path,
    hf_config: dict,
    dtype: torch.dtype,
    block_size: int,
    max_model_len: int,
    load_format: str = "auto",
) -> Footprint:
    """Weights in the serving dtype (not the file's), and KV blocks for one full-length sequence."""
    return Footprint(
        weight_bytes=chat_num_parameters(folder, hf_config, load_format) * dtype.itemsize,
        kv_block_bytes=kv_block_bytes(hf_config, block_size, dtype),
        kv_floor_blocks=math.ceil(max_model_len / block_size),
    )


def encoder_footprint(folder: Path, dtype: torch.dtype) -> Footprint:
    """An encoder keeps no KV cache between calls: weights only."""
    return Footprint(
        weight_bytes=num_parameters(folder) * dtype.itemsize, kv_block_bytes=0, kv_floor_blocks=0
    )
