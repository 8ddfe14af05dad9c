"""Final hidden states -> float32 logits, with the best tokens of each row exact in float32.

A bf16 LM head accumulates in fp32 but rounds every logit to bf16: 8 significant bits, so logits
near 20 land on a grid 0.125 apart. Near the top of a row many tokens then tie exactly, and the
smallest change in the hidden state (a prefix-cache hit or another batch shape rounds the layers
differently) moves one across a grid line and flips the greedy choice. Measured on 50 chat
prompts (benchmarks/greedy_repeat.py), half the flips were exact bf16 ties, the rest 1-2 steps.

Torch on CPU has no bf16 x bf16 -> fp32 matmul, _C's linear rounds to its input dtype, and a fp32
copy of the weight costs 2.2-3x the LM head's time (it reads twice the bytes). So the bf16 matmul
stays, and per row only the tokens that could be the best once rounding is undone are recomputed
in fp32 from the same bf16 inputs:

    bf16 logits b = round(z), |b - z| <= 2^-8 |z|          (z: the fp32-accumulated logit)
    candidates  = { j : b_j >= max(b) - margin },  margin = 2^-6 (|max(b)| + 1) > 2 * 2^-8 |z|
    a token outside the candidates has z_j < max(z), so the argmax over the recomputed row is
    the argmax of fp32-output logits, and the candidates' logits (the top of the row, what top-k,
    top-p and top logprobs look at first) are those of an fp32-output matmul

The other logits keep the bf16 rounding (relative error <= 2^-9). The recomputation is a fixed
multiply and sum per (row, candidate), so its result does not depend on what else is in the batch.
Cost (SmolLM2, vocab 49152): ~0.1 ms a step at 1-8 rows, ~4 ms at 128 rows on top of 3-22 ms for
the matmul (benchmarks/results/greedy_repeat_after.json).
"""

from __future__ import annotations

import torch

from swiftserve.model_runner.vocab_ops import blocked_topk

# Candidate counts tried in turn; a row whose band holds more tokens than the last gets the
# whole row recomputed in fp32 (a flat row of near-equal logits; rare).
_CANDIDATE_COUNTS = (8, 256)
_FULL_ROW_CHUNK = 4096  # weight rows converted to fp32 at a time on the full-row path


def refine_margin(best: torch.Tensor) -> torch.Tensor:
    """How far below a row's best bf16 logit a token may still be the best in fp32 (see above)."""
    return (best.abs() + 1.0) * 2.0**-6


def float32_logits(logits: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """float32 logits [R, V] from an LM head's output `logits` = hidden [R, H] @ weight[V, H]^T.

    float32 outputs are returned as they are; bf16 / fp16 ones are upcast and each row's
    candidates for the best token are recomputed exactly (module docstring).
    """
    if logits.dtype == torch.float32:
        return logits
    logits = logits.float()
    if logits.shape[0] == 0:
        return logits
    hidden32 = hidden.float()
    rows = torch.arange(logits.shape[0], device=logits.device)
    for count in _CANDIDATE_COUNTS:
        if count >= logits.shape[1]:
            break
        values, ids = blocked_topk(logits[rows], count)  # [r, count], best first
        threshold = values[:, 0] - refine_margin(values[:, 0])
        _recompute(logits, rows, ids, hidden32, weight)
        overflow = values[:, -1] >= threshold  # the band may hold more tokens than `count`
        if not bool(overflow.any()):
            return logits
        rows = rows[overflow]
    for row in rows.tolist():
        logits[row] = _full_row(hidden32[row], weight)
    return logits


def _recompute(
    logits: torch.Tensor, rows: torch.Tensor, ids: torch.Tensor, hidden32: torch.Tensor, weight: torch.Tensor
) -> None:
    """logits[rows[i], ids[i, j]] = hidden[rows[i]] . weight[ids[i, j]] in fp32 (bf16 products
    are exact in fp32; the sum runs over the hidden dimension in one fixed order)."""
    w = weight[ids].float()  # [r, count, H]
    exact = (w * hidden32[rows][:, None, :]).sum(dim=-1)  # [r, count]
    logits[rows[:, None], ids] = exact


def _full_row(hidden32: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    parts = [
        (weight[start : start + _FULL_ROW_CHUNK].float() * hidden32).sum(dim=-1)
        for start in range(0, weight.shape[0], _FULL_ROW_CHUNK)
    ]
    return torch.cat(parts)
