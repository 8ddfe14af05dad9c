"""read_into against the file's own bytes: awkward sizes, many chunks, threads, O_DIRECT, errors.

Each case runs on the native reader (_C.read_chunks) and on the os.preadv fallback, buffered and
with O_DIRECT (skipped, saying so, where the filesystem of the test's temp dir refuses it).
chunk_bytes is small (two blocks) so that a few KiB already split into several preads and threads.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import threading
from pathlib import Path

import pytest
import torch
from swiftserve.kernels import cpp_native

from swiftserve.loader import chunk_read
from swiftserve.loader.chunk_read import DIRECT_ALIGN, Chunk, aligned_empty, read_into, supports_direct

BLOCK = DIRECT_ALIGN
SMALL_CHUNK_BYTES = 2 * BLOCK
FILE_SIZE = 64 * BLOCK + 123  # ends on a partial block: direct tails at the end of the file
SENTINEL = 0xA5


@pytest.fixture(params=["native", "python"])
def reader(request, monkeypatch) -> str:
    if request.param == "native" and not cpp_native.has("read_chunks"):
        pytest.skip("swiftserve._C is not built or has no read_chunks (pip install -e .)")
    if request.param == "python":
        monkeypatch.setattr(chunk_read, "_native_read_chunks", lambda: None)
    return request.param


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, bytes]:
    payload = random.Random(0).randbytes(FILE_SIZE)
    path = tmp_path_factory.mktemp("chunks") / "data.bin"
    path.write_bytes(payload)
    return path, payload


@pytest.fixture(params=[False, True], ids=["buffered", "direct"])
def direct(request, data) -> bool:
    if request.param and not supports_direct(data[0]):
        pytest.skip(f"the filesystem of {data[0].parent} refuses O_DIRECT (tmpfs on Linux < 6.6?)")
    return request.param


def _dst(length: int, slack: int = 64) -> torch.Tensor:
    """An aligned destination with `slack` sentinel bytes after `length`, to catch overruns."""
    dst = aligned_empty(length + slack)
    dst.fill_(SENTINEL)
    return dst


def _check(dst: torch.Tensor, payload: bytes, offset: int, length: int) -> None:
    assert bytes(dst[:length].numpy()) == payload[offset : offset + length]
    assert (dst[length:] == SENTINEL).all(), "wrote past the chunk's end"


@pytest.mark.parametrize("length", [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 5 * BLOCK + 7, 9 * BLOCK])
@pytest.mark.parametrize("num_threads", [1, 3])
def test_one_chunk_awkward_sizes(reader, data, direct, length, num_threads):
    path, payload = data
    offset = 2 * BLOCK
    dst = _dst(length)
    chunks = [Chunk(file_offset=offset, length=length, dst=dst)]
    read_into(path, chunks, num_threads=num_threads, direct=direct, chunk_bytes=SMALL_CHUNK_BYTES)
    _check(dst, payload, offset, length)


@pytest.mark.parametrize("length", [123, BLOCK + 123, FILE_SIZE])
def test_chunk_ending_at_end_of_file(reader, data, direct, length):
    """Under direct, the tail block is the file's last, partial one: the read comes back short."""
    path, payload = data
    offset = FILE_SIZE - length
    if direct:
        offset, length = offset - offset % BLOCK, FILE_SIZE - (offset - offset % BLOCK)
    dst = _dst(length)
    read_into(path, [Chunk(offset, length, dst)], num_threads=2, direct=direct, chunk_bytes=SMALL_CHUNK_BYTES)
    _check(dst, payload, offset, length)


