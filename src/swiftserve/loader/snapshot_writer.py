"""Writing a snapshot (snapshot_format.py) from a plain tensor dict and its metadata.

The file is built under a temporary name in the target's directory, fsynced, then renamed over
the target: a reader sees the old file or the new one, never half of one. Each writer has its
own temporary file, so concurrent writers of one target cannot mix their bytes; the last rename
wins. Any failure (disk full, an exception mid-write) removes the temporary file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import torch
import xxhash

from swiftserve.loader.snapshot_format import (
    DATA_ALIGN,
    ITEMSIZE,
    PREAMBLE,
    SnapshotHeader,
    SnapshotMeta,
    TensorEntry,
    align_up,
    encode_header,
    pack_preamble,
    tensor_alignment,
)


@dataclass
class _Stored:
    """One tensor's bytes in the file and every name that refers to them."""

    tensor: torch.Tensor  # contiguous, on the CPU
    xxh3: int
    is_buffer: bool
    names: list[str] = field(default_factory=list)


_WRITE_BUFFER = 16 << 20  # small tensors and their padding reach the file in large writes
_ZEROS = memoryview(bytes(2 << 20))


def write_snapshot(
    path: str | Path,
    tensors: dict[str, torch.Tensor],
    meta: SnapshotMeta,
    buffer_names: Collection[str] = (),
) -> SnapshotHeader:
    """Writes tensors (in their order: the load order) and meta to path, atomically.

    buffer_names marks non-persistent buffers (rotary tables): buffers with equal bytes are stored
    once. Parameters are stored once per tensor object (tied weights), never merged by value.
    """
    path = Path(path)
    stored = _deduplicate(tensors, frozenset(buffer_names))
    header = _layout(stored, meta)
    with _atomic_file(path) as file:
        _write_contents(file, header, stored)
    return header


def _deduplicate(tensors: dict[str, torch.Tensor], buffer_names: frozenset[str]) -> list[_Stored]:
    stored: list[_Stored] = []
    by_identity: dict[tuple, _Stored] = {}
    by_value: dict[tuple, list[_Stored]] = {}
    for name, tensor in tensors.items():
        if str(tensor.dtype).removeprefix("torch.") not in ITEMSIZE:
            raise ValueError(f"tensor {name!r}: dtype {tensor.dtype} cannot be stored in a snapshot")
        identity = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride(), tensor.device)
        item = by_identity.get(identity) or _store(tensor, name in buffer_names, stored, by_value)
        by_identity[identity] = item
        item.names.append(name)
    return stored


def _store(
    tensor: torch.Tensor, is_buffer: bool, stored: list[_Stored], by_value: dict[tuple, list[_Stored]]
) -> _Stored:
    """The stored copy of tensor: a new one, or for a buffer an equal buffer's."""
    data = tensor.detach().to("cpu").contiguous()
    key = _value_key(data, xxhash.xxh3_64_intdigest(_bytes_of(data)))
    for item in by_value.get(key, []) if is_buffer else []:
        if item.is_buffer and torch.equal(item.tensor, data):  # a hash match alone is not proof
            return item
    item = _Stored(data, key[2], is_buffer)
    stored.append(item)
    by_value.setdefault(key, []).append(item)
    return item


def _value_key(data: torch.Tensor, checksum: int) -> tuple:
    return (data.dtype, tuple(data.shape), checksum)


def _bytes_of(data: torch.Tensor) -> memoryview:
    """The raw bytes of a contiguous CPU tensor, without a copy (numpy has no bfloat16: view as bytes)."""
    return memoryview(data.reshape(-1).view(torch.uint8).numpy())


def _layout(stored: list[_Stored], meta: SnapshotMeta) -> SnapshotHeader:
    """Offsets for every tensor; the data section starts past the header, which holds the offsets,
    so the header is re-encoded until its own length fits before the data."""
    data_offset = DATA_ALIGN
    while True:
        header = _header_at(stored, meta, data_offset)
        needed = align_up(PREAMBLE.size + len(encode_header(header)), DATA_ALIGN)
        if needed <= data_offset:
            return header
        data_offset = needed


def _header_at(stored: list[_Stored], meta: SnapshotMeta, data_offset: int) -> SnapshotHeader:
    entries: list[TensorEntry] = []
    end = data_offset
    for item in stored:
        nbytes = item.tensor.numel() * item.tensor.element_size()
        offset = align_up(end, tensor_alignment(nbytes))
        dtype = str(item.tensor.dtype).removeprefix("torch.")
        shape = tuple(item.tensor.shape)
        for name in item.names:
            entries.append(TensorEntry(name, dtype, shape, offset, nbytes, item.xxh3, item.is_buffer))
        end = offset + max(nbytes, 1)  # an empty tensor still gets an offset of its own
    return SnapshotHeader(meta=meta, tensors=tuple(entries), data_offset=data_offset, file_size=end)


def _write_contents(file: BinaryIO, header: SnapshotHeader, stored: list[_Stored]) -> None:
    encoded = encode_header(header)
    file.write(pack_preamble(len(encoded)))
    file.write(encoded)
    offsets = {entry.name: entry.offset for entry in header.tensors}
    for item in stored:
        # Zeros, not a hole, before each tensor: one sequential stream of large writes fills
        # the page cache with 2 MiB folios, which a load maps with one entry per 2 MiB
        # (snapshot_memory._populate); holes and seeks leave 4 KiB ones (22 ms to map SmolLM2
        # right after its export, instead of 0.3). The gaps cost ~12% of the file on disk.
        _pad_to(file, offsets[item.names[0]])
        file.write(_bytes_of(item.tensor))
    _pad_to(file, header.file_size)


def _pad_to(file: BinaryIO, offset: int) -> None:
    gap = offset - file.tell()
    while gap > 0:
        step = min(gap, len(_ZEROS))
        file.write(_ZEROS[:step])
        gap -= step


@contextmanager
def _atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A new file that replaces path only when the block finishes; removed on any failure."""
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb", buffering=_WRITE_BUFFER) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp_name, 0o644)  # mkstemp makes it owner-only; a model file is for every user
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(folder: Path) -> None:
    """Makes the rename itself durable; some file systems cannot open a directory (ignored)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
