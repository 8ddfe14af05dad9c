"""Reading a snapshot (snapshot_format.py): a validated header, then the tensors.

Before any tensor is made, the preamble, version and header are checked and every index entry
must lie inside the file; the tensors the caller requires must all be there. A failure raises a
SnapshotError subclass naming the file (and the tensor) and leaves nothing mapped or allocated.

Two ways to get the tensors (snapshot_memory.py):
- "mmap": the file mapped copy-on-write, tensors are views of the mapping, so a file in the page
  cache loads without a copy and its pages are shared with the cache. The tensors own the
  mapping: it is unmapped when the last of them is freed (the model unloaded).
- "read": fresh memory, filled by large reads (the native multi-threaded reader when _C has
  it). The only way for a non-CPU device: on CUDA the reads go through a ring of pinned host
  buffers whose asynchronous copies to the device overlap the next reads (staged_read.py).
"auto" on CPU maps a file that is in the page cache and reads one that is not (MAPPED_SHARE).
Checksums are verified when verify=True, and with verify=None on the first use of a file
(snapshot_verified.py records the files already verified).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

import msgspec
import torch
import xxhash

from swiftserve.loader.page_cache import sampled_share
from swiftserve.loader.snapshot_errors import (
    SnapshotChecksumError,
    SnapshotCorruptError,
    SnapshotFormatError,
    SnapshotMissingTensorError,
    SnapshotTruncatedError,
    SnapshotVersionError,
)
from swiftserve.loader.snapshot_format import (
    FORMAT_VERSION,
    MAGIC,
    MAX_HEADER_BYTES,
    PREAMBLE,
    SUFFIX,
    SnapshotHeader,
    SnapshotIndex,
    TensorEntry,
    decode_header,
    decode_index,
)
from swiftserve.loader.snapshot_memory import StoredBytes, map_tensors, read_tensors
from swiftserve.loader.snapshot_verified import file_identity, is_verified, record_verified

METHODS = ("auto", "mmap", "read")
# "auto" on CPU maps the file when at least this share of it is in the page cache, else reads it.
# Measured here (benchmarks/cold_start.py, SmolLM2's 300 MiB snapshot, evicted; 2 vCPU VM, ext4):
# mapping a cold file faults it in at 0.35-0.9 s, while large buffered reads into fresh memory
# take 0.24-0.30 s (the reads keep the disk's queue full; faults, even with 2 MiB folios, come a
# few at a time); warm, the mapping costs no copy (~1 ms populated) where a read copies the file.
MAPPED_SHARE = 0.9
Header = TypeVar("Header", SnapshotHeader, SnapshotIndex)


@dataclass(frozen=True)
class Snapshot:
    """A loaded snapshot: its header and every tensor by name (views that share storage where
    the index shares offsets)."""

    path: Path
    header: SnapshotIndex
    tensors: dict[str, torch.Tensor]
    method: str  # "mmap" or "read"


def is_snapshot(path: str | Path) -> bool:
    """A file named *.swsnap, or any file that starts with the snapshot magic."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix == SUFFIX:
        return True
    with open(path, "rb") as file:
        return file.read(len(MAGIC)) == MAGIC


def read_header(path: str | Path) -> SnapshotHeader:
    """The validated header (see the module docstring), tokenizer included; reads no tensor."""
    path = Path(path)
    with open(path, "rb") as file:
        return _read_header(file, path, decode_header)


def read_index(path: str | Path) -> SnapshotIndex:
    """read_header without the tokenizer and chat template: far cheaper (no 33 MB of text to
    build for Gemma), for everything but the tokenizer."""
    path = Path(path)
    with open(path, "rb") as file:
        return _read_header(file, path, decode_index)


def load_snapshot(
    path: str | Path,
    *,
    required: Collection[str] = (),
    device: str | torch.device = "cpu",
    method: str = "auto",
    verify: bool | None = None,
    num_threads: int | None = None,
) -> Snapshot:
    """Every tensor of the snapshot at path, on device.

    required: names that must be in the index (SnapshotMissingTensorError otherwise). method:
    "auto" (on CPU mmap if the file is in the page cache, else read), "mmap" or "read".
    verify: True checks every checksum, False none, None only on the first use of this file.
    num_threads: the read path's reader threads (None: chunk_read's default, measured here).
    """
    path, device = Path(path), torch.device(device)
    _check_method(method, device)
    with open(path, "rb") as file:
        header = _read_header(file, path, decode_index)
        _check_required(path, header, required)
        if method == "auto":
            method = _auto_method(file, header, device)
        identity = file_identity(file.fileno())
        must_verify = verify if verify is not None else not is_verified(path, identity)
        check = (lambda stored: _verify(path, stored)) if must_verify else None
        if method == "mmap":
            tensors = map_tensors(file, header.tensors, check)
        else:
            tensors = read_tensors(file, path, header.tensors, check, device, num_threads)
    if must_verify:
        record_verified(path, identity)
    return Snapshot(path, header, tensors, method)


