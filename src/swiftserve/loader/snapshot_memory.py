"""A snapshot's tensors in memory: views of a file mapping, or fresh memory filled by reads.

Both take the validated index and hand each stored tensor's bytes to `check` (checksums) before
any tensor is returned, so a failed check leaves nothing behind. Names that share an offset get
one tensor.
"""

from __future__ import annotations

import bisect
import ctypes
import mmap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
import xxhash

from swiftserve.loader.chunk_read import Chunk, aligned_empty, read_into
from swiftserve.loader.snapshot_errors import SnapshotTruncatedError
from swiftserve.loader.snapshot_format import TENSOR_ALIGN, TensorEntry, align_up
from swiftserve.loader.staged_read import CudaTransfer, Piece, StagingRing, pieces_of

_MADV_POPULATE_READ = 22  # Linux 5.14+; not in Python's mmap constants yet
_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_MADV_HUGEPAGE = 14
# (file offset, length, destination address)
ChunkSpec = tuple[int, int, int]


@dataclass(frozen=True)
class StoredBytes:
    """A stored tensor's bytes for a check; or, where they never sit whole in host memory (the
    staged device path), their xxh3 digest computed piece by piece."""

    entry: TensorEntry
    data: memoryview | bytes
    digest: int | None = None


Check = Callable[[StoredBytes], None]


def map_tensors(
    file: BinaryIO, entries: Sequence[TensorEntry], check: Check | None
) -> dict[str, torch.Tensor]:
    """Tensors as views of a copy-on-write mapping of the open file.

    Copy-on-write (MAP_PRIVATE) rather than read-only: torch assumes its tensors are writable,
    and a stray in-place write then copies one page instead of crashing the process; the file is
    never written. The page tables are populated up front (MADV_POPULATE_READ: read faults, no
    copy), so the first forward does not pay a fault per page, with 2 MiB pages where it can
    (see _populate).
    """
    unique = _unique(entries)
    mapping = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)
    try:
        _populate(mapping)
        if check is not None:
            _check_mapped(mapping, unique, check)
    except BaseException:
        mapping.close()
        raise
    by_key = {entry.stored_key: _view_of_mapping(mapping, entry) for entry in unique}
    return {entry.name: by_key[entry.stored_key] for entry in entries}


def _check_mapped(mapping: mmap.mmap, unique: list[TensorEntry], check: Check) -> None:
    # Every view is released on the way out, even on failure: a live one would keep the mapping open.
    with memoryview(mapping) as whole:
        for entry in unique:
            with whole[entry.offset : entry.end] as part:
                check(StoredBytes(entry, part))


def read_tensors(
    file: BinaryIO,
    path: Path,
    entries: Sequence[TensorEntry],
    check: Check | None,
    device: torch.device,
    num_threads: int | None,
) -> dict[str, torch.Tensor]:
    """Tensors in one fresh host allocation, each 4 KiB-aligned in it, then moved to device; on
    CUDA, one device allocation filled through the pinned staging ring (_staged_tensors).

    The bytes come from the open file whose header was checked (through /proc/self/fd), not from
    whatever path names by now: a writer may have renamed a new snapshot over it meanwhile.
    """
    if device.type == "cuda":
        return _staged_tensors(file, path, entries, check, device)
    unique, places, total = _arena_layout(entries)
    arena = aligned_empty(total)  # 4 KiB-aligned: direct I/O wants aligned destinations
    base = arena.data_ptr()
    chunks = [(e.offset, e.nbytes, base + place) for e, place in zip(unique, places, strict=True)]
    by_key: dict[tuple, torch.Tensor] = {}
    try:
        fill_buffers(_same_file(file, path), chunks, num_threads=num_threads, direct=False, name=path)
        for entry, place in zip(unique, places, strict=True):
            data = arena[place : place + entry.nbytes]
            if check is not None:
                with memoryview(data.numpy()) as view:  # released even when the check raises
                    check(StoredBytes(entry, view))
            by_key[entry.stored_key] = data.view(_dtype(entry)).view(entry.shape).to(device)
    except BaseException:
        # The traceback keeps this frame: let go of the memory now, not when the error is dropped.
        arena = data = None  # noqa: F841
        by_key.clear()
        raise
    return {entry.name: by_key[entry.stored_key] for entry in entries}


def _staged_tensors(
    file: BinaryIO, path: Path, entries: Sequence[TensorEntry], check: Check | None, device: torch.device
) -> dict[str, torch.Tensor]:
    """Tensors as views of one device allocation that the staging ring fills (staged_read.py):
    host memory used is the ring's few slots, and checksums are hashed in the slots while the
    previous slot copies to the device."""
    unique, places, total = _arena_layout(entries)
    arena = torch.empty(total, dtype=torch.uint8, device=device)
    ring = StagingRing(CudaTransfer(device))
    chunks = ((e.offset, e.nbytes, place) for e, place in zip(unique, places, strict=True))
    hashes = PieceHashes(unique, check) if check is not None else None
    try:
        ring.load(_same_file(file, path), pieces_of(chunks, ring.slot_bytes), arena, hashes and hashes.add)
    except EOFError as error:  # the file shrank after its header was checked
        raise SnapshotTruncatedError(path, str(error)) from error
    by_key = {
        e.stored_key: arena[place : place + e.nbytes].view(_dtype(e)).view(e.shape)
        for e, place in zip(unique, places, strict=True)
    }
    return {entry.name: by_key[entry.stored_key] for entry in entries}


