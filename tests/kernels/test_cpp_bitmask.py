"""The C++ grammar mask against kernels.reference and against a bit-by-bit reading of the mask."""

from __future__ import annotations

import pytest
import torch
from swiftserve.kernels import cpp_bitmask, reference
from swiftserve.kernels.errors import UnsupportedInputError

pytestmark = pytest.mark.skipif(
    not cpp_bitmask.is_available(),
    reason="swiftserve._C is not built with apply_token_bitmask (pip install -e .)",
)

# (vocab, words): exact words, a tail word, a mask narrower than the vocabulary (the rest is
# disallowed), one wider (its extra bits ignored), SmolLM2's and Gemma 3's vocabularies.
SIZES = [(1, 1), (31, 1), (32, 1), (33, 2), (100, 2), (40, 3), (49152, 1536), (262145, 8193)]


def _random_mask(rows: int, words: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.randint(-(2**31), 2**31 - 1, (rows, words), generator=gen, dtype=torch.int32)
    mask[:, ::3] = 0  # whole words disallowed and allowed, as grammars make them
    mask[:, 1::5] = -1
    return mask


def _bit_by_bit(logits: torch.Tensor, mask: torch.Tensor, rows: list[int]) -> torch.Tensor:
    expected = logits.clone()
    words = mask.tolist()
    for k, row in enumerate(rows):
        for t in range(logits.shape[1]):
            w = t // 32
            if w >= len(words[k]) or not (words[k][w] >> (t % 32)) & 1:
                expected[row, t] = float("-inf")
    return expected


@pytest.mark.parametrize(("vocab", "words"), SIZES, ids=[f"{v}x{w}" for v, w in SIZES])
def test_matches_reference(vocab, words):
    logits = torch.randn(5, vocab, generator=torch.Generator().manual_seed(vocab))
    rows = [3, 0, 4]
    mask = _random_mask(len(rows), words, seed=words)
    expected = logits.clone()
    reference.apply_token_bitmask_(expected, mask, rows)
    cpp_bitmask.apply_token_bitmask_(logits=logits, bitmask=mask, rows=rows)
    assert torch.equal(logits, expected)


@pytest.mark.parametrize(("vocab", "words"), [(33, 2), (70, 2), (64, 3)])
def test_reference_reads_each_bit(vocab, words):
    logits = torch.randn(3, vocab, generator=torch.Generator().manual_seed(1))
    mask, rows = _random_mask(2, words, seed=7), [2, 1]
    expected = _bit_by_bit(logits, mask, rows)
    reference.apply_token_bitmask_(logits, mask, rows)
    assert torch.equal(logits, expected)


def test_strided_rows_and_untouched_neighbours():
    wide = torch.randn(4, 100)
    logits = wide[:, :70]  # rows 100 apart: the kernel follows the stride, never writes past 70
    before = wide.clone()
    mask = torch.zeros(1, 3, dtype=torch.int32)
    mask[0, 1] = 1  # token 32 alone allowed
    cpp_bitmask.apply_token_bitmask_(logits=logits, bitmask=mask, rows=[2])
    assert torch.isinf(wide[2, :70]).sum() == 69 and wide[2, 32] == before[2, 32]
    assert torch.equal(wide[2, 70:], before[2, 70:])
    assert torch.equal(wide[[0, 1, 3]], before[[0, 1, 3]])


def test_no_rows_is_a_no_op():
    logits = torch.randn(2, 40)
    before = logits.clone()
    cpp_bitmask.apply_token_bitmask_(logits=logits, bitmask=torch.zeros(0, 2, dtype=torch.int32), rows=[])
    assert torch.equal(logits, before)


def test_bad_inputs():
    logits, mask = torch.randn(2, 40), torch.zeros(1, 2, dtype=torch.int32)
    with pytest.raises(UnsupportedInputError, match="bfloat16"):
        cpp_bitmask.apply_token_bitmask_(logits=logits.bfloat16(), bitmask=mask, rows=[0])
    with pytest.raises(ValueError, match="not a row of logits"):
        cpp_bitmask.apply_token_bitmask_(logits=logits, bitmask=mask, rows=[2])
    with pytest.raises(ValueError, match="1 rows for 2"):
        cpp_bitmask.apply_token_bitmask_(logits=logits, bitmask=mask, rows=[0, 1])
    with pytest.raises(ValueError, match="int32"):
        cpp_bitmask.apply_token_bitmask_(logits=logits, bitmask=mask.long(), rows=[0])
