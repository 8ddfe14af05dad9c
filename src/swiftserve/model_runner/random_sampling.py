"""Random sampling of a group of rows: temperature, top-k, top-p, min-p, then one draw per row.

A draw is inverse-CDF sampling: one uniform number per row (the caller supplies them, so a seeded
row can draw from its own generator) located in the row's cumulative weights. That needs one
random number per row instead of one per vocabulary entry (the exponential race / Gumbel trick),
which on CPU costs more than the rest of sampling together.

Rows with top-k or top-p work in "candidate space": the row's K best tokens, sorted, found with
torch.topk. A full sort of a 49k vocabulary costs ~100x a top-256 on CPU, so a top-p-only row first
tries a few hundred candidates and falls back to more only when they do not hold top_p of the mass:

    sorted candidates   c0   c1   c2  ...  c(K-1) | rest of the vocabulary (never sorted)
    top_k mask          keep up to k_row          |
    top_p mask          keep while mass before c_j < top_p   (needs the full-row normaliser when
                                                              top_k is off: lse_full)
    min_p mask          keep while p_j >= min_p * p_0
    the kept set is always a prefix c0..c(n-1), so a draw never lands past it
"""

from __future__ import annotations

import math

import torch

# Candidate counts tried for rows with top-p but no top-k, smallest first; the last resort is the
# whole vocabulary (a full sort).
_TOP_P_CANDIDATES = (256, 2048)


def sample_rows(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    min_p: torch.Tensor,
    uniform: torch.Tensor,
) -> torch.Tensor:
    """Sample one token id per row. logits [R, V] float32 (modified in place); the others [R].

    temperature > 0; top_k <= 0 means off; top_p == 1 means off; min_p == 0 means off;
    uniform in [0, 1). Returns int64 [R].
    """
    logits.div_(temperature[:, None])
    use_candidates = (top_k > 0) | (top_p < 1)
    if bool(use_candidates.all()):
        return _sample_candidates(logits, top_k, top_p, min_p, uniform)
    if not bool(use_candidates.any()):
        return _sample_full(logits, min_p, uniform)
    token_ids = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
    cand = use_candidates.nonzero().squeeze(1)
    full = (~use_candidates).nonzero().squeeze(1)
    token_ids[cand] = _sample_candidates(logits[cand], top_k[cand], top_p[cand], min_p[cand], uniform[cand])
    token_ids[full] = _sample_full(logits[full], min_p[full], uniform[full])
    return token_ids


def _sample_full(logits: torch.Tensor, min_p: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Rows with neither top-k nor top-p: draw from the whole (min-p filtered) distribution."""
    row_max = logits.amax(dim=-1, keepdim=True)
    weights = logits.sub_(row_max).exp_()  # in [0, 1], the max is 1
    if bool((min_p > 0).any()):
        weights.masked_fill_(weights < min_p[:, None], 0.0)
    return _draw(weights.cumsum_(dim=-1), uniform)


def _sample_candidates(
    logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor, uniform: torch.Tensor
) -> torch.Tensor:
    vocab_size = logits.shape[-1]
    k_row = torch.where(top_k > 0, top_k.clamp(max=vocab_size), vocab_size)
    needs_full_norm = (top_k <= 0) & (top_p < 1)
    has_top_k = top_k > 0
    num_cand = int(k_row[has_top_k].max()) if bool(has_top_k.any()) else 0
    lse_full = None
    if bool(needs_full_norm.any()):
        lse_full = logits[needs_full_norm].logsumexp(dim=-1)
        log_p = top_p[needs_full_norm].log()
        for tried in (*_TOP_P_CANDIDATES, vocab_size):
            k = min(max(num_cand, tried), vocab_size)
            values, indices = logits.topk(k, dim=-1)
            # The K candidates hold enough mass when their share of the row reaches top_p.
            covered = values[needs_full_norm].logsumexp(dim=-1) - lse_full >= log_p
            if k == vocab_size or bool(covered.all()):
                break
    else:
        values, indices = logits.topk(min(num_cand, vocab_size), dim=-1)
    num_cand = values.shape[-1]
    position = torch.arange(num_cand, device=logits.device)

    values.masked_fill_(position >= k_row[:, None], float("-inf"))
    if bool((top_p < 1).any()):
        lse = values.logsumexp(dim=-1)
        if lse_full is not None:
            lse[needs_full_norm] = lse_full
        probs = (values - lse[:, None]).exp_()
        mass_before = probs.cumsum(dim=-1).sub_(probs)
        # top_p == 1 must keep everything even when rounding pushes mass_before to 1.
        limit = torch.where(top_p < 1, top_p, math.inf)[:, None]
        values.masked_fill_((mass_before >= limit) & (position > 0), float("-inf"))
    weights = values.sub_(values[:, :1].clone()).exp_()  # the best candidate is always kept, weight 1
    if bool((min_p > 0).any()):
        weights.masked_fill_(weights < min_p[:, None], 0.0)
    choice = _draw(weights.cumsum_(dim=-1), uniform)
    return indices.gather(1, choice[:, None]).squeeze(1)


def _draw(cdf: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """First index whose cumulative weight exceeds uniform * total: zero-weight entries never win.

    Rounding can put the target at the total itself; the result is then clamped to the last entry
    that holds weight (the first index where the cdf reaches its total).
    """
    total = cdf[:, -1:].contiguous()
    token_ids = torch.searchsorted(cdf, uniform.to(cdf.dtype)[:, None] * total, right=True)
    last_kept = torch.searchsorted(cdf, total, right=False)
    return torch.minimum(token_ids, last_kept).squeeze(1)
