"""Triton paged attention (decode and prefill) against kernels.reference.

Without a GPU these run in Triton's CPU interpreter (see conftest.py). Tolerances (abs, rel):
fp32 (2e-5, 1e-5): same math, other summation order. bf16 (1e-2, 2e-2): outputs are rounded to
bf16 once (at most one ulp, 2^-8 relative, apart), and on a GPU P is rounded to bf16 before the
PV dot. Caches outside real tokens are NaN (see cases.py), so any stray read fails the test.
"""

from __future__ import annotations

import pytest
import torch
from swiftserve.kernels import reference

from .cases import DEVICE, make_decode_case, make_prefill_case, random_lens

TOL = {torch.float32: {"atol": 2e-5, "rtol": 1e-5}, torch.bfloat16: {"atol": 1e-2, "rtol": 2e-2}}

# (context_lens, num_heads, num_kv_heads, head_dim): sequence counts 1, 3, 17; GQA 1, 4, 8;
# contexts 1, 15, 16, 17 (around block_size 16) and 1000 (split-K) at small head counts.
DECODE_SHAPES = [
    pytest.param([1], 4, 4, 64, id="1seq-ctx1-mha-d64"),
    pytest.param([15, 16, 17], 8, 2, 128, id="3seq-ctx15-17-gqa4-d128"),
    pytest.param(random_lens(16, 1, 40, seed=3) + [16], 8, 1, 64, id="17seq-mixed-gqa8-d64"),
    pytest.param([7, 33, 64], 9, 3, 64, id="3seq-smollm2-gqa3-d64"),
    pytest.param([1000], 4, 1, 64, id="1seq-ctx1000-gqa4"),
    pytest.param([1000, 17, 1], 8, 1, 128, id="3seq-ctx1000-17-1-gqa8-d128"),
]


def _decode(fn, case, **kw):
    c = case.cache
    return fn(case.q, c.k_cache, c.v_cache, c.block_tables, c.context_lens, case.scale, **kw)


