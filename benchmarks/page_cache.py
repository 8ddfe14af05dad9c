"""Putting a file in or out of the page cache for cold/warm benchmarks, and checking that it worked.

    evict(path)               # posix_fadvise(DONTNEED); raises if pages stay resident
    warm(path)                # reads it once; raises unless it is then fully resident
    resident_fraction(path)   # 0.0 .. 1.0, from mincore(2)

Why the check: POSIX_FADV_DONTNEED is advice. The kernel drops only clean pages that nothing maps
(dirty pages are written back first only if they were synced; a live mmap pins them), so an
unchecked "cold" run may read from memory. mincore(2) on a fresh PROT_READ mapping of the file
reports, one byte per page, whether that page of the file is in the page cache right now; mapping
without touching reads nothing, so the check itself does not warm the file (swiftserve.loader
.page_cache, which the snapshot reader uses too).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from swiftserve.loader.page_cache import resident_fraction

__all__ = ["best_of", "evict", "resident_fraction", "warm"]


def evict(path: str | os.PathLike, max_resident: float = 0.01) -> float:
    """Drops the file from the page cache; returns what stayed resident, or raises if more than
    `max_resident` did (the file is dirty, mapped, or the kernel ignored the advice)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)  # DONTNEED skips dirty pages
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    left = resident_fraction(path)
    if left > max_resident:
        raise RuntimeError(
            f"{path}: {left:.1%} of its pages stayed in the page cache after POSIX_FADV_DONTNEED"
        )
    return left


def warm(path: str | os.PathLike, min_resident: float = 0.99) -> float:
    """Reads the file once so that it is in the page cache; raises if it does not stay there
    (memory pressure from other processes)."""
    with open(path, "rb", buffering=0) as f:
        buffer = bytearray(16 << 20)
        while f.readinto(buffer):
            pass
    held = resident_fraction(path)
    if held < min_resident:
        raise RuntimeError(f"{path}: only {held:.1%} of its pages stayed in the page cache after a full read")
    return held


def best_of(once: Callable[[], float], files: list, cold: bool, repeats: int) -> float:
    """The least of `repeats` calls of once(), each after evicting (cold) or warming `files`."""
    best = float("inf")
    for _ in range(repeats):
        for f in files:
            evict(f) if cold else warm(f)
        best = min(best, once())
    return best


# The end of every load worker script (cold_start.py, peer_loaders.py): the script defines
# loader(), which imports what it needs and returns the load as a function (imports are not load
# time); this times it, touching one byte per page of every tensor, as the first forward would.
TIMED_LOAD = r"""
def touch(tensors):
    for t in tensors:
        flat = t.detach().reshape(-1).view(torch.uint8)
        flat[:: 4096].sum()  # one byte per page: faults in a lazy mapping


load = loader()
start = time.perf_counter()
tensors = list(load())
touch(tensors)
print(json.dumps({"seconds": time.perf_counter() - start}))
"""
