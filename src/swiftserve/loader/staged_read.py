"""Reading a file into device memory through a ring of pinned host buffers (the CUDA load path).

A GPU cannot be the destination of a file read, so bytes pass through host memory. Reading the
whole file into host memory first, then copying it, would cost the file's size in host memory
and serialize the disk and the copy. Instead, `slots` pinned buffers of `slot_bytes` each take
turns: the native reader fills slot i (the GIL released) while the device copies slot i-1 out
asynchronously on its own stream; a slot is refilled only after the event recorded behind its
last copy has completed. Host memory used: slots x slot_bytes, whatever the model's size.

    ring = StagingRing(CudaTransfer(device), slots=4, slot_bytes=64 << 20)
    ring.load(path, pieces_of(chunks, ring.slot_bytes), device_arena)

Transfer is the device side (copy, event, wait), so the ring's ordering is tested on the CPU with
a transfer that copies on a worker thread (tests/loader/test_staged_read.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from swiftserve.loader.chunk_read import Chunk, read_into

DEFAULT_SLOTS = 4
DEFAULT_SLOT_BYTES = 64 << 20  # as chunk_read's largest single read, measured there


@dataclass(frozen=True)
class Piece:
    """`length` bytes of the file at `file_offset`, for the destination arena at `dst_offset`."""

    file_offset: int
    length: int
    dst_offset: int


class Transfer(Protocol):
    """The device side of the ring: one asynchronous copy queue with an event per slot."""

    def pinned(self, nbytes: int) -> torch.Tensor: ...

    def copy_async(self, slot: int, dst: torch.Tensor, src: torch.Tensor) -> None:
        """Queues dst.copy_(src) and records slot's event after it."""

    def wait(self, slot: int) -> None:
        """Returns once every copy queued from slot has completed."""

    def finish(self) -> None:
        """Returns once every queued copy has completed."""


def pieces_of(chunks: Iterable[tuple[int, int, int]], slot_bytes: int) -> list[Piece]:
    """(file_offset, length, dst_offset) chunks cut into pieces of at most slot_bytes."""
    if slot_bytes < 1:
        raise ValueError(f"slot_bytes must be >= 1, got {slot_bytes}")
    pieces = []
    for file_offset, length, dst_offset in chunks:
        for start in range(0, length, slot_bytes):
            size = min(slot_bytes, length - start)
            pieces.append(Piece(file_offset + start, size, dst_offset + start))
    return pieces


class StagingRing:
    """See the module docstring. `on_staged(piece, host_bytes)` sees each piece while it is in
    its slot (checksums are computed there, beside the device copy)."""

    def __init__(
        self, transfer: Transfer, *, slots: int = DEFAULT_SLOTS, slot_bytes: int = DEFAULT_SLOT_BYTES
    ) -> None:
        if slots < 2:
            raise ValueError(f"a ring needs >= 2 slots to overlap reads and copies, got {slots}")
        self.transfer, self.slot_bytes = transfer, slot_bytes
        self.buffers = [transfer.pinned(slot_bytes) for _ in range(slots)]

    def load(
        self,
        path: str | Path,
        pieces: list[Piece],
        dst: torch.Tensor,
        on_staged: Callable[[Piece, torch.Tensor], None] | None = None,
    ) -> None:
        """Every piece of path into dst (a flat uint8 device tensor); returns once all have landed."""
        _check(pieces, dst, self.slot_bytes)
        try:
            for i, piece in enumerate(pieces):
                slot = i % len(self.buffers)
                self.transfer.wait(slot)  # its previous copy must be done before it is refilled
                staged = self.buffers[slot][: piece.length]
                read_into(path, [Chunk(piece.file_offset, piece.length, staged)])
                if on_staged is not None:
                    on_staged(piece, staged)
                target = dst[piece.dst_offset : piece.dst_offset + piece.length]
                self.transfer.copy_async(slot, target, staged)
        finally:
            self.transfer.finish()  # never leave copies in flight from buffers about to be freed


def _check(pieces: list[Piece], dst: torch.Tensor, slot_bytes: int) -> None:
    if dst.dtype != torch.uint8 or dst.dim() != 1:
        raise ValueError(f"dst must be a flat uint8 tensor, got {dst.dtype} of shape {tuple(dst.shape)}")
    for piece in pieces:
        if piece.length > slot_bytes:
            raise ValueError(f"piece of {piece.length} bytes is larger than a slot ({slot_bytes})")
        if piece.dst_offset + piece.length > dst.numel():
            raise ValueError(f"piece ends at {piece.dst_offset + piece.length}, past dst's {dst.numel()}")


class CudaTransfer:
    """Copies on a stream of their own (so they overlap the reads and the default stream's
    work), one CUDA event per slot."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device=device)
        self.events: dict[int, torch.cuda.Event] = {}

    def pinned(self, nbytes: int) -> torch.Tensor:
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)

    def copy_async(self, slot: int, dst: torch.Tensor, src: torch.Tensor) -> None:
        with torch.cuda.stream(self.stream):
            dst.copy_(src, non_blocking=True)
            event = self.events.setdefault(slot, torch.cuda.Event())
            event.record(self.stream)

    def wait(self, slot: int) -> None:
        event = self.events.get(slot)
        if event is not None:
            event.synchronize()

    def finish(self) -> None:
        self.stream.synchronize()
