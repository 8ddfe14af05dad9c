"""cached_share against files whose page-cache state is known, and the reader's auto choice."""

from __future__ import annotations

import os

import pytest

from swiftserve.loader.page_cache import PAGE, cached_share, resident_fraction, sampled_share
from swiftserve.loader.snapshot_reader import MAPPED_SHARE, load_snapshot

from .snapshot_factory import write_sample


def _evict(path) -> float:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)  # DONTNEED skips dirty pages
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return cached_share(fd)
    finally:
        os.close(fd)


def _read_pages(path, first: int, count: int) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no readahead: only these pages come in
        os.pread(fd, count * PAGE, first * PAGE)
    finally:
        os.close(fd)


def test_cached_share_counts_the_pages_read_back(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(256 * PAGE))
    assert resident_fraction(path) == 1.0
    if _evict(path) > 0.01:
        pytest.skip("this filesystem keeps evicted pages cached")
    _read_pages(path, 64, 32)
    assert resident_fraction(path) == pytest.approx(32 / 256, abs=4 / 256)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert sampled_share(fd, [(64 * PAGE, 32 * PAGE)]) == 1.0
        # Every page of these spans is sampled (fewer pages than samples): exact counts. A
        # span's partial pages count whole; empty spans count nothing.
        assert sampled_share(fd, [(0, 0), (80 * PAGE + 1, 32 * PAGE - 1)]) == 16 / 32
        assert sampled_share(fd, [(0, 2 * PAGE), (95 * PAGE, 2 * PAGE)]) == 1 / 4
        assert sampled_share(fd, [(200 * PAGE, PAGE)]) == 0.0
        assert sampled_share(fd, [(0, 0)]) == 1.0
        # Spread evenly: 8 samples over 256 pages, one per 32, hit the cached run once.
        assert sampled_share(fd, [(0, 256 * PAGE)], samples=8) == 1 / 8
    finally:
        os.close(fd)


def test_empty_file_counts_as_cached(tmp_path):
    path = tmp_path / "empty"
    path.touch()
    assert resident_fraction(path) == 1.0


def test_auto_maps_a_cached_snapshot_and_reads_a_cold_one(tmp_path):
    path = tmp_path / "m.swsnap"
    write_sample(path)
    assert resident_fraction(path) >= MAPPED_SHARE
    assert load_snapshot(path).method == "mmap"
    if _evict(path) > 0.01:
        pytest.skip("this filesystem keeps evicted pages cached")
    cold = load_snapshot(path, verify=True)
    assert cold.method == "read"
    warm = load_snapshot(path)  # the buffered read left the file in the page cache
    assert warm.method == "mmap"
    for name, tensor in cold.tensors.items():
        assert tensor.equal(warm.tensors[name]), name