def _prefill(fn, case, **kw):
    c = case.cache
    return fn(
        case.q, c.k_cache, c.v_cache, c.block_tables, case.query_start_loc, c.context_lens, case.scale, **kw
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("context_lens,num_heads,num_kv_heads,head_dim", DECODE_SHAPES)
def test_paged_decode_matches_reference(
    triton_backend, context_lens, num_heads, num_kv_heads, head_dim, dtype
):
    case = make_decode_case(
        context_lens, num_heads, num_kv_heads, head_dim, dtype=dtype, device=DEVICE, seed=1
    )
    out = _decode(triton_backend.paged_decode_attention, case)
    torch.testing.assert_close(out, _decode(reference.paged_decode_attention, case), **TOL[dtype])


@pytest.mark.parametrize(
    "context_lens,window,block_size",
    [
        pytest.param([1000, 17, 1], 7, 16, id="window7"),
        pytest.param([40, 33], 16, 16, id="window16"),
        pytest.param([1000], 300, 8, id="window300-block8"),
    ],
)
def test_paged_decode_sliding_window(triton_backend, context_lens, window, block_size):
    case = make_decode_case(context_lens, 8, 2, 64, block_size=block_size, device=DEVICE, seed=2)
    out = _decode(triton_backend.paged_decode_attention, case, sliding_window=window)
    expected = _decode(reference.paged_decode_attention, case, sliding_window=window)
    torch.testing.assert_close(out, expected, **TOL[torch.float32])


@pytest.mark.parametrize(
    "block_size,head_dim", [pytest.param(32, 80, id="block32-d80"), pytest.param(1, 64, id="block1-d64")]
)
def test_paged_decode_odd_layouts(triton_backend, block_size, head_dim):
    """Non-power-of-two head_dim (masked) and block sizes other than the engine's 16."""
    case = make_decode_case([33, 5, 64], 4, 2, head_dim, block_size=block_size, device=DEVICE, seed=4)
    out = _decode(triton_backend.paged_decode_attention, case)
    torch.testing.assert_close(out, _decode(reference.paged_decode_attention, case), **TOL[torch.float32])


def test_paged_decode_zero_context_gives_zeros(triton_backend):
    """A padded batch slot (context 0) must not produce NaN that could leak into a CUDA graph batch."""
    case = make_decode_case([5, 1], 4, 1, 64, device=DEVICE)
    case.cache.context_lens[1] = 0
    out = _decode(triton_backend.paged_decode_attention, case)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    torch.testing.assert_close(
        out[:1], _decode(reference.paged_decode_attention, case)[:1], **TOL[torch.float32]
    )


# (context_lens, query_lens, num_heads, num_kv_heads, head_dim)
PREFILL_SHAPES = [
    pytest.param([1], [1], 4, 4, 64, id="1seq-1tok-mha"),
    pytest.param([15, 16, 17], [15, 16, 17], 8, 2, 128, id="3seq-full-gqa4-d128"),
    pytest.param([15, 40, 17], [3, 0, 17], 8, 1, 64, id="3seq-chunked-empty-gqa8"),
    pytest.param(
        random_lens(17, 1, 50, seed=5), random_lens(17, 1, 50, seed=5), 4, 1, 64, id="17seq-mixed-gqa4"
    ),
    pytest.param([1000], [70], 4, 1, 64, id="1seq-ctx1000-chunk70"),
    pytest.param([20, 33], [20, 9], 9, 3, 64, id="2seq-smollm2-gqa3"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("context_lens,query_lens,num_heads,num_kv_heads,head_dim", PREFILL_SHAPES)
def test_paged_prefill_matches_reference(
    triton_backend, context_lens, query_lens, num_heads, num_kv_heads, head_dim, dtype
):
    case = make_prefill_case(
        context_lens, query_lens, num_heads, num_kv_heads, head_dim, dtype=dtype, device=DEVICE, seed=6
    )
    out = _prefill(triton_backend.paged_prefill_attention, case)
    torch.testing.assert_close(out, _prefill(reference.paged_prefill_attention, case), **TOL[dtype])


def test_paged_prefill_long_full_context(triton_backend):
    """A whole 300-token prompt at once: many query tiles, unmasked and diagonal KV tiles."""
    case = make_prefill_case([300, 5], [300, 5], 2, 1, 64, device=DEVICE, seed=7)
    out = _prefill(triton_backend.paged_prefill_attention, case)
    torch.testing.assert_close(out, _prefill(reference.paged_prefill_attention, case), **TOL[torch.float32])


@pytest.mark.parametrize("window", [1, 5, 40])
def test_paged_prefill_sliding_window(triton_backend, window):
    case = make_prefill_case([120, 17, 9], [120, 5, 9], 4, 2, 64, device=DEVICE, seed=8)
    out = _prefill(triton_backend.paged_prefill_attention, case, sliding_window=window)
    expected = _prefill(reference.paged_prefill_attention, case, sliding_window=window)
    torch.testing.assert_close(out, expected, **TOL[torch.float32])


def test_paged_prefill_odd_layout(triton_backend):
    case = make_prefill_case([50, 9], [20, 9], 6, 3, 80, block_size=32, device=DEVICE, seed=9)
    out = _prefill(triton_backend.paged_prefill_attention, case)
    torch.testing.assert_close(out, _prefill(reference.paged_prefill_attention, case), **TOL[torch.float32])


def test_paged_attention_rejects_bad_inputs(triton_backend):
    case = make_decode_case([5], 4, 2, 64, device=DEVICE)
    c = case.cache
    with pytest.raises(ValueError, match="int32"):
        triton_backend.paged_decode_attention(
            case.q, c.k_cache, c.v_cache, c.block_tables.long(), c.context_lens, 1.0
        )
    with pytest.raises(ValueError, match="KV heads"):
        triton_backend.paged_decode_attention(
            case.q[:, :3], c.k_cache, c.v_cache, c.block_tables, c.context_lens, 1.0
        )
    with pytest.raises(ValueError, match="share shape"):
        triton_backend.paged_decode_attention(
            case.q, c.k_cache, c.v_cache[:1], c.block_tables, c.context_lens, 1.0
        )
    with pytest.raises(ValueError, match="query_start_loc"):
        triton_backend.paged_prefill_attention(
            case.q,
            c.k_cache,
            c.v_cache,
            c.block_tables,
            torch.tensor([0], dtype=torch.int32, device=DEVICE),
            c.context_lens,
            1.0,
        )


@pytest.mark.gpu
@pytest.mark.parametrize("context_len", [1024, 4097])
def test_paged_decode_realistic_gpu(triton_backend, context_len):
    """Llama-3-8B-like decode: 64 sequences, 32 query / 8 KV heads, d128, bf16."""
    lens = random_lens(64, context_len // 2, context_len, seed=10)
    case = make_decode_case(lens, 32, 8, 128, dtype=torch.bfloat16, device="cuda", seed=10)
    out = _decode(triton_backend.paged_decode_attention, case)
    torch.testing.assert_close(out, _decode(reference.paged_decode_attention, case), **TOL[torch.bfloat16])


@pytest.mark.gpu
def test_paged_prefill_realistic_gpu(triton_backend):
    """Two 2k prompts and a 512-token chunk on top of 3k cached tokens, 32/8 heads, d128, bf16."""
    case = make_prefill_case(
        [2048, 2000, 3584], [2048, 2000, 512], 32, 8, 128, dtype=torch.bfloat16, device="cuda", seed=11
    )
    out = _prefill(triton_backend.paged_prefill_attention, case)
    torch.testing.assert_close(out, _prefill(reference.paged_prefill_attention, case), **TOL[torch.bfloat16])


def test_paged_attention_takes_row_strided_block_tables(triton_backend):
    """The engine may hand a slice of a wider persistent block-table buffer."""
    case = make_decode_case([20, 40], 4, 2, 64, device=DEVICE, seed=12)
    c = case.cache
    wide = torch.zeros(2, c.block_tables.shape[1] + 5, dtype=torch.int32, device=DEVICE)
    wide[:, : c.block_tables.shape[1]] = c.block_tables
    view = wide[:, : c.block_tables.shape[1]]
    assert not view.is_contiguous()
    out = triton_backend.paged_decode_attention(
        case.q, c.k_cache, c.v_cache, view, c.context_lens, case.scale
    )
    torch.testing.assert_close(out, _decode(reference.paged_decode_attention, case), **TOL[torch.float32])
