"""Token bitmasks: [rows, ceil(vocab / 32)] int32, bit j of word i allowing token 32 * i + j.

Applying one sets every disallowed logit to -inf, so greedy, sampling, penalties and logprobs
all see only what the grammar allows.
"""

from __future__ import annotations

import logging
from functools import cache

import numpy as np
import torch

from swiftserve.kernels import cpp_bitmask, cpp_native

logger = logging.getLogger("swiftserve.grammar")

_NUMPY_DTYPES = (torch.float32, torch.float64, torch.float16)


def num_words(vocab_size: int) -> int:
    return (vocab_size + 31) // 32


def allocate_bitmask(num_rows: int, vocab_size: int) -> torch.Tensor:
    """All tokens allowed (every bit set)."""
    return torch.full((num_rows, num_words(vocab_size)), -1, dtype=torch.int32)


def disallowed_tokens(bitmask: torch.Tensor, vocab_size: int) -> np.ndarray:
    """[rows, vocab_size] bool, True where NOT allowed, of a CPU bitmask. The int32 words are read
    as their little-endian bytes, so byte 4i + b holds tokens 32i + 8b .. 32i + 8b + 7, bit t of it
    token 32i + 8b + t: numpy's unpackbits in little bit order lays them out in token order."""
    as_bytes = bitmask.numpy().view(np.uint8)  # [rows, words * 4]
    bits = np.unpackbits(as_bytes, axis=1, bitorder="little")
    disallowed = np.ones((bits.shape[0], vocab_size), dtype=bool)  # past the mask: not allowed
    width = min(vocab_size, bits.shape[1])
    np.equal(bits[:, :width], 0, out=disallowed[:, :width])
    return disallowed


def apply_bitmask_(logits: torch.Tensor, bitmask: torch.Tensor, rows: list[int]) -> None:
    """Mask logits[rows[k]] with bitmask[k], in place; logits [num_rows, vocab] on any device,
    bitmask on the CPU (where the grammar backend fills it).

    On the CPU the C++ kernel reads the bits in place, on this thread (kernels/cpp_bitmask.py);
    without it numpy unpacks the bits and writes the rows, also on this thread: torch would run
    each row's fill as an OpenMP region, and with the cores busy (the model's own threads, other
    engines) those forks cost milliseconds each (31 ms p99 per step, benchmarks/structured.py)."""
    if logits.device.type == "cpu":
        why_not = _native_reason(logits)
        if why_not is None:
            cpp_bitmask.apply_token_bitmask_(logits=logits, bitmask=bitmask, rows=rows)
            return
        _log_fallback(why_not)
    if logits.device.type == "cpu" and logits.dtype in _NUMPY_DTYPES and logits.is_contiguous():
        apply_bitmask_numpy_(logits, bitmask, rows)
        return
    full = torch.zeros(logits.shape, dtype=torch.bool)
    full[rows] = torch.from_numpy(disallowed_tokens(bitmask, logits.shape[1]))
    logits.masked_fill_(full.to(logits.device, non_blocking=True), float("-inf"))


def apply_bitmask_numpy_(logits: torch.Tensor, bitmask: torch.Tensor, rows: list[int]) -> None:
    """The fallback without the kernel: CPU logits of a numpy dtype, contiguous; on this thread."""
    disallowed, values = disallowed_tokens(bitmask, logits.shape[1]), logits.numpy()
    for k, row in enumerate(rows):
        np.copyto(values[row], -np.inf, where=disallowed[k])


def _native_reason(logits: torch.Tensor) -> str | None:
    if not cpp_bitmask.is_available():
        return (
            cpp_native.IMPORT_ERROR or "this build of swiftserve._C has no apply_token_bitmask (rebuild it)"
        )
    return cpp_bitmask.supports(logits)


@cache
def _log_fallback(reason: str) -> None:
    logger.warning("grammar masks applied without the C++ kernel (%s): slower, with numpy", reason)
