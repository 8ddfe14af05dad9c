"""Pure-torch reference for every kernel: the ground truth in tests and the portable fallback.

Cache layout (flash-attn's paged layout): k_cache, v_cache [num_blocks, block_size, num_kv_heads, head_dim].
A slot is block_id * block_size + offset; slot -1 means "do not store" (padding or skipped tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def status() -> str:
    return f"pure torch {torch.__version__}, the reference for every op"


def store_kv(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """k, v [num_tokens, num_kv_heads, head_dim] written into the cache at slot_mapping [num_tokens]."""
    valid = slot_mapping >= 0
    slots = slot_mapping[valid].long()
    block_size = k_cache.shape[1]
    k_flat = k_cache.view(-1, *k_cache.shape[2:])  # [num_blocks * block_size, kv_heads, head_dim]
    v_flat = v_cache.view(-1, *v_cache.shape[2:])
    assert k_flat.shape[0] == k_cache.shape[0] * block_size
    k_flat[slots] = k[valid].to(k_cache.dtype)
    v_flat[slots] = v[valid].to(v_cache.dtype)


def gather_kv(cache: torch.Tensor, block_table: torch.Tensor, context_len: int) -> torch.Tensor:
    """The first context_len cached tokens of one sequence: [context_len, num_kv_heads, head_dim]."""
    block_size = cache.shape[1]
    num_blocks = (context_len + block_size - 1) // block_size
    blocks = cache[block_table[:num_blocks].long()]  # [num_blocks, block_size, kv_heads, head_dim]
    return blocks.reshape(-1, *cache.shape[2:])[:context_len]


def _attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    q_pos: torch.Tensor,
    sliding_window: int | None,
) -> torch.Tensor:
    """q [q_len, heads, d] at absolute positions q_pos; k, v [ctx, kv_heads, d] at positions 0..ctx-1."""
    num_heads, num_kv_heads = q.shape[1], k.shape[1]
    group = num_heads // num_kv_heads
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), k.float()) * scale
    k_pos = torch.arange(k.shape[0], device=q.device)
    mask = k_pos[None, :] > q_pos[:, None]
    if sliding_window is not None:
        mask |= k_pos[None, :] <= q_pos[:, None] - sliding_window
    scores.masked_fill_(mask[None], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.einsum("hqk,khd->qhd", probs, v.float()).to(q.dtype)


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """One query token per sequence, the last of its context. q [num_seqs, num_heads, head_dim]."""
    out = torch.empty_like(q)
    for i, ctx in enumerate(context_lens.tolist()):
        k = gather_kv(k_cache, block_tables[i], ctx)
        v = gather_kv(v_cache, block_tables[i], ctx)
        q_pos = torch.tensor([ctx - 1], device=q.device)
        out[i] = _attend(q[i : i + 1], k, v, scale, q_pos, sliding_window)[0]
    return out


def paged_prefill_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    query_start_loc: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """Varlen causal attention over the paged cache.

    q [num_tokens, num_heads, head_dim] holds each sequence's new tokens back to back;
    query_start_loc int32 [num_seqs + 1] delimits them. context_lens counts each sequence's tokens
    including the new ones (already stored in the cache), so the new tokens sit at positions
    context_len - query_len .. context_len - 1.
    """
    out = torch.empty_like(q)
    starts = query_start_loc.tolist()
    for i, ctx in enumerate(context_lens.tolist()):
        begin, end = starts[i], starts[i + 1]
        if end == begin:
            continue
        k = gather_kv(k_cache, block_tables[i], ctx)
        v = gather_kv(v_cache, block_tables[i], ctx)
        q_pos = torch.arange(ctx - (end - begin), ctx, device=q.device)
        out[begin:end] = _attend(q[begin:end], k, v, scale, q_pos, sliding_window)
    return out


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    var = xf.pow(2).mean(dim=-1, keepdim=True)
    return (xf * torch.rsqrt(var + eps)).to(x.dtype) * weight


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> torch.Tensor:
    """residual += x; x = rms_norm(residual). Both in place; returns residual."""
    residual.add_(x)
    x.copy_(rms_norm(residual, weight, eps))
    return residual


def rotary_embedding(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    is_neox: bool = True,
) -> None:
    """Rotates q [num_tokens, num_heads, head_dim] and k [num_tokens, num_kv_heads, head_dim] in place.

    cos_sin_cache [max_position, rot_dim]: cos in the first rot_dim/2 columns, sin in the rest.
    Only the first rot_dim features of each head rotate (partial rotary).
    """
    cos_sin = cos_sin_cache[positions.long()].float()
    cos, sin = cos_sin.chunk(2, dim=-1)  # [num_tokens, rot_dim / 2]
    for t in (q, k):
        rot_dim = cos_sin_cache.shape[-1]
        rot = t[..., :rot_dim].float()
        if is_neox:
            x1, x2 = rot.chunk(2, dim=-1)
        else:
            x1, x2 = rot[..., 0::2], rot[..., 1::2]
        c, s = cos[:, None, :], sin[:, None, :]
        o1, o2 = x1 * c - x2 * s, x2 * c + x1 * s
        out = torch.cat((o1, o2), dim=-1) if is_neox else torch.stack((o1, o2), dim=-1).flatten(-2)
        t[..., :rot_dim] = out.to(t.dtype)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x [..., 2d] -> silu(x[..., :d]) * x[..., d:]."""
    d = x.shape[-1] // 2
    return F.silu(x[..., :d]) * x[..., d:]


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., in_features] @ weight [out_features, in_features]^T (+ bias)."""
    return F.linear(x, weight, bias)


def apply_token_bitmask_(logits: torch.Tensor, bitmask: torch.Tensor, rows: list[int]) -> None:
    """logits[rows[k], t] = -inf where bit t % 32 of bitmask[k, t // 32] (int32) is clear; tokens past
    the mask's width too. In place, on logits [num_logits_rows, vocab] of any float dtype."""
    vocab = logits.shape[1]
    shifts = torch.arange(32, dtype=torch.int32)
    bits = (bitmask.unsqueeze(-1) >> shifts) & 1  # [rows, words, 32], token order
    allowed = torch.zeros((bitmask.shape[0], vocab), dtype=torch.bool)
    width = min(vocab, bitmask.shape[1] * 32)
    allowed[:, :width] = bits.reshape(bitmask.shape[0], -1)[:, :width].bool()
    for k, row in enumerate(rows):
        logits[row].masked_fill_(~allowed[k].to(logits.device), float("-inf"))
