"""Blocked top-k and two-level draws against torch.topk and the target distribution."""

from __future__ import annotations

import math

import pytest
import torch

from swiftserve.model_runner.vocab_ops import blocked_topk, draw

WIDTHS = [1, 19, 99, 989, 4096, 49152, 50001]
KS = [1, 5, 20, 50]
# top-k of a row narrower than k does not exist: those pairs are left out of the grid.
TOPK_CASES = [(width, k) for width in WIDTHS for k in KS if k <= width]


@pytest.mark.parametrize(("width", "k"), TOPK_CASES)
def test_blocked_topk_matches_torch_topk(width, k):
    torch.manual_seed(width + k)
    x = torch.randn(7, width)
    x[3] = x[3].round()  # many ties
    values, indices = blocked_topk(x, k)
    ref_values, _ = x.topk(k, dim=-1)
    torch.testing.assert_close(values, ref_values, rtol=0, atol=0)
    torch.testing.assert_close(x.gather(1, indices), values, rtol=0, atol=0)
    assert all(len(set(row)) == k for row in indices.tolist())


def test_blocked_topk_finds_values_in_the_ragged_tail():
    x = torch.zeros(2, 50001)
    x[0, 50000] = 5.0
    x[1, 49999] = 4.0
    values, indices = blocked_topk(x, 3)
    assert indices[:, 0].tolist() == [50000, 49999]


@pytest.mark.parametrize("width", [10, 3000, 49152, 50001])
def test_draw_matches_the_weights(width):
    """Chi-square over coarse bins of a skewed distribution; zero weights are never drawn."""
    gen = torch.Generator().manual_seed(width)
    weights = torch.rand(width, generator=gen) ** 8
    weights[::3] = 0.0  # never drawn, including whole-block and end-of-row zeros
    weights[-1] = 0.0
    n, chunk = 10000, 500
    batch = weights.expand(chunk, width).contiguous()
    token_ids = torch.cat([draw(batch, torch.rand(chunk, generator=gen)) for _ in range(n // chunk)])
    assert (weights[token_ids] > 0).all()
    num_bins = min(width, 10)
    bin_of = torch.arange(width) * num_bins // width
    expected = torch.zeros(num_bins).index_add_(0, bin_of, weights / weights.sum()) * n
    observed = torch.bincount(bin_of[token_ids], minlength=num_bins).float()
    live = expected > 0
    chi2 = float(((observed[live] - expected[live]) ** 2 / expected[live]).sum())
    dof = int(live.sum()) - 1
    assert chi2 < dof * (1 - 2 / (9 * dof) + 3.09 * math.sqrt(2 / (9 * dof))) ** 3


def test_draw_extreme_uniforms_stay_on_weighted_entries():
    weights = torch.zeros(3, 5000)
    weights[:, 1234] = 1.0
    weights[:, 4999 - 300] = 1e-30
    uniform = torch.tensor([0.0, 0.5, 1.0 - 2**-24])
    token_ids = draw(weights, uniform).tolist()
    assert set(token_ids) <= {1234, 4999 - 300}
    assert token_ids[0] == 1234