def resolve_method(path: str | Path, device: str | torch.device, method: str = "auto") -> str:
    """The method load_snapshot would use right now: "mmap" or "read" (it decides again when
    called: the page cache may change in between)."""
    path, device = Path(path), torch.device(device)
    _check_method(method, device)
    if method != "auto":
        return method
    with open(path, "rb") as file:
        return _auto_method(file, _read_header(file, path, decode_index), device)


def _check_method(method: str, device: torch.device) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "mmap" and device.type != "cpu":
        raise ValueError(f"method 'mmap' maps the file into host memory; device {device} needs 'read'")


def _auto_method(file: BinaryIO, header: SnapshotIndex, device: torch.device) -> str:
    if device.type != "cpu":
        return "read"
    spans = {(entry.offset, entry.nbytes) for entry in header.tensors}  # tied names share a span
    return "mmap" if sampled_share(file.fileno(), sorted(spans)) >= MAPPED_SHARE else "read"


def _read_header(file: BinaryIO, path: Path, decode: Callable[[bytes], Header]) -> Header:
    size = os.fstat(file.fileno()).st_size
    preamble = file.read(PREAMBLE.size)
    if preamble[: len(MAGIC)] != MAGIC:
        raise SnapshotFormatError(path, "not a swiftserve snapshot (wrong magic)")
    if len(preamble) < PREAMBLE.size:
        raise SnapshotTruncatedError(path, f"truncated inside the preamble ({size} bytes)")
    _, version, _, header_length = PREAMBLE.unpack(preamble)
    if version != FORMAT_VERSION:
        raise SnapshotVersionError(
            path, f"format version {version}, this swiftserve reads version {FORMAT_VERSION}"
        )
    if header_length > MAX_HEADER_BYTES:
        raise SnapshotCorruptError(path, f"header length {header_length} is past the limit")
    if PREAMBLE.size + header_length > size:
        raise SnapshotTruncatedError(path, f"the header claims {header_length} bytes, the file has {size}")
    try:
        header = decode(file.read(header_length))
    except msgspec.DecodeError as error:
        raise SnapshotCorruptError(path, f"undecodable header: {error}") from error
    _check_index(path, header, PREAMBLE.size + header_length, size)
    return header


def _check_index(path: Path, header: SnapshotHeader | SnapshotIndex, header_end: int, size: int) -> None:
    if header.data_offset < header_end:
        raise SnapshotCorruptError(path, f"data offset {header.data_offset} is inside the header")
    for entry in header.tensors:
        if entry.offset < header.data_offset or entry.end > header.file_size:
            raise SnapshotCorruptError(
                path,
                f"bytes [{entry.offset}, {entry.end}) lie outside the data section "
                f"[{header.data_offset}, {header.file_size})",
                entry.name,
            )
    if size < header.file_size:
        cut = next(e for e in header.tensors if e.end > size)
        raise SnapshotTruncatedError(
            path, f"truncated: the file has {size} bytes, the index needs {header.file_size}", cut.name
        )


def _check_required(path: Path, header: SnapshotIndex, required: Collection[str]) -> None:
    missing = sorted(set(required) - header.entries().keys())
    if missing:
        more = f" (and {len(missing) - 1} more: {missing[1:5]})" if len(missing) > 1 else ""
        raise SnapshotMissingTensorError(path, f"missing from the snapshot{more}", missing[0])


def _verify(path: Path, stored: StoredBytes) -> None:
    digest = stored.digest if stored.digest is not None else xxhash.xxh3_64_intdigest(stored.data)
    if digest != stored.entry.xxh3:
        raise SnapshotChecksumError(path, "checksum mismatch (the file is corrupt)", stored.entry.name)


def unique_parameters(header: SnapshotHeader | SnapshotIndex) -> list[TensorEntry]:
    """One entry per stored parameter (tied names share one), buffers left out: what the weights cost."""
    seen: set[tuple] = set()
    unique = []
    for entry in header.tensors:
        if not entry.is_buffer and entry.stored_key not in seen:
            seen.add(entry.stored_key)
            unique.append(entry)
    return unique
