"""The pinned staging ring (loader/staged_read.py): ordering, awkward sizes, piecewise checksums.

The ring's device side is a Transfer; here it copies on a worker thread after a delay, so a slot
refilled before its copy completed would corrupt the destination and fail these tests."""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import torch

from swiftserve.loader.snapshot_memory import PieceHashes, StoredBytes, _arena_layout, _unique
from swiftserve.loader.snapshot_reader import load_snapshot, read_header
from swiftserve.loader.staged_read import Piece, StagingRing, pieces_of

from .snapshot_factory import sample_tensors, write_sample


class ThreadTransfer:
    """Copies one at a time on a worker thread, each after a delay: a slow device queue."""

    def __init__(self, delay_s: float = 0.002) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.delay_s = delay_s
        self.done: dict[int, Future] = {}
        self.waits: list[int] = []

    def pinned(self, nbytes: int) -> torch.Tensor:
        return torch.empty(nbytes, dtype=torch.uint8)

    def copy_async(self, slot: int, dst: torch.Tensor, src: torch.Tensor) -> None:
        def copy() -> None:
            time.sleep(self.delay_s)
            dst.copy_(src)

        self.done[slot] = self.pool.submit(copy)

    def wait(self, slot: int) -> None:
        self.waits.append(slot)
        if slot in self.done:
            self.done[slot].result()

    def finish(self) -> None:
        for future in self.done.values():
            future.result()


def test_pieces_cut_at_slot_size():
    assert pieces_of([(10, 25, 100), (40, 0, 200), (50, 10, 300)], 10) == [
        Piece(10, 10, 100),
        Piece(20, 10, 110),
        Piece(30, 5, 120),
        Piece(50, 10, 300),
    ]
    with pytest.raises(ValueError, match="slot_bytes"):
        pieces_of([(0, 1, 0)], 0)


@pytest.mark.parametrize(("slots", "slot_bytes"), [(2, 4099), (3, 1 << 16), (2, 1), (4, 123457)])
def test_every_byte_lands_in_place(tmp_path, slots, slot_bytes):
    data = os.urandom(300_001)
    path = tmp_path / "blob"
    path.write_bytes(data)
    # Odd offsets and lengths, out of file order, one of them empty.
    chunks = [(7, 100_003, 0), (250_000, 50_001, 100_003), (120_000, 0, 150_004), (100_010, 99_999, 150_004)]
    dst = torch.zeros(250_003, dtype=torch.uint8)
    transfer = ThreadTransfer(delay_s=0.0005 if slot_bytes > 1 else 0.0)
    chunks = chunks if slot_bytes > 1 else [(7, 300, 0), (1000, 77, 300)]
    ring = StagingRing(transfer, slots=slots, slot_bytes=slot_bytes)
    ring.load(path, pieces_of(chunks, slot_bytes), dst)
    expected = bytearray(dst.numel())
    for file_offset, length, dst_offset in chunks:
        expected[dst_offset : dst_offset + length] = data[file_offset : file_offset + length]
    assert bytes(dst.numpy()) == bytes(expected)
    assert len(ring.buffers) == slots and all(b.numel() == slot_bytes for b in ring.buffers)


def test_a_slot_is_waited_for_before_each_refill(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * 40)
    transfer = ThreadTransfer()
    ring = StagingRing(transfer, slots=3, slot_bytes=1000)
    ring.load(path, pieces_of([(0, 10_240, 0)], 1000), torch.zeros(10_240, dtype=torch.uint8))
    assert transfer.waits == [i % 3 for i in range(11)]


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="2 slots"):
        StagingRing(ThreadTransfer(), slots=1)
    ring = StagingRing(ThreadTransfer(), slots=2, slot_bytes=8)
    path = tmp_path / "blob"
    path.write_bytes(bytes(64))
    with pytest.raises(ValueError, match="larger than a slot"):
        ring.load(path, [Piece(0, 9, 0)], torch.zeros(64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="past dst"):
        ring.load(path, [Piece(0, 8, 60)], torch.zeros(64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="flat uint8"):
        ring.load(path, [Piece(0, 8, 0)], torch.zeros(8, dtype=torch.float32))


def _hash_through_ring(path, slot_bytes: int) -> dict[str, bool]:
    """Each stored tensor's piecewise digest, compared with its index entry."""
    unique, places, total = _arena_layout(read_header(path).tensors)
    seen: dict[str, bool] = {}

    def check(stored: StoredBytes) -> None:
        seen[stored.entry.name] = stored.digest == stored.entry.xxh3

    chunks = [(e.offset, e.nbytes, place) for e, place in zip(unique, places, strict=True)]
    ring = StagingRing(ThreadTransfer(delay_s=0.0), slots=2, slot_bytes=slot_bytes)
    ring.load(
        path,
        pieces_of(chunks, slot_bytes),
        torch.zeros(total, dtype=torch.uint8),
        PieceHashes(unique, check).add,
    )
    return seen


@pytest.mark.parametrize("slot_bytes", [4096, 1 << 20, 3 << 20])
def test_piecewise_checksums_match_the_index(tmp_path, slot_bytes):
    path = tmp_path / "m.swsnap"
    write_sample(path)
    seen = _hash_through_ring(path, slot_bytes)
    assert len(seen) == len(_unique(read_header(path).tensors)) and all(seen.values())


def test_a_flipped_byte_fails_only_its_tensor(tmp_path):
    path = tmp_path / "m.swsnap"
    write_sample(path)
    entry = read_header(path).entries()["layer.proj"]
    with open(path, "r+b") as file:
        file.seek(entry.offset + 5)
        byte = file.read(1)
        file.seek(entry.offset + 5)
        file.write(bytes([byte[0] ^ 1]))
    seen = _hash_through_ring(path, 1 << 20)
    assert [name for name, ok in seen.items() if not ok] == ["layer.proj"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA transfer needs a GPU")
def test_cuda_load_equals_the_file(tmp_path):
    path = tmp_path / "m.swsnap"
    write_sample(path)
    snapshot = load_snapshot(path, device="cuda", verify=True)
    for name, tensor in sample_tensors().items():
        assert snapshot.tensors[name].device.type == "cuda"
        assert torch.equal(snapshot.tensors[name].cpu(), tensor), name