class PieceHashes:
    """Each stored tensor's xxh3, updated piece by piece (pieces arrive in file order); the check
    runs with the digest when a tensor's last piece has been seen."""

    def __init__(self, unique: list[TensorEntry], check: Check) -> None:
        self.unique, self.check = unique, check
        self.starts = [entry.offset for entry in unique]
        self.hashers: dict[int, xxhash.xxh3_64] = {}
        for entry in unique:
            if entry.nbytes == 0:  # no piece will ever come for it
                check(StoredBytes(entry, b"", xxhash.xxh3_64_intdigest(b"")))

    def add(self, piece: Piece, staged: torch.Tensor) -> None:
        index = bisect.bisect_right(self.starts, piece.file_offset) - 1
        entry = self.unique[index]
        hasher = self.hashers.setdefault(index, xxhash.xxh3_64())
        hasher.update(staged.numpy())
        if piece.file_offset + piece.length == entry.offset + entry.nbytes:
            del self.hashers[index]
            self.check(StoredBytes(entry, b"", hasher.intdigest()))


def fill_buffers(
    path: Path, chunks: list[ChunkSpec], *, num_threads: int | None, direct: bool, name: Path | None = None
) -> None:
    """Reads each (file_offset, length) of path into its destination address: the one place the
    snapshot reader does I/O. chunk_read.read_into runs the native multi-threaded reader
    (_C.read_chunks; O_DIRECT with direct) or, without it, plain positioned reads. name: the
    file as errors call it (default: path)."""
    try:
        read_into(path, [Chunk(*chunk) for chunk in chunks], num_threads=num_threads, direct=direct)
    except EOFError as error:  # the file shrank after its header was checked
        raise SnapshotTruncatedError(name or path, str(error)) from error


def _same_file(file: BinaryIO, path: Path) -> Path:
    fd_path = Path(f"/proc/self/fd/{file.fileno()}")
    return fd_path if fd_path.exists() else path


def _unique(entries: Sequence[TensorEntry]) -> list[TensorEntry]:
    """The first entry of each stored tensor, in file order."""
    seen: dict[tuple, TensorEntry] = {}
    for entry in entries:
        seen.setdefault(entry.stored_key, entry)
    return sorted(seen.values(), key=lambda e: e.offset)


def _arena_layout(entries: Sequence[TensorEntry]) -> tuple[list[TensorEntry], list[int], int]:
    """The stored tensors in file order, each one's offset in a fresh arena (packed at 4 KiB,
    without the file's 2 MiB gaps), and the arena's size."""
    unique = _unique(entries)
    places, end = [], 0
    for entry in unique:
        places.append(end)
        end = align_up(end + entry.nbytes, TENSOR_ALIGN)
    total = places[-1] + unique[-1].nbytes if unique else 0
    return unique, places, total


def _view_of_mapping(mapping: mmap.mmap, entry: TensorEntry) -> torch.Tensor:
    dtype = _dtype(entry)
    if entry.nbytes == 0:
        return torch.empty(entry.shape, dtype=dtype)
    count = entry.nbytes // dtype.itemsize
    return torch.frombuffer(mapping, dtype=dtype, count=count, offset=entry.offset).view(entry.shape)


def _populate(mapping: mmap.mmap) -> None:
    """Maps every page of the file, in 2 MiB pages where the page cache can give them.

    MADV_HUGEPAGE on the mapping makes the faults that read a cold file read it into 2 MiB page
    cache folios (two at a time), and a 2 MiB folio at a 2 MiB-aligned offset (every large
    tensor of a snapshot starts on one) maps with one page-table entry instead of 512. Measured
    here (Linux 6.18, ext4): a warm 300 MiB snapshot populates in 0.3 ms instead of 14-24 ms
    with 4 KiB pages, a 2.5 GB one in 1.8 ms; cold, the file is read at the same 1-2 GB/s as
    without. Pages already cached in small folios still map, one entry per page.
    The calls go through ctypes, which releases the GIL (mmap.madvise holds it)."""
    if len(mapping) == 0:
        return
    view = torch.frombuffer(mapping, dtype=torch.uint8)
    address = view.data_ptr()
    del view  # a live export would keep the mapping from closing
    _libc.madvise(address, len(mapping), _MADV_HUGEPAGE)  # advice: without THP it changes nothing
    if _libc.madvise(address, len(mapping), _MADV_POPULATE_READ) != 0:
        # An older kernel (EINVAL): the first touch of each page faults it in instead.
        mapping.madvise(mmap.MADV_WILLNEED)


def _dtype(entry: TensorEntry) -> torch.dtype:
    return getattr(torch, entry.dtype)
