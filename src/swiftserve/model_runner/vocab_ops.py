"""Row-wise operations over a vocabulary-wide tensor that avoid full-width sorts and scans.

On CPU the obvious ops are slow at [rows, 49k]: torch.topk (a partial sort per row) costs ~25x
a pass over the data, cumsum is a serial scan (~5x a sum), and bool-mask ops (masked_fill, where)
take ~20x a float multiply. Both helpers here split each row into fixed-size blocks:

    row    | b0 ........ | b1 ........ | ... | b(nb-1) ... | tail (< block) |
    pass 1: one value per block (max or sum), [rows, nb]: a cheap reduction
    pass 2: work on the few blocks that matter, [rows, k * block] or [rows, block]
"""

from __future__ import annotations

import torch

_TOPK_BLOCK = 64
_DRAW_BLOCK = 256


def blocked_topk(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.topk(x, k, dim=-1) for 2-D x (sorted, best first), faster when k << x.shape[-1].

    The k largest values lie in the k blocks with the largest maxima (a value outside them is
    beaten by k block maxima), so only those blocks are searched. Values equal torch.topk's;
    among tied values the indices may differ.
    """
    num_rows, width = x.shape
    num_blocks = width // _TOPK_BLOCK
    if k * _TOPK_BLOCK * 4 > width or num_blocks <= k:
        return x.topk(k, dim=-1)
    main = num_blocks * _TOPK_BLOCK
    block_max = x[:, :main].unflatten(1, (num_blocks, _TOPK_BLOCK)).amax(dim=-1)  # [R, nb]
    best_blocks = block_max.topk(k, dim=-1).indices  # [R, k]
    offsets = torch.arange(_TOPK_BLOCK, device=x.device)
    candidates = (best_blocks[:, :, None] * _TOPK_BLOCK + offsets).flatten(1)  # [R, k * block]
    if main < width:  # the ragged tail is always searched
        tail = torch.arange(main, width, device=x.device).expand(num_rows, width - main)
        candidates = torch.cat([candidates, tail], dim=1)
    values, position = x.gather(1, candidates).topk(k, dim=-1)
    return values, candidates.gather(1, position)


def block_sums_and_maxima(x: torch.Tensor, block: int = _TOPK_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block sums and maxima of 2-D x, [R, num_blocks] each; a ragged tail is one more block."""
    width = x.shape[-1]
    main = width - width % block
    blocks = x[:, :main].unflatten(1, (-1, block))
    sums, maxima = blocks.sum(dim=-1), blocks.amax(dim=-1)
    if main < width:
        tail = x[:, main:]
        sums = torch.cat([sums, tail.sum(dim=-1, keepdim=True)], dim=1)
        maxima = torch.cat([maxima, tail.amax(dim=-1, keepdim=True)], dim=1)
    return sums, maxima


def draw(weights: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sample per row: index i with probability weights[i] / sum(weights).

    weights [R, V] non-negative with a positive sum per row; uniform [R] in [0, 1). Zero-weight
    entries are never chosen. Two levels: pick a block by its cumulative block sums, then an entry
    inside it, so only one block per row is ever scanned.
    """
    num_rows, width = weights.shape
    if width <= 4 * _DRAW_BLOCK:
        return _draw_flat(weights.cumsum(dim=-1), uniform)
    if width % _DRAW_BLOCK:
        weights = torch.nn.functional.pad(weights, (0, _DRAW_BLOCK - width % _DRAW_BLOCK))
    blocks = weights.unflatten(1, (-1, _DRAW_BLOCK))  # [R, nb, block]
    block_cdf = blocks.sum(dim=-1).cumsum(dim=-1)  # [R, nb]
    total = block_cdf[:, -1:]
    target = uniform.to(weights.dtype)[:, None] * total  # [R, 1]
    block = _search(block_cdf, target)  # [R, 1]
    before = torch.where(block > 0, block_cdf.gather(1, (block - 1).clamp_(min=0)), 0.0)
    inner = blocks.gather(1, block[:, :, None].expand(num_rows, 1, _DRAW_BLOCK)).squeeze(1)
    # Rounding may leave target - before a hair above the block's own sum: _search clamps it.
    entry = _search(inner.cumsum(dim=-1), target - before)
    return (block * _DRAW_BLOCK + entry).squeeze(1)


def _draw_flat(cdf: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    return _search(cdf, uniform.to(cdf.dtype)[:, None] * cdf[:, -1:]).squeeze(1)


def _search(cdf: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """First index whose cdf exceeds target [R, 1], clamped to the last index holding weight (the
    first index where the cdf reaches its total) for targets rounded up to the total."""
    index = torch.searchsorted(cdf, target.contiguous(), right=True)
    last = torch.searchsorted(cdf, cdf[:, -1:].contiguous(), right=False)
    return torch.minimum(index, last)
