"""The snapshot file format: one file per model, laid out so that loading is a few large reads.

    offset 0                 preamble: magic (8 bytes), format version (u32), reserved (u32),
                             header length (u64), all little-endian
    offset 24                header: SnapshotHeader, msgpack-encoded with msgspec
    data_offset (2 MiB k)    tensors, in load order, each at a 4 KiB boundary, and a tensor of
                             2 MiB or more at a 2 MiB boundary (direct I/O, large pages);
                             the gaps are holes in the file (never written)

Tensors are stored exactly as the runtime holds them (fused layouts, serving dtype), so a load
never reshapes or converts. Two names may share one stored tensor (tied embeddings, identical
constant tables). Offsets in the index are absolute file offsets.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import msgspec

from swiftserve.config import ModelKind

MAGIC = b"SWSNAP\x00\x00"
FORMAT_VERSION = 1
SUFFIX = ".swsnap"
PREAMBLE = struct.Struct("<8sIIQ")  # magic, version, reserved, header length
DATA_ALIGN = 2 << 20  # the data section and large tensors start at 2 MiB (huge pages)
TENSOR_ALIGN = 4 << 10  # every tensor starts at 4 KiB (direct I/O, pages)
LARGE_TENSOR = 2 << 20
MAX_HEADER_BYTES = 1 << 30  # the tokenizer is the largest part (Gemma's is ~33 MB)
KINDS = ("chat", "embedding")
# Stored dtypes and their element sizes; names are torch's (torch.bfloat16 -> "bfloat16").
ITEMSIZE = {
    "float32": 4,
    "bfloat16": 2,
    "float16": 2,
    "float64": 8,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
}


def align_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def tensor_alignment(nbytes: int) -> int:
    return DATA_ALIGN if nbytes >= LARGE_TENSOR else TENSOR_ALIGN


@dataclass(frozen=True)
class TensorEntry:
    """One named tensor: where its bytes are and what they must hash to (xxh3_64)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    xxh3: int
    is_buffer: bool = False  # a non-persistent buffer (a rotary table), not a parameter

    def __post_init__(self) -> None:
        if self.dtype not in ITEMSIZE:
            raise ValueError(f"tensor {self.name!r}: unknown dtype {self.dtype!r}")
        if any(d < 0 for d in self.shape):
            raise ValueError(f"tensor {self.name!r}: negative dimension in {self.shape}")
        if self.nbytes != math.prod(self.shape) * ITEMSIZE[self.dtype]:
            raise ValueError(
                f"tensor {self.name!r}: {self.nbytes} bytes do not match {self.dtype}{self.shape}"
            )
        if self.offset % TENSOR_ALIGN:
            raise ValueError(f"tensor {self.name!r}: offset {self.offset} is not 4 KiB-aligned")

    @property
    def end(self) -> int:
        return self.offset + self.nbytes

    @property
    def stored_key(self) -> tuple:
        """Entries with equal keys are one stored tensor (tied names share it)."""
        return (self.offset, self.nbytes, self.dtype, self.shape)


@dataclass(frozen=True)
class TokenizerFiles:
    """tokenizer.json's text and the JSON files around it (tokenizer_config.json,
    special_tokens_map.json, generation_config.json), by file name, as they were in the folder."""

    tokenizer_json: str
    config_files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PoolingSpec:
    """A sentence encoder's head as the BERT loader resolved it from the folder."""

    mode: str
    normalize: bool
    max_seq_length: int


@dataclass(frozen=True)
class SourceKey:
    """What the snapshot was made from: an automatic snapshot is stale when this differs."""

    spec: str
    dtype: str
    format_version: int = FORMAT_VERSION
    fingerprint: str = ""  # of the source's files (snapshot_cache.py); "" when not tracked


@dataclass(frozen=True)
class SnapshotMeta:
    """Everything but the tensors: what the writer is given besides the tensor dict."""

    kind: ModelKind
    hf_config: dict[str, Any]
    tokenizer: TokenizerFiles
    dtype: str
    source: SourceKey
    chat_template: str | None = None
    pooling: PoolingSpec | None = None
    warm: dict[str, Any] = field(default_factory=dict)  # load-time state (tuned configs, ...)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"snapshot kind must be one of {KINDS}, got {self.kind!r}")
        if self.dtype not in ITEMSIZE:
            raise ValueError(f"unknown serving dtype {self.dtype!r}")
        if self.kind == "embedding" and self.pooling is None:
            raise ValueError("an embedding snapshot needs its pooling config")


@dataclass(frozen=True)
class ModelSummary:
    """SnapshotMeta without the tokenizer and chat template: what loading the weights needs.

    Decoding a header into SnapshotIndex skips those fields without building them (Gemma's
    tokenizer.json alone is ~33 MB of text), so the load path reads the header at index speed.
    """

    kind: ModelKind
    hf_config: dict[str, Any]
    dtype: str
    source: SourceKey
    pooling: PoolingSpec | None = None
    warm: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SnapshotHeader:
    """The decoded header: the metadata, the index in load order, and the file's layout."""

    meta: SnapshotMeta
    tensors: tuple[TensorEntry, ...]
    data_offset: int
    file_size: int

    def __post_init__(self) -> None:
        _check_layout(self.data_offset, self.tensors)

    def entries(self) -> dict[str, TensorEntry]:
        return {entry.name: entry for entry in self.tensors}


@dataclass(frozen=True)
class SnapshotIndex:
    """The same header decoded with a ModelSummary for its metadata (see there)."""

    meta: ModelSummary
    tensors: tuple[TensorEntry, ...]
    data_offset: int
    file_size: int

    def __post_init__(self) -> None:
        _check_layout(self.data_offset, self.tensors)

    def entries(self) -> dict[str, TensorEntry]:
        return {entry.name: entry for entry in self.tensors}


def _check_layout(data_offset: int, tensors: tuple[TensorEntry, ...]) -> None:
    if data_offset % DATA_ALIGN:
        raise ValueError(f"data offset {data_offset} is not 2 MiB-aligned")
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise ValueError("the index names a tensor twice")


def encode_header(header: SnapshotHeader) -> bytes:
    return msgspec.msgpack.encode(header)


def decode_header(data: bytes) -> SnapshotHeader:
    """Raises msgspec.DecodeError (a msgspec.ValidationError included) on a bad header."""
    return _DECODER.decode(data)


def decode_index(data: bytes) -> SnapshotIndex:
    """decode_header without the tokenizer and template; the same errors."""
    return _INDEX_DECODER.decode(data)


_DECODER = msgspec.msgpack.Decoder(SnapshotHeader)
_INDEX_DECODER = msgspec.msgpack.Decoder(SnapshotIndex)


def pack_preamble(header_length: int) -> bytes:
    return PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, header_length)
