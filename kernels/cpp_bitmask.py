"""The 'cpp' backend's grammar mask: sets the logits of the tokens a bitmask disallows to -inf, in
place (csrc/cpu/token_bitmask.h; the reference is kernels/reference.py's apply_token_bitmask_).

Float32 logits with contiguous rows only (the runner's logits are float32): `supports` gives the
reason for anything else, and the caller masks another way.
"""

from __future__ import annotations

import torch
from swiftserve.kernels import cpp_native as native

NAME = "apply_token_bitmask"


def is_available() -> bool:
    """Whether this install's _C has the kernel (a _C built before it has not)."""
    return native.has(NAME)


def supports(logits: torch.Tensor) -> str | None:
    if logits.dtype != torch.float32:
        return f"logits are {logits.dtype} (the kernel takes float32)"
    if logits.dim() != 2 or logits.stride(-1) != 1:
        shape, strides = tuple(logits.shape), logits.stride()
        return f"logits must be 2-D with contiguous rows, got shape {shape} strides {strides}"
    return None


def apply_token_bitmask_(*, logits: torch.Tensor, bitmask: torch.Tensor, rows: list[int]) -> None:
    """logits[rows[k], t] = -inf where bit t of bitmask row k is clear (bit t % 32 of int32 word
    t // 32); tokens past the mask's width too. ValueError for inputs it cannot take."""
    native.check_cpu(NAME, logits=logits, bitmask=bitmask)
    native.unsupported(NAME, supports(logits))
    if bitmask.dtype != torch.int32 or bitmask.dim() != 2 or not bitmask.is_contiguous():
        raise ValueError(
            f"{NAME}: bitmask must be a contiguous 2-D int32 tensor, got {bitmask.dtype} {bitmask.shape}"
        )
    if bitmask.shape[0] != len(rows):
        raise ValueError(f"{NAME}: bitmask has {bitmask.shape[0]} rows for {len(rows)} logits rows")
    row_ids = torch.tensor(rows, dtype=torch.int64)
    native.calls.apply_token_bitmask(
        logits=logits.data_ptr(),
        logits_stride=logits.stride(0),
        num_logits_rows=logits.shape[0],
        bitmask=bitmask.data_ptr(),
        bitmask_stride=bitmask.shape[1],
        rows=row_ids.data_ptr(),
        num_rows=len(rows),
        vocab_size=logits.shape[1],
        num_words=bitmask.shape[1],
    )
