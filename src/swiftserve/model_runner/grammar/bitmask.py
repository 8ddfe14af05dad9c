"""Token bitmasks: [rows, ceil(vocab / 32)] int32, bit j of word i allowing token 32 * i + j.

Applying one sets every disallowed logit to -inf, so greedy, sampling, penalties and logprobs
all see only what the grammar allows.
"""

from __future__ import annotations

import torch

_BITS = torch.arange(32, dtype=torch.int32)


def num_words(vocab_size: int) -> int:
    return (vocab_size + 31) // 32


def allocate_bitmask(num_rows: int, vocab_size: int) -> torch.Tensor:
    """All tokens allowed (every bit set)."""
    return torch.full((num_rows, num_words(vocab_size)), -1, dtype=torch.int32)


def apply_bitmask_(logits: torch.Tensor, bitmask: torch.Tensor, rows: list[int]) -> None:
    """Mask logits[rows[k]] with bitmask[k], in place; logits [num_rows, vocab] on any device."""
    vocab_size = logits.shape[1]
    mask = bitmask.to(logits.device, non_blocking=True)
    bits = _BITS.to(logits.device)
    # [k, words] -> [k, words, 32] -> [k, words * 32]: token 32 * i + j is bit j of word i.
    allowed = ((mask.unsqueeze(-1) >> bits) & 1).view(mask.shape[0], -1)[:, :vocab_size].bool()
    if allowed.shape[1] < vocab_size:  # a mask narrower than the logits allows none of the rest
        pad = torch.zeros(
            mask.shape[0], vocab_size - allowed.shape[1], dtype=torch.bool, device=logits.device
        )
        allowed = torch.cat([allowed, pad], dim=1)
    index = torch.tensor(rows, dtype=torch.long, device=logits.device)
    logits[index] = logits[index].masked_fill(~allowed, float("-inf"))
