"""Reads byte ranges of one file straight into tensor memory: the snapshot loader's I/O.

    chunks = [Chunk(file_offset=entry.offset, length=entry.nbytes, dst=tensor) for ...]
    read_into(path, chunks, num_threads=4, direct=True)

The native reader (`_C.read_chunks`, csrc/cpu/chunk_reader.h) splits the chunks into preads of at
most `chunk_bytes` and reads them with several threads, the GIL released, into the destinations
themselves: no Python per piece, no staging copy. `direct=True` opens the file with O_DIRECT, which
bypasses the page cache: file offsets and destination addresses must then be multiples of
DIRECT_ALIGN (lengths need not be, the tail is read through a bounce block). A `_C` built before
the reader existed falls back to os.preadv here, logged once.

Errors: ValueError for arguments that cannot be read as asked (a range past the end of the file, a
destination too small or not contiguous, misalignment under direct), checked before any read;
OSError (FileNotFoundError, ...; `filename` set) for a failed open or read, the message naming the
offset; EOFError when the file ended before a range did (it shrank while being read).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os
from dataclasses import dataclass
from functools import cache

import torch

from swiftserve.kernels import cpp_native

logger = logging.getLogger(__name__)

DIRECT_ALIGN = 4096  # O_DIRECT's alignment: a multiple of every common device's logical block size
# Both defaults from benchmarks/read_bandwidth.py on this 2 vCPU VM (1 GiB file, medians of 5, two
# runs). The largest single pread: buffered, cold, one thread: 4 MiB preads 1.1-1.3 GB/s, 16 MiB
# 1.8-1.9, 64 MiB 2.1-2.2; a read larger than the readahead window puts more of the file in flight.
DEFAULT_CHUNK_BYTES = 64 << 20
# Buffered 1/2/4 threads: cold 2.1/2.0/1.6-2.1 GB/s, warm 11-12/11-14/13-15 GB/s. Cold is disk
# bound and one stream reads it best (several streams at different offsets of the VM's disk, a
# file on the host, read worse and vary run to run); warm is a copy out of the page cache that
# threads share over the cores, but it saves ~20 ms per GiB where cold loses ~80 ms. On a disk
# with deep queues (NVMe, O_DIRECT) more threads can win: rerun the benchmark there.
DEFAULT_NUM_THREADS = 1


@dataclass(frozen=True)
class Chunk:
    """`length` bytes of the file at `file_offset`, to be placed at the start of `dst`: a contiguous
    CPU tensor of at least `length` bytes, or a raw address the caller keeps valid and large enough
    (unchecked)."""

    file_offset: int
    length: int
    dst: torch.Tensor | int

    def __post_init__(self) -> None:
        for name in ("file_offset", "length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Chunk.{name} must be an int >= 0, got {value!r}")
        if isinstance(self.dst, torch.Tensor):
            _check_tensor(self.dst, self.length)
        elif not isinstance(self.dst, int) or isinstance(self.dst, bool) or self.dst < 0:
            raise ValueError(f"Chunk.dst must be a torch.Tensor or an address (int >= 0), got {self.dst!r}")
        elif self.dst == 0 and self.length > 0:
            raise ValueError("Chunk.dst is the null address")

    @property
    def address(self) -> int:
        return self.dst.data_ptr() if isinstance(self.dst, torch.Tensor) else self.dst


def _check_tensor(dst: torch.Tensor, length: int) -> None:
    if dst.device.type != "cpu":
        raise ValueError(f"Chunk.dst is on {dst.device}: the reader writes CPU memory only")
    if not dst.is_contiguous():
        raise ValueError(
            f"Chunk.dst must be contiguous (a read fills one run of bytes), got strides {dst.stride()}"
        )
    nbytes = dst.numel() * dst.element_size()
    if nbytes < length:
        raise ValueError(f"Chunk.dst holds {nbytes} bytes, fewer than the {length} to read")


def read_into(
    path: str | os.PathLike,
    chunks: list[Chunk],
    *,
    num_threads: int | None = None,
    direct: bool = False,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> None:
    """Reads every chunk of `path` into its destination; returns once all bytes are in place.
    num_threads: reader threads (None: DEFAULT_NUM_THREADS); direct: O_DIRECT, bypassing the page
    cache (see supports_direct); chunk_bytes: the largest single pread."""
    path = os.fspath(path)
    num_threads = DEFAULT_NUM_THREADS if num_threads is None else num_threads
    if not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be an int >= 1, got {num_threads!r}")
    if chunk_bytes < 1 or (direct and chunk_bytes % DIRECT_ALIGN):
        raise ValueError(
            f"chunk_bytes must be positive (a multiple of {DIRECT_ALIGN} if direct), got {chunk_bytes}"
        )
    _check_chunks(path, chunks, os.stat(path).st_size, direct)
    native = _native_read_chunks()
    if native is None:
        _read_python(path, chunks, direct, chunk_bytes)
        return
    native(
        path=path,
        file_offsets=[c.file_offset for c in chunks],
        lengths=[c.length for c in chunks],
        dst_ptrs=[c.address for c in chunks],
        num_threads=num_threads,
        direct=direct,
        chunk_bytes=chunk_bytes,
    )


def _check_chunks(path: str, chunks: list[Chunk], file_size: int, direct: bool) -> None:
    for i, c in enumerate(chunks):
        if not isinstance(c, Chunk):
            raise ValueError(f"chunks[{i}] must be a Chunk, got {type(c).__name__}")
        if c.file_offset + c.length > file_size:
            raise ValueError(
                f"chunks[{i}]: bytes {c.file_offset}..{c.file_offset + c.length} run past the end of "
                f"{path!r} ({file_size} bytes)"
            )
        if direct and c.length and (c.file_offset % DIRECT_ALIGN or c.address % DIRECT_ALIGN):
            raise ValueError(
                f"chunks[{i}]: direct=True needs the file offset ({c.file_offset}) and the destination "
                f"address ({c.address:#x}) to be multiples of {DIRECT_ALIGN}"
            )


def aligned_empty(nbytes: int) -> torch.Tensor:
    """A uint8 CPU tensor of `nbytes` whose data starts on a DIRECT_ALIGN boundary (torch's allocator
    aligns to 64 bytes only), for destinations of direct reads; views of it keep it alive."""
    storage = torch.empty(nbytes + DIRECT_ALIGN, dtype=torch.uint8)
    skip = -storage.data_ptr() % DIRECT_ALIGN
    return storage[skip : skip + nbytes]


def supports_direct(path: str | os.PathLike) -> bool:
    """Whether the filesystem holding the existing file `path` serves O_DIRECT reads (some, e.g.
    older tmpfs and some FUSE or network mounts, refuse the flag with EINVAL)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # the flag itself is refused
            return False
        raise
    try:
        os.preadv(fd, [mmap.mmap(-1, DIRECT_ALIGN)], 0)  # an anonymous map is page aligned
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # accepted at open, refused at read (some FUSE mounts)
            return False
        raise
    finally:
        os.close(fd)
    return True


