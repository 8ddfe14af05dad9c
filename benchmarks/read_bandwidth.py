"""How fast a file gets from disk (cold) and from the page cache (warm) into memory, per method.

    python benchmarks/read_bandwidth.py [--size-gib 1] [--repeats 3] [--dir DIR]
                                        [--out benchmarks/results/read_bandwidth.json]

The physical limits the snapshot loader (issue #11) is measured against, and the choice of its
read path. One file of random bytes is written once in a temporary directory on the repository's
disk (not on a tmpfs /tmp, which has no disk behind it), then, in the same run:
- memory copy: torch copy of a tensor of the file's size into another, both warm (GB/s of bytes
  copied; the memory moves twice that, read plus write);
- first touch: filling fresh memory of that size, the page-fault cost a loader pays once per load
  when it allocates its destination (not counted in the read rows, whose destination is reused);
- per read method, cold and warm: Python's unbuffered readinto in 16 MiB pieces (one thread),
  the native reader (swiftserve.loader.chunk_read.read_into) buffered and O_DIRECT with 1, 2, 4
  threads, and mmap with MAP_POPULATE (the mapping only, and the mapping plus a copy into memory).
Cold: before each run the file is evicted with posix_fadvise(POSIX_FADV_DONTNEED) and mincore(2)
must then report at most 1% of its pages resident (benchmarks/page_cache.py), else the run stops.
Warm: the file is read once and mincore must report it all resident. After each run the table
notes the share resident (O_DIRECT leaves a cold file cold). Every method reads into the same
4 KiB-aligned, already-touched destination and is checked against the file once. Runs are
round-robin over the methods, best and median of --repeats kept: the host is shared.
A VM's "disk" may be backed by the host's page cache; a cold read here is cold for this kernel.

Measured here (2 vCPU VM, ext4 on a virtio disk, 1 GiB, medians of 5, two runs; the host is
shared and a figure moves by 20-40% between runs; benchmarks/results/read_bandwidth.json):
  memory copy 10.6-14.7 GB/s (torch), memcpy one thread 9.9-11.1, first touch 2.3-2.6
  cold  native buffered 1 thread 2.1 (python readinto 1.9, 2/4 threads 1.6-2.1), O_DIRECT
        1.0-1.3 at any thread count and pread size, mmap MAP_POPULATE 1.1-1.35 (+ copy 0.4-0.7)
  warm  mmap MAP_POPULATE 205-272 (a mapping of the page cache, no copy: ~4 ms per GiB), native
        buffered 4 threads 13-15 (the memory copy rate), 1 thread 11-12, O_DIRECT 1.5-1.8
Fastest cold: buffered preads of 64 MiB, one thread. O_DIRECT stays at ~1.1-1.3 GB/s whatever the
queue depth (1-4 threads, 4-64 MiB preads), while the kernel's readahead keeps large asynchronous
reads in flight ahead of the copy and reaches ~2 GB/s; several buffered streams at different
offsets do no better and vary more (what the host does with the VM's disk file is not visible
from inside). mmap populate faults the file in as one stream of readahead-sized reads. Fastest
warm: the mapping (zero copy; then the page cache is the weights' memory); into memory of its
own, threaded buffered reads at the memory copy rate. O_DIRECT never gains here: it always reads
the disk, and it only skips the page cache (resident_after 0), which a buffered reader gets by
dropping its range with POSIX_FADV_DONTNEED after the read.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# Appended, not prepended: the root's kernels/ must not shadow the installed `kernels`.
sys.path.append(str(ROOT))  # run as a script from anywhere
from swiftserve.kernels import cpp_native  # noqa: E402

from benchmarks.common import print_table, write_json  # noqa: E402
from benchmarks.page_cache import evict, resident_fraction, warm  # noqa: E402
from swiftserve.loader.chunk_read import DEFAULT_CHUNK_BYTES, Chunk, aligned_empty, read_into  # noqa: E402

PIECE = 16 << 20
SWEEP_MIB = (4, 16, 64)


def _filesystem(path: Path) -> str:
    """The filesystem type of the mount holding `path` (/proc/mounts, longest mount point)."""
    best, kind = "", "unknown"
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        mount = fields[1]
        if str(path.resolve()).startswith(mount) and len(mount) > len(best):
            best, kind = mount, fields[2]
    return kind


def _bench_dir(requested: str | None) -> Path:
    """--dir, else the system temp dir when it is on the repository's device and not tmpfs, else
    a temp dir inside the repository."""
    if requested:
        return Path(requested)
    tmp = Path(tempfile.gettempdir())
    if os.stat(tmp).st_dev == os.stat(ROOT).st_dev and _filesystem(tmp) != "tmpfs":
        return tmp
    return ROOT


def _write_file(directory: Path, size: int) -> Path:
    fd, name = tempfile.mkstemp(prefix="read_bandwidth-", suffix=".bin", dir=directory)
    rng = np.random.default_rng(0)
    with os.fdopen(fd, "wb") as f:
        for start in range(0, size, PIECE):
            f.write(rng.bytes(min(PIECE, size - start)))
        f.flush()
        os.fsync(f.fileno())  # DONTNEED drops clean pages only
    return Path(name)


def _python_readinto(path: Path, dst: torch.Tensor) -> None:
    view = memoryview(dst.numpy())
    with open(path, "rb", buffering=0) as f:
        for start in range(0, len(view), PIECE):
            f.readinto(view[start : start + PIECE])


def _native(num_threads: int, direct: bool, chunk_bytes: int) -> Callable[[Path, torch.Tensor], None]:
    def run(path: Path, dst: torch.Tensor) -> None:
        read_into(
            path,
            [Chunk(0, dst.numel(), dst)],
            num_threads=num_threads,
            direct=direct,
            chunk_bytes=chunk_bytes,
        )

    return run


def _mmap_populate(copy: bool) -> Callable[[Path, torch.Tensor], None]:
    def run(path: Path, dst: torch.Tensor) -> None:
        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE, prot=mmap.PROT_READ)
        try:
            if copy:
                dst.copy_(torch.from_numpy(np.frombuffer(mapped, dtype=np.uint8)))
        finally:
            mapped.close()  # a live mapping would pin the pages against the next eviction

    return run


def _methods(chunk_bytes: int, sweep: bool) -> dict[str, Callable[[Path, torch.Tensor], None]]:
    """Every read method; with `sweep`, also the native 1-thread rows at other pread sizes (the
    choice of DEFAULT_CHUNK_BYTES)."""
    methods = {"python readinto, 1 thread": _python_readinto}
    if cpp_native.has("read_chunks"):
        for direct in (False, True):
            kind = "O_DIRECT" if direct else "buffered"
            for n in (1, 2, 4):
                methods[f"native {kind}, {n} thread{'s' * (n > 1)}"] = _native(n, direct, chunk_bytes)
            for mib in SWEEP_MIB if sweep else ():
                if mib << 20 != chunk_bytes:
                    methods[f"native {kind}, 1 thread, {mib} MiB preads"] = _native(1, direct, mib << 20)
    methods["mmap MAP_POPULATE (map only)"] = _mmap_populate(copy=False)
    methods["mmap MAP_POPULATE + copy"] = _mmap_populate(copy=True)
    return methods


def _gbps(nbytes: int, seconds: list[float]) -> tuple[float, float]:
    return nbytes / min(seconds) / 1e9, nbytes / statistics.median(seconds) / 1e9


def _memory_rows(size: int, repeats: int) -> list[dict]:
    src = torch.randint(0, 256, (size,), dtype=torch.uint8)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm: both touched
    copy, memmove = [], []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        dst.copy_(src)
        copy.append(time.perf_counter() - start)
        start = time.perf_counter()
        ctypes.memmove(dst.data_ptr(), src.data_ptr(), size)  # glibc memcpy, one thread
        memmove.append(time.perf_counter() - start)
    touch = []
    for _ in range(repeats):
        fresh = torch.empty(size, dtype=torch.uint8)
        start = time.perf_counter()
        fresh.fill_(0)
        touch.append(time.perf_counter() - start)
        del fresh
    return [
        _memory_row("memory copy (warm, torch)", size, copy[1:]),
        _memory_row("memory copy (warm, memcpy 1 thread)", size, memmove[1:]),
        _memory_row("first touch of fresh memory", size, touch),
    ]


def _memory_row(method: str, size: int, seconds: list[float]) -> dict:
    return {"method": method, "condition": "memory", **_pair(_gbps(size, seconds)), "seconds": seconds}


def _pair(gbps: tuple[float, float]) -> dict:
    return {"best_GBps": gbps[0], "median_GBps": gbps[1]}


def _run(path: Path, size: int, methods: dict, condition: str, repeats: int) -> list[dict]:
    dst = aligned_empty(size)
    dst.fill_(0)  # first touch outside the timings
    reference = torch.from_numpy(np.fromfile(path, dtype=np.uint8))
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    resident_after: dict[str, float] = {}
    for r in range(repeats):
        for name, method in methods.items():
            if condition == "cold":
                evict(path)
            else:
                warm(path)
            start = time.perf_counter()
            method(path, dst)
            seconds[name].append(time.perf_counter() - start)
            resident_after[name] = resident_fraction(path)
            if r == 0 and "map only" not in name:
                if not torch.equal(dst, reference):
                    raise RuntimeError(f"{name} read wrong bytes")
                dst.fill_(0)
    return [
        {
            "method": name,
            "condition": condition,
            **_pair(_gbps(size, s)),
            "resident_after": resident_after[name],
            "seconds": s,
        }
        for name, s in seconds.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to write the test file (a disk, not tmpfs)")
    parser.add_argument("--chunk-mib", type=float, default=DEFAULT_CHUNK_BYTES / (1 << 20))
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/read_bandwidth.json"))
    args = parser.parse_args()
    size = int(args.size_gib * (1 << 30)) // 4096 * 4096
    chunk_bytes = int(args.chunk_mib * (1 << 20)) // 4096 * 4096
    directory = _bench_dir(args.dir)
    print(
        f"test file: {size / 2**30:.2f} GiB in {directory} ({_filesystem(directory)}); {os.cpu_count()} CPUs"
    )
    if not cpp_native.has("read_chunks"):
        print("swiftserve._C has no read_chunks (rebuild it): the native rows are left out")
    path = _write_file(directory, size)
    try:
        rows = _memory_rows(size, args.repeats)
        rows += _run(path, size, _methods(chunk_bytes, sweep=True), "cold", args.repeats)
        rows += _run(path, size, _methods(chunk_bytes, sweep=False), "warm", args.repeats)
    finally:
        path.unlink()
    print_table(rows, ["method", "condition", "best_GBps", "median_GBps", "resident_after"])
    # Into memory: a mapping alone is no load into the loader's own memory (it is the zero-copy
    # alternative, reported beside it).
    fastest = {
        condition: max(
            (r for r in rows if r["condition"] == condition and "map only" not in r["method"]),
            key=lambda r: r["median_GBps"],
        )["method"]
        for condition in ("cold", "warm")
    }
    print(f"fastest into memory (median): cold: {fastest['cold']}; warm: {fastest['warm']}")
    write_json(
        args.out,
        {
            "args": vars(args),
            "file": {"bytes": size, "dir": str(directory), "filesystem": _filesystem(directory)},
            "chunk_bytes": chunk_bytes,
            "cpus": os.cpu_count(),
            "eviction_check": "posix_fadvise(DONTNEED) then mincore(2) <= 1% resident; warm: mincore >= 99%",
            "rows": rows,
            "fastest": fastest,
        },
    )


if __name__ == "__main__":
    main()
