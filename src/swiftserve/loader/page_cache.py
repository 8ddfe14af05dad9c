"""How much of a file is in the page cache right now, without reading it.

mincore(2) on a fresh read-only mapping of the file reports, one byte per page, whether that page
of the file is cached; mapping without touching reads nothing, so asking does not warm the file.
The snapshot reader asks before choosing how to load (a cached file is mapped, a cold one read);
the benchmarks ask to check that an eviction worked.
"""

from __future__ import annotations

import bisect
import ctypes
import itertools
import mmap
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_MAP_FAILED = ctypes.c_void_p(-1).value


def cached_share(fd: int) -> float:
    """The share (0.0 .. 1.0) of the open file's pages that are in the page cache, every page
    asked (the kernel looks each up: ~6 ms for 300 MiB here); 1.0 for an empty file. Raises
    OSError if the file cannot be mapped."""
    size = os.fstat(fd).st_size
    if size == 0:
        return 1.0
    with _mapped(fd, size) as address:
        vec = torch.empty((size + PAGE - 1) // PAGE, dtype=torch.uint8)
        _mincore(address, size, vec.data_ptr())
    return int(vec.bitwise_and_(1).sum()) / vec.numel()  # only the low bit is defined


def sampled_share(fd: int, spans: Sequence[tuple[int, int]], samples: int = 64) -> float:
    """cached_share estimated from `samples` pages spread evenly over `spans` ((offset, length)
    pairs in file order, not overlapping: a snapshot's tensors, not the padding between them,
    which a read never brings in), in well under a millisecond. 1.0 when the spans are empty."""
    starts, counts = [], []
    for offset, length in spans:
        if length:
            starts.append(offset // PAGE)
            counts.append(-(-(offset + length) // PAGE) - offset // PAGE)
    total = sum(counts)
    if total == 0:
        return 1.0
    picks = [i * total // min(samples, total) for i in range(min(samples, total))]
    before = [0, *itertools.accumulate(counts)]
    size = os.fstat(fd).st_size
    flag = ctypes.c_ubyte()
    cached = 0
    with _mapped(fd, size) as address:
        for pick in picks:
            span = bisect.bisect_right(before, pick) - 1
            page = starts[span] + pick - before[span]
            _mincore(address + page * PAGE, 1, ctypes.addressof(flag))
            cached += flag.value & 1
    return cached / len(picks)


@contextmanager
def _mapped(fd: int, size: int) -> Iterator[int]:
    """The file mapped read-only and never touched, for mincore."""
    address = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if address in (None, _MAP_FAILED):
        raise OSError(ctypes.get_errno(), "mmap for mincore failed")
    try:
        yield address
    finally:
        _libc.munmap(address, size)


def _mincore(address: int, length: int, vec: int) -> None:
    if _libc.mincore(address, length, vec) != 0:
        raise OSError(ctypes.get_errno(), "mincore failed")


def resident_fraction(path: str | os.PathLike) -> float:
    """cached_share of the file at path."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return cached_share(fd)
    finally:
        os.close(fd)
