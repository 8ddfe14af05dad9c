"""Small synthetic snapshots for the format, reader and writer tests, and ways to damage them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from swiftserve.loader.snapshot_format import (
    PREAMBLE,
    SnapshotHeader,
    SnapshotMeta,
    SourceKey,
    TokenizerFiles,
    decode_header,
    encode_header,
    pack_preamble,
)
from swiftserve.loader.snapshot_writer import write_snapshot

META = SnapshotMeta(
    kind="chat",
    hf_config={"model_type": "llama", "rope_scaling": None, "eps": 1e-5, "ids": [1, 2]},
    tokenizer=TokenizerFiles("{}", {"tokenizer_config.json": "{}"}),
    dtype="bfloat16",
    source=SourceKey(spec="tiny", dtype="bfloat16"),
    chat_template="{{ messages }}",
)


def sample_tensors() -> dict[str, torch.Tensor]:
    """Sizes on both sides of the 2 MiB alignment rule, a tied pair, a scalar and an empty one."""
    generator = torch.Generator().manual_seed(0)
    big = torch.randn(1024, 1536, generator=generator).bfloat16()  # 3 MiB
    return {
        "embed.weight": big,
        "layer.norm": torch.randn(7, generator=generator).bfloat16(),
        "layer.proj": torch.randn(33, 65, generator=generator).bfloat16(),
        "head.weight": big,  # tied to embed.weight: the same tensor object
        "step": torch.tensor(3, dtype=torch.int64),
        "empty": torch.empty(0, 4, dtype=torch.bfloat16),
        "rope.a": torch.arange(12, dtype=torch.float32).reshape(3, 4),
        "rope.b": torch.arange(12, dtype=torch.float32).reshape(3, 4),  # equal to rope.a, not the same
    }


BUFFERS = frozenset({"rope.a", "rope.b"})


def write_sample(path: Path) -> SnapshotHeader:
    return write_snapshot(path, sample_tensors(), META, BUFFERS)


def rewrite_header(path: Path, change: Callable[[SnapshotHeader], SnapshotHeader]) -> None:
    """Replaces the header in place (it must still end before the data section)."""
    data = bytearray(path.read_bytes())
    (_, _, _, length) = PREAMBLE.unpack(data[: PREAMBLE.size])
    header = change(decode_header(bytes(data[PREAMBLE.size : PREAMBLE.size + length])))
    encoded = encode_header(header)
    assert PREAMBLE.size + len(encoded) <= header.data_offset
    data[: PREAMBLE.size + len(encoded)] = pack_preamble(len(encoded)) + encoded
    path.write_bytes(bytes(data))


def replace_entry(header: SnapshotHeader, name: str, **changes) -> SnapshotHeader:
    tensors = tuple(dataclasses.replace(e, **changes) if e.name == name else e for e in header.tensors)
    return dataclasses.replace(header, tensors=tensors)


def drop_entry(header: SnapshotHeader, name: str) -> SnapshotHeader:
    return dataclasses.replace(header, tensors=tuple(e for e in header.tensors if e.name != name))


def is_mapped(path: Path) -> bool:
    """Whether any mapping of this process still refers to path (Linux)."""
    return str(path.resolve()) in Path("/proc/self/maps").read_text()