@cache
def _native_read_chunks():
    """The keyword caller of _C.read_chunks, or None (logged once) when this _C predates it."""
    if cpp_native.has("read_chunks"):
        return cpp_native.calls.read_chunks
    reason = cpp_native.IMPORT_ERROR or "this build of swiftserve._C has no read_chunks (rebuild it)"
    logger.warning("native chunk reader unavailable (%s): reading with os.preadv, one thread", reason)
    return None


def _read_python(path: str, chunks: list[Chunk], direct: bool, chunk_bytes: int) -> None:
    """The fallback: the native reader's semantics (errors included) with os.preadv, one thread."""
    fd = _open(path, direct)
    bounce = mmap.mmap(-1, DIRECT_ALIGN) if direct else None  # an anonymous map is page aligned
    try:
        for i, c in enumerate(chunks):
            if c.length == 0:
                continue
            view = memoryview((ctypes.c_char * c.length).from_address(c.address)).cast("B")
            body = c.length - c.length % DIRECT_ALIGN if direct else c.length
            for start in range(0, body, chunk_bytes):
                end = min(start + chunk_bytes, body)
                _pread_full(fd, view[start:end], c.file_offset + start, path, i, direct, need=end - start)
            if body < c.length:  # the tail, through one whole block (see csrc/cpu/chunk_reader.h)
                tail = c.length - body
                _pread_full(fd, memoryview(bounce), c.file_offset + body, path, i, direct, need=tail)
                view[body:] = bounce[:tail]
    finally:
        os.close(fd)


def _open(path: str, direct: bool) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | (os.O_DIRECT if direct else 0))
    except OSError as exc:
        message = f"cannot open {path!r} for reading{' with O_DIRECT' if direct else ''}: {exc.strerror}"
        if direct and exc.errno == errno.EINVAL:
            message += " (its filesystem does not support O_DIRECT; read with direct=False)"
        raise _os_error(exc.errno, message, path) from exc


def _pread_full(
    fd: int, view: memoryview, offset: int, path: str, chunk: int, direct: bool, need: int
) -> None:
    """Reads at least `need` bytes into `view` from `offset` (a direct tail block may be the file's
    last, partial one, so `view` can be longer than what is needed)."""
    done = 0
    while done < need:
        try:
            n = os.preadv(fd, [view[done:]], offset + done)
        except OSError as exc:
            message = f"read failed in {path!r} at offset {offset + done} (chunk {chunk}): {exc.strerror}"
            raise _os_error(exc.errno, message, path) from exc
        done += n
        # O_DIRECT ends short only at the end of the file; reading on from there fails with EINVAL.
        if n == 0 or (direct and done % DIRECT_ALIGN):
            break
    if done < need:
        where = f"{path!r} at offset {offset + done} (chunk {chunk})"
        raise EOFError(f"unexpected end of file in {where} (did the file shrink?)")


def _os_error(number: int, message: str, path: str) -> OSError:
    """OSError as the native reader raises it: the subclass errno picks (FileNotFoundError, ...),
    the message naming file and offset once, `filename` set."""
    error = OSError(number, message)
    error.filename = path
    return error
