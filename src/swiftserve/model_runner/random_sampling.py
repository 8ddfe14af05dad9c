"""Random sampling of a group of rows: temperature, top-k, top-p, min-p, then one draw per row.

A draw is inverse-CDF sampling: one uniform number per row (the caller supplies them, so a seeded
row can draw from its own generator) located in the row's cumulative weights. That needs one
random number per row instead of one per vocabulary entry (the exponential race / Gumbel trick),
which on CPU costs more than the rest of sampling together. Nothing here sorts the vocabulary: a
full sort of 49k entries costs ~100x a pass over them on CPU.

Rows with top-k work in "candidate space", the row's k best tokens (vocab_ops.blocked_topk), sorted:

    candidates   c0   c1   c2  ...  c(k-1)
    top_p mask   keep while the (renormalised) mass before c_j < top_p
    min_p mask   keep while p_j >= min_p * p_0
    the kept set is a prefix c0..c(n-1)

Rows without top-k sample from the whole vocabulary. For top-p they use rejection sampling with a
rising pivot (the FlashInfer idea): draw j from the min-p filtered distribution; j is in the
nucleus iff the mass of tokens strictly more likely than j is < top_p; if not, no token as
unlikely as j is either, so drop every token with p <= p_j and draw again. Sampling a superset of
the nucleus and rejecting outside it gives exactly the nucleus distribution, and a first draw is
accepted with probability >= top_p. Most draws are accepted from per-block bounds ([rows, V/64]),
so only the ~(1 - top_p) rejected or undecided rows pay an exact pass over their row.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from swiftserve.model_runner.vocab_ops import block_sums_and_maxima, blocked_topk, draw

# A draw is rejected with probability < 1 - top_p, and each rejection removes the drawn token and
# everything less likely; rows still rejected after this many rounds fall back to a full sort.
_MAX_REJECTION_ROUNDS = 32

# Temperatures are clamped up to this. 1 / T must stay finite in float32 (a spec-valid 1e-40 made
# it inf, and inf * 0 a NaN weight); and below it every row has reached its limit anyway: float32
# logits that differ at all differ by >= ~1e-7 of their size, so exp(-difference / T) is 0 and the
# draw is uniform over the row's exactly tied best tokens.
MIN_TEMPERATURE = 1e-30
_EXACT_SHIFT_ABOVE = 100.0  # 1 / T past which the fused shift's rounding matters (see below)

Uniform = Callable[[int], torch.Tensor]  # n -> n uniform numbers in [0, 1)


def sample_rows(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    min_p: torch.Tensor,
    uniform: Uniform,
) -> torch.Tensor:
    """Sample one token id per row. logits [R, V] float32 (not modified); the others [R].

    temperature > 0; top_k <= 0 means off; top_p == 1 means off; min_p == 0 means off.
    Returns int64 [R].
    """
    temperature = temperature.clamp(min=MIN_TEMPERATURE)
    has_top_k = top_k > 0
    if bool(has_top_k.all()):
        return _sample_top_k(logits, temperature, top_k, top_p, min_p, uniform(logits.shape[0]))
    if not bool(has_top_k.any()):
        return _sample_full_vocab(logits, temperature, top_p, min_p, uniform)
    token_ids = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
    rows = has_top_k.nonzero().squeeze(1)
    u = uniform(len(rows))
    token_ids[rows] = _sample_top_k(logits[rows], temperature[rows], top_k[rows], top_p[rows], min_p[rows], u)
    rows = (~has_top_k).nonzero().squeeze(1)
    token_ids[rows] = _sample_full_vocab(logits[rows], temperature[rows], top_p[rows], min_p[rows], uniform)
    return token_ids


def _sample_top_k(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    min_p: torch.Tensor,
    uniform: torch.Tensor,
) -> torch.Tensor:
    vocab_size = logits.shape[-1]
    top_k = top_k.clamp(max=vocab_size)
    # topk before temperature: dividing by a positive temperature keeps the order, and scaling
    # k columns is cheaper than scaling the vocabulary.
    values, indices = blocked_topk(logits, int(top_k.max()))  # [R, k] sorted, best first
    values = values / temperature[:, None]
    position = torch.arange(values.shape[-1], device=logits.device)
    values.masked_fill_(position >= top_k[:, None], float("-inf"))
    if bool((top_p < 1).any()):
        probs = values.softmax(dim=-1)  # renormalised over the top-k set, as vLLM does
        mass_before = probs.cumsum(dim=-1).sub_(probs)
        # top_p == 1 must keep everything even when rounding pushes mass_before to 1.
        limit = torch.where(top_p < 1, top_p, float("inf"))[:, None]
        values.masked_fill_((mass_before >= limit) & (position > 0), float("-inf"))
    weights = values.sub_(values[:, :1].clone()).exp_()  # the best candidate has weight 1
    if bool((min_p > 0).any()):
        weights.masked_fill_(weights < min_p[:, None], 0.0)
    return indices.gather(1, draw(weights, uniform)[:, None]).squeeze(1)


def _sample_full_vocab(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    min_p: torch.Tensor,
    uniform: Uniform,
) -> torch.Tensor:
    # Masks below are float 0/1 multiplies: bool masked_fill / where over [R, V] is ~20x slower on CPU.
    inv_temperature = temperature.reciprocal()[:, None]
    row_max = logits.amax(dim=-1, keepdim=True)
    # weights = exp((logits - max) / T) in [0, 1], the best token 1; addcmul folds the shift and
    # the scale into one pass.
    if bool((inv_temperature > _EXACT_SHIFT_ABOVE).any()):
        # The fused form leaves the best token's exponent at +-ulp(max / T), which at a tiny T is
        # huge (exp of it inf or 0); shifting first makes it exactly 0.
        weights = (logits - row_max).mul_(inv_temperature).exp_()
    else:
        weights = torch.addcmul(-row_max * inv_temperature, logits, inv_temperature).exp_()
    has_top_p = top_p < 1
    total = weights.sum(dim=-1) if bool(has_top_p.any()) else None  # before min-p: top-p sees it all
    if bool((min_p > 0).any()):
        # relative to the row's own best weight: the fused shift leaves it a rounding off 1, and
        # min_p = 1 against 1 itself would drop every token
        threshold = min_p[:, None] * weights.amax(dim=-1, keepdim=True)
        weights.mul_((weights >= threshold).to(weights.dtype))
    token_ids = draw(weights, uniform(logits.shape[0]))
    if total is None:
        return token_ids
    rows = has_top_p.nonzero().squeeze(1)
    row_weights = weights if len(rows) == len(weights) else weights[rows]
    for _ in range(_MAX_REJECTION_ROUNDS):
        limit = top_p[rows] * total[rows]
        chosen = row_weights.gather(1, token_ids[rows][:, None])  # [A, 1]
        # Cheap first: the mass before the chosen token is at most the summed weight of the blocks
        # whose max beats it; below the limit, the token is accepted without a pass over the row.
        block_sums, block_maxima = block_sums_and_maxima(row_weights)
        upper = block_sums.mul_((block_maxima > chosen).to(block_sums.dtype)).sum(dim=-1)
        undecided = upper >= limit
        if not bool(undecided.any()):
            return token_ids
        if not bool(undecided.all()):
            rows, row_weights = rows[undecided], row_weights[undecided]
            chosen, limit = chosen[undecided], limit[undecided]
        # Exact: the weights above the chosen token (never min-p filtered: they beat a token that
        # is not) sum to the mass before it and, if it is rejected, are the next round's weights.
        above = row_weights.mul((row_weights > chosen).to(row_weights.dtype))
        rejected = above.sum(dim=-1) >= limit
        if not bool(rejected.any()):
            return token_ids
        rows, row_weights = rows[rejected], above[rejected]
        token_ids[rows] = draw(row_weights, uniform(len(rows)))
    # Pathological rows (many near-ties): the exact sort-based path.
    vocab = torch.full_like(rows, logits.shape[-1])
    token_ids[rows] = _sample_top_k(
        logits[rows], temperature[rows], vocab, top_p[rows], min_p[rows], uniform(len(rows))
    )
    return token_ids
