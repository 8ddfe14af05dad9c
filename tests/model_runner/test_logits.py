"""float32_logits: bf16 LM head output whose best tokens are recomputed exactly in float32.

The reference is the same product in float64 from the same bf16 inputs (bf16 x bf16 products are
exact, so float64 sums are exact to ~1e-16): the refined argmax must be its argmax, and the
tokens within the refinement band of the best must have its values to float32 rounding.
"""

from __future__ import annotations

import pytest
import torch

from swiftserve.model_runner.logits import float32_logits, refine_margin


def _case(rows: int, vocab: int, hidden: int, seed: int, flat: bool = False):
    gen = torch.Generator().manual_seed(seed)
    h = (torch.randn(rows, hidden, generator=gen) * 2).bfloat16()
    w = (torch.randn(vocab, hidden, generator=gen) * 0.05).bfloat16()
    if flat:  # near-equal rows: many tokens inside the refinement band
        w = (w[:1].float() + torch.randn(vocab, hidden, generator=gen) * 1e-4).bfloat16()
    exact = h.double() @ w.double().T
    return h, w, exact


@pytest.mark.parametrize("rows,vocab,hidden", [(1, 7, 5), (3, 300, 64), (17, 4099, 96), (5, 49152, 576)])
def test_argmax_and_top_values_are_exact(rows, vocab, hidden):
    h, w, exact = _case(rows, vocab, hidden, seed=rows)
    out = float32_logits(h @ w.T, h, w)
    assert out.dtype == torch.float32 and out.shape == (rows, vocab)
    assert out.argmax(dim=-1).tolist() == exact.argmax(dim=-1).tolist()
    best = exact.max(dim=-1, keepdim=True).values
    band = exact >= best - refine_margin(best)  # every token that could have been the best
    torch.testing.assert_close(out.double()[band], exact[band], rtol=2e-6, atol=1e-5)
    # the rest keep the bf16 rounding (relative error <= 2^-8)
    torch.testing.assert_close(out.double(), exact, rtol=2**-8, atol=1e-2)


def test_flat_rows_take_the_full_row_path():
    h, w, exact = _case(4, 1000, 64, seed=3, flat=True)
    bf16 = h @ w.T
    assert (bf16 == bf16.max(dim=-1, keepdim=True).values).sum() > 4  # exact bf16 ties at the top
    out = float32_logits(bf16, h, w)
    assert out.argmax(dim=-1).tolist() == exact.argmax(dim=-1).tolist()
    torch.testing.assert_close(out.double(), exact, rtol=2e-6, atol=1e-5)


def test_result_does_not_depend_on_the_batch():
    h, w, _ = _case(9, 3000, 128, seed=5)
    batched = float32_logits(h @ w.T, h, w)
    for row in (0, 4, 8):
        alone = float32_logits(h[row : row + 1] @ w.T, h[row : row + 1], w)
        top = batched[row].topk(8).indices
        assert torch.equal(alone[0, top], batched[row, top])


def test_float32_and_empty_inputs_pass_through():
    h, w, _ = _case(2, 50, 8, seed=1)
    logits32 = h.float() @ w.float().T
    assert float32_logits(logits32, h.float(), w.float()) is logits32
    empty = float32_logits((h @ w.T)[:0], h[:0], w)
    assert empty.shape == (0, 50) and empty.dtype == torch.float32
