"""Reading a Hugging Face folder: config.json and safetensors weights (single file or sharded)."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

INDEX_FILE = "model.safetensors.index.json"
_MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit


def load_config(folder: Path) -> dict:
    """The model's config.json as a dict (a snapshot file's copy of it, for a snapshot);
    ValueError when it is missing or not a JSON object."""
    if Path(folder).is_file():
        from swiftserve.loader.snapshot_reader import read_index

        return read_index(folder).meta.hf_config
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ValueError(f"{folder}: no config.json (not a Hugging Face model folder)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: invalid JSON: {error}") from error
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def iter_weights(folder: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of the folder's safetensors files as (name, CPU tensor), file by file.

    Each file's header is checked against its size before any tensor is read, so a truncated
    download or a corrupt file raises ValueError naming the file instead of failing deep inside.
    """
    for path, expected_names in _weight_files(Path(folder)):
        names = _checked_tensor_names(path)
        missing = expected_names - names
        if missing:
            raise ValueError(f"{path}: {INDEX_FILE} lists tensors this file lacks: {sorted(missing)[:5]}")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as file:
                for name in file.keys():
                    yield name, file.get_tensor(name)
        except SafetensorError as error:
            raise ValueError(f"{path}: unreadable safetensors file: {error}") from error


def _weight_files(folder: Path) -> list[tuple[Path, set[str]]]:
    """The safetensors files to read, each with the tensor names the index promises it holds."""
    index_path = folder / INDEX_FILE
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{index_path}: invalid index ({error!r})") from error
        by_file: dict[str, set[str]] = {}
        for name, file_name in weight_map.items():
            by_file.setdefault(file_name, set()).add(name)
        files = [(folder / file_name, names) for file_name, names in sorted(by_file.items())]
        for path, _ in files:
            if not path.is_file():
                raise ValueError(f"{path}: listed in {INDEX_FILE} but missing")
        return files
    paths = sorted(folder.glob("*.safetensors"))
    if not paths:
        raise ValueError(f"{folder}: no .safetensors weight files")
    return [(path, set()) for path in paths]


def _checked_tensor_names(path: Path) -> set[str]:
    """Parses the header (u64 little-endian length, then JSON) and checks every tensor fits in the file."""
    file_size = path.stat().st_size
    with open(path, "rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise ValueError(
                f"{path}: not a safetensors file ({file_size} bytes, shorter than the header length)"
            )
        (header_size,) = struct.unpack("<Q", prefix)
        if header_size > _MAX_HEADER_BYTES or 8 + header_size > file_size:
            raise ValueError(
                f"{path}: corrupt or truncated safetensors file (header claims {header_size} bytes, "
                f"file has {file_size})"
            )
        raw_header = file.read(header_size)
    try:
        header = json.loads(raw_header)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: corrupt safetensors header (invalid JSON: {error})") from error
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupt safetensors header (not a JSON object)")
    data_size = file_size - 8 - header_size
    header.pop("__metadata__", None)
    for name, info in header.items():
        try:
            _, end = info["data_offsets"]
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: corrupt safetensors header entry for {name!r}") from error
        if end > data_size:
            raise ValueError(
                f"{path}: truncated safetensors file: tensor {name!r} ends at byte {end} of the data "
                f"but only {data_size} bytes are present"
            )
    return set(header)
