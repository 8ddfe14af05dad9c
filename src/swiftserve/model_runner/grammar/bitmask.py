"""Token bitmasks: [rows, ceil(vocab / 32)] int32, bit j of word i allowing token 32 * i + j.

Applying one sets every disallowed logit to -inf, so greedy, sampling, penalties and logprobs
all see only what the grammar allows.
"""

from __future__ import annotations

import numpy as np
import torch


def num_words(vocab_size: int) -> int:
    return (vocab_size + 31) // 32


def allocate_bitmask(num_rows: int, vocab_size: int) -> torch.Tensor:
    """All tokens allowed (every bit set)."""
    return torch.full((num_rows, num_words(vocab_size)), -1, dtype=torch.int32)


def unpack_bitmask(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[rows, vocab_size] bool, True where allowed, of a CPU bitmask. The int32 words are read as
    their little-endian bytes, so byte 4i + b holds tokens 32i + 8b .. 32i + 8b + 7, bit t of it
    token 32i + 8b + t: numpy's unpackbits in little bit order lays them out in token order
    (~20x faster here than shifting and masking 32 planes in torch)."""
    as_bytes = bitmask.numpy().view(np.uint8)  # [rows, words * 4]
    bits = np.unpackbits(as_bytes, axis=1, bitorder="little")[:, :vocab_size]
    allowed = torch.from_numpy(bits).view(torch.bool)
    if allowed.shape[1] < vocab_size:  # a mask narrower than the logits allows none of the rest
        rest = torch.zeros(allowed.shape[0], vocab_size - allowed.shape[1], dtype=torch.bool)
        allowed = torch.cat([allowed, rest], dim=1)
    return allowed


def apply_bitmask_(logits: torch.Tensor, bitmask: torch.Tensor, rows: list[int]) -> None:
    """Mask logits[rows[k]] with bitmask[k], in place; logits [num_rows, vocab] on any device,
    bitmask on the CPU (where the grammar backend fills it)."""
    disallowed = ~unpack_bitmask(bitmask, logits.shape[1]).to(logits.device, non_blocking=True)
    for k, row in enumerate(rows):
        logits[row].masked_fill_(disallowed[k], float("-inf"))