def test_many_chunks_in_any_order(reader, data, direct):
    """The whole file as 40 chunks of awkward sizes (each starting on a block), shuffled, each into
    its own tensor: exactly the file comes back."""
    path, payload = data
    rng = random.Random(1)
    starts = sorted(rng.sample(range(1, FILE_SIZE // BLOCK), 39))
    bounds = [0, *(s * BLOCK for s in starts), FILE_SIZE]
    spans = zip(bounds, bounds[1:], strict=False)
    cuts = [(a, rng.randint(max(b - a - 3 * BLOCK, 0), b - a)) for a, b in spans]  # ends anywhere in the span
    rng.shuffle(cuts)
    dsts = [_dst(length) for _, length in cuts]
    chunks = [Chunk(offset, length, dst) for (offset, length), dst in zip(cuts, dsts, strict=True)]
    read_into(path, chunks, num_threads=4, direct=direct, chunk_bytes=SMALL_CHUNK_BYTES)
    for (offset, length), dst in zip(cuts, dsts, strict=True):
        _check(dst, payload, offset, length)


def test_chunks_larger_than_chunk_bytes_and_more_threads_than_chunks(reader, data, direct):
    path, payload = data
    dst = _dst(FILE_SIZE)
    read_into(path, [Chunk(0, FILE_SIZE, dst)], num_threads=16, direct=direct, chunk_bytes=BLOCK)
    _check(dst, payload, 0, FILE_SIZE)
    small = [_dst(5), _dst(BLOCK)]
    read_into(path, [Chunk(0, 5, small[0]), Chunk(BLOCK, BLOCK, small[1])], num_threads=16, direct=direct)
    _check(small[0], payload, 0, 5)
    _check(small[1], payload, BLOCK, BLOCK)


def test_buffered_reads_take_any_offset_and_address(reader, data):
    path, payload = data
    buffer = _dst(3 * BLOCK)
    chunks = [Chunk(1, 5, buffer.data_ptr() + 3), Chunk(BLOCK + 7, BLOCK + 1, buffer[BLOCK + 1 :])]
    read_into(path, chunks, num_threads=2, chunk_bytes=1000)  # not a block multiple: fine buffered
    assert bytes(buffer[3:8].numpy()) == payload[1:6]
    _check(buffer[BLOCK + 1 :], payload, BLOCK + 7, BLOCK + 1)
    assert (buffer[:3] == SENTINEL).all() and (buffer[8 : BLOCK + 1] == SENTINEL).all()


def test_typed_destination_counts_bytes(reader, data):
    path, payload = data
    dst = torch.empty(10, dtype=torch.bfloat16)
    read_into(path, [Chunk(BLOCK, 20, dst)])
    assert bytes(dst.view(torch.uint8).numpy()) == payload[BLOCK : BLOCK + 20]


def test_missing_file(reader, tmp_path):
    missing = tmp_path / "missing.bin"
    with pytest.raises(FileNotFoundError) as info:
        read_into(missing, [])
    assert info.value.filename == str(missing)


def test_native_open_failure_names_the_file(tmp_path):
    """Below the launcher's own os.stat: the native open error itself."""
    if not cpp_native.has("read_chunks"):
        pytest.skip("swiftserve._C has no read_chunks")
    missing = str(tmp_path / "gone.bin")
    with pytest.raises(FileNotFoundError, match="cannot open .*gone.bin.* for reading") as info:
        _native(path=missing, file_offsets=[], lengths=[], dst_ptrs=[])
    assert info.value.errno == errno.ENOENT and info.value.filename == missing


@pytest.mark.parametrize("offset, length", [(FILE_SIZE - 10, 11), (FILE_SIZE + 1, 0), (FILE_SIZE, 1)])
def test_range_past_end_of_file(reader, data, offset, length):
    path, _ = data
    if offset > FILE_SIZE:  # an empty chunk past the end still names a place that does not exist
        with pytest.raises(ValueError, match="past the end"):
            read_into(path, [Chunk(offset, length, _dst(1))])
        return
    with pytest.raises(ValueError, match=f"past the end of .*data.bin.* \\({FILE_SIZE} bytes\\)"):
        read_into(path, [Chunk(0, 1, _dst(1)), Chunk(offset, length, _dst(length))])


def test_native_checks_bounds_itself(data):
    if not cpp_native.has("read_chunks"):
        pytest.skip("swiftserve._C has no read_chunks")
    dst = _dst(BLOCK)
    with pytest.raises(ValueError, match="chunk 0 .* runs past the end"):
        _native(path=str(data[0]), file_offsets=[FILE_SIZE - 1], lengths=[2], dst_ptrs=[dst.data_ptr()])


def test_misaligned_direct(reader, data):
    path, _ = data
    dst = _dst(2 * BLOCK)
    for chunk in (Chunk(1, BLOCK, dst), Chunk(BLOCK, BLOCK, dst[8:])):
        with pytest.raises(ValueError, match="direct=True needs the file offset .* multiples of 4096"):
            read_into(path, [chunk], direct=True)
    with pytest.raises(ValueError, match="multiple of 4096"):
        read_into(path, [Chunk(0, BLOCK, dst)], direct=True, chunk_bytes=BLOCK + 1)


def test_native_checks_alignment_itself(data):
    if not cpp_native.has("read_chunks"):
        pytest.skip("swiftserve._C has no read_chunks")
    dst = _dst(2 * BLOCK)
    path = str(data[0])
    with pytest.raises(ValueError, match="chunk 0: direct=True needs a file offset"):
        _native(path=path, file_offsets=[8], lengths=[BLOCK], dst_ptrs=[dst.data_ptr()], direct=True)
    with pytest.raises(ValueError, match="chunk 1: direct=True needs a destination address"):
        _native(
            path=path,
            file_offsets=[0, 0],
            lengths=[1, 1],
            dst_ptrs=[dst.data_ptr(), dst.data_ptr() + 8],
            direct=True,
        )


def test_bad_destinations_and_arguments(data):
    path, _ = data
    with pytest.raises(ValueError, match="fewer than the 9"):
        Chunk(0, 9, torch.empty(8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="contiguous"):
        Chunk(0, 4, torch.empty(4, 4, dtype=torch.uint8).t())
    with pytest.raises(ValueError, match="int >= 0"):
        Chunk(-1, 4, torch.empty(4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="null address"):
        Chunk(0, 4, 0)
    with pytest.raises(ValueError, match="num_threads"):
        read_into(path, [], num_threads=0)
    with pytest.raises(ValueError, match="must be a Chunk"):
        read_into(path, [(0, 4, 0)])


def test_read_error_names_file_and_offset(reader, tmp_path):
    """A directory opens for reading but every pread fails (EISDIR): an OSError, not a crash."""
    size = os.stat(tmp_path).st_size
    if size == 0:
        pytest.skip(f"directories on {tmp_path}'s filesystem report size 0: no range to read")
    with pytest.raises(IsADirectoryError, match="read failed in .* at offset 0 \\(chunk 0\\)") as info:
        read_into(tmp_path, [Chunk(0, 1, _dst(1))])
    assert info.value.filename == str(tmp_path)


def test_file_shorter_than_its_size_is_an_eof_error(reader):
    """sysfs files report 4096 bytes and hold fewer: what a file truncated during the read looks like."""
    path = "/sys/kernel/mm/transparent_hugepage/enabled"
    if not os.path.exists(path) or os.stat(path).st_size != 4096:
        pytest.skip(f"no sysfs file {path} reporting 4096 bytes here")
    with pytest.raises(EOFError, match="unexpected end of file in .*enabled.* \\(chunk 0\\)"):
        read_into(path, [Chunk(0, 4096, _dst(4096))])


def test_direct_on_tmpfs_says_why(reader):
    """tmpfs refused O_DIRECT before Linux 6.6: the error says so; where it accepts, reads work."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("no writable /dev/shm")
    path = shm / f"swiftserve-chunk-read-{os.getpid()}.bin"
    path.write_bytes(bytes(range(256)) * 32)
    try:
        dst = _dst(BLOCK)
        if supports_direct(path):
            read_into(path, [Chunk(0, BLOCK, dst)], direct=True)
            _check(dst, path.read_bytes(), 0, BLOCK)
            return
        with pytest.raises(OSError, match="does not support O_DIRECT") as info:
            read_into(path, [Chunk(0, BLOCK, dst)], direct=True)
        assert info.value.errno == errno.EINVAL
    finally:
        path.unlink()


def test_fallback_is_logged_once(monkeypatch, caplog, data):
    path, payload = data
    monkeypatch.setattr(cpp_native, "has", lambda name: False)
    chunk_read._native_read_chunks.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="swiftserve.loader.chunk_read"):
            for _ in range(2):
                dst = _dst(10)
                read_into(path, [Chunk(3, 10, dst)])
                _check(dst, payload, 3, 10)
    finally:
        chunk_read._native_read_chunks.cache_clear()  # the next test sees the real _C again
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "reading with os.preadv" in messages[0], messages


def test_keyword_caller_takes_keywords_only():
    if not cpp_native.has("read_chunks"):
        pytest.skip("swiftserve._C has no read_chunks")
    with pytest.raises(TypeError):
        cpp_native.calls.read_chunks("x", [], [], [], 1, False, 4096)
    with pytest.raises(TypeError):
        _native(path="x", file_offsets=[], lengths=[], dst_ptr=[])


def _native(*, num_threads=2, direct=False, chunk_bytes=SMALL_CHUNK_BYTES, **kwargs):
    return cpp_native.calls.read_chunks(
        num_threads=num_threads, direct=direct, chunk_bytes=chunk_bytes, **kwargs
    )


def test_native_read_releases_the_gil(tmp_path):
    """While one thread is inside _C.read_chunks, another runs Python: it sees the destination
    half written (its first byte read, its last not yet). Were the GIL held for the whole read, it
    could only ever see it untouched or complete. One thread reads the pieces in file order."""
    if not cpp_native.has("read_chunks"):
        pytest.skip("swiftserve._C has no read_chunks")
    size = 32 << 20
    path = tmp_path / "big.bin"
    path.write_bytes(bytes([SENTINEL ^ 0xFF]) * size)
    direct = supports_direct(path)  # small direct preads always go to the disk: a slow, long call
    dst = aligned_empty(size)
    # Many small preads make the call long enough to be caught in the middle; a read that ends
    # before this thread gets to look is simply tried again.
    for _ in range(20):
        if _caught_mid_read(path, dst, direct):
            return
    pytest.fail("Python never ran while _C.read_chunks was reading: is the GIL released?")


def _caught_mid_read(path: Path, dst: torch.Tensor, direct: bool) -> bool:
    """Reads path into dst on another thread, polling dst's two ends until the read returns."""
    dst.fill_(SENTINEL)
    done = threading.Event()

    def read() -> None:
        chunk_bytes = 64 << 10 if direct else 4096
        read_into(path, [Chunk(0, dst.numel(), dst)], num_threads=1, direct=direct, chunk_bytes=chunk_bytes)
        done.set()

    reader_thread = threading.Thread(target=read)
    reader_thread.start()
    caught = False
    while not done.is_set() and not caught:
        caught = int(dst[0]) != SENTINEL and int(dst[-1]) == SENTINEL
    reader_thread.join()
    assert int(dst[-1]) != SENTINEL  # the read itself completed
    return caught
