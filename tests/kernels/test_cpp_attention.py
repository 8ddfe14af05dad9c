"""C++ paged attention (swiftserve._C through kernels.cpp_ops) against kernels.reference.

Expected values come from the reference run on float32 copies of the inputs, so a bf16 output is
checked against the exact answer: it may differ by its own rounding (2^-9 relative, one ulp at
most 2^-8) plus fp32 noise. Tolerances (abs, rel): fp32 (2e-5, 1e-5); bf16 (2e-3, 2^-8).
Caches are NaN outside real tokens (see cases.py), so a stray read fails the test. The kernels
also run through their portable (Generic) instantiation: the head sizes, windows and block sizes
on both flavours (the `flavour` fixture), the main grid on the native one.
"""

from __future__ import annotations

import functools

import pytest
import torch
from swiftserve.kernels import cpp_ops, reference
from swiftserve.kernels.dispatch import backend_chain
from swiftserve.kernels.errors import UnsupportedInputError

from .cases import make_decode_case, make_prefill_case, random_lens

pytestmark = pytest.mark.skipif(
    not cpp_ops.is_available(), reason="swiftserve._C is not built (pip install -e .)"
)

TOL = {torch.float32: {"atol": 2e-5, "rtol": 1e-5}, torch.bfloat16: {"atol": 2e-3, "rtol": 2**-8}}
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
# (num_heads, num_kv_heads): GQA ratios 1, 3 (SmolLM2: 9 / 3), 4 and 8.
HEADS = pytest.mark.parametrize(
    "num_heads,num_kv_heads", [(2, 2), (9, 3), (8, 2), (8, 1)], ids=["mha", "gqa3", "gqa4", "gqa8"]
)
HEAD_DIMS = pytest.mark.parametrize("head_dim", [64, 128], ids=["d64", "d128"])

# Sequence counts 1, 3, 17; contexts 1, 15, 16, 17 around block_size 16, and 1000 (one sequence:
# split over the context and merged).
DECODE_LENS = [
    pytest.param([1], id="ctx1"),
    pytest.param([15], id="ctx15"),
    pytest.param([16], id="ctx16"),
    pytest.param([17], id="ctx17"),
    pytest.param([1000], id="ctx1000"),
    pytest.param([1, 17, 1000], id="3seq"),
    pytest.param(random_lens(15, 1, 1000, seed=5) + [15, 16], id="17seq"),
]

# (context_lens, query_lens): whole prompts, chunked prefill / prefix hits (query shorter than
# context), a sequence with no new token, and 17 sequences of mixed lengths.
PREFILL_LENS = [
    pytest.param([1], [1], id="ctx1"),
    pytest.param([17], [17], id="ctx17"),
    pytest.param([1000], [1000], id="ctx1000"),
    pytest.param([1000], [100], id="chunk100-of-1000"),
    pytest.param([15, 16, 40], [15, 16, 7], id="3seq"),
    pytest.param([30, 20], [0, 20], id="empty-query"),
    pytest.param(random_lens(17, 16, 120, seed=7), random_lens(17, 1, 16, seed=8), id="17seq"),
]


def _decode(fn, case, **kw):
    c = case.cache
    return fn(case.q, c.k_cache, c.v_cache, c.block_tables, c.context_lens, case.scale, **kw)


def _prefill(fn, case, **kw):
    c = case.cache
    return fn(
        case.q, c.k_cache, c.v_cache, c.block_tables, case.query_start_loc, c.context_lens, case.scale, **kw
    )


def _as_f32(case):
    """The same case with float32 tensors: the reference on it is the exact answer."""
    c = case.cache
    cache = type(c)(c.k_cache.float(), c.v_cache.float(), c.block_tables, c.context_lens)
    return type(case)(**{**vars(case), "q": case.q.float(), "cache": cache})


def _check(out, expected, dtype):
    assert out.dtype == dtype and not out.isnan().any()
    torch.testing.assert_close(out.float(), expected, **TOL[dtype])


@DTYPES
@HEAD_DIMS
@HEADS
@pytest.mark.parametrize("context_lens", DECODE_LENS)
def test_decode_matches_reference(context_lens, num_heads, num_kv_heads, head_dim, dtype):
    case = make_decode_case(context_lens, num_heads, num_kv_heads, head_dim, dtype=dtype, seed=1)
    out = _decode(cpp_ops.paged_decode_attention, case)
    _check(out, _decode(reference.paged_decode_attention, _as_f32(case)), dtype)


@DTYPES
@pytest.mark.parametrize(
    "context_lens,window,block_size",
    [
        pytest.param([1000, 17, 1], 7, 16, id="window7"),
        pytest.param([40, 33], 16, 16, id="window16"),
        pytest.param([1000], 300, 8, id="window300-block8"),
        pytest.param([1000], 1, 32, id="window1-block32"),
        pytest.param([5], 100, 16, id="window-longer-than-context"),
    ],
)
def test_decode_sliding_window(context_lens, window, block_size, dtype, flavour):
    case = make_decode_case(context_lens, 9, 3, 64, block_size=block_size, dtype=dtype, seed=2)
    out = _decode(cpp_ops.paged_decode_attention, case, sliding_window=window)
    _check(out, _decode(reference.paged_decode_attention, _as_f32(case), sliding_window=window), dtype)


@DTYPES
@pytest.mark.parametrize("head_dim", [32, 80, 96, 256])
def test_other_head_dims(head_dim, dtype, flavour):
    """The other head sizes _C is built for (80: a vector count that is not a power of two)."""
    decode = make_decode_case([1, 40, 300], 8, 2, head_dim, dtype=dtype, seed=11)
    _check(
        _decode(cpp_ops.paged_decode_attention, decode),
        _decode(reference.paged_decode_attention, _as_f32(decode)),
        dtype,
    )
    prefill = make_prefill_case([70, 33], [70, 20], 8, 2, head_dim, dtype=dtype, seed=11)
    _check(
        _prefill(cpp_ops.paged_prefill_attention, prefill),
        _prefill(reference.paged_prefill_attention, _as_f32(prefill)),
        dtype,
    )


@pytest.mark.parametrize("block_size", [1, 8, 32])
def test_decode_other_block_sizes(block_size, flavour):
    case = make_decode_case([1, 31, 33, 700], 8, 2, 64, block_size=block_size, seed=3)
    out = _decode(cpp_ops.paged_decode_attention, case)
    _check(out, _decode(reference.paged_decode_attention, case), torch.float32)


def test_decode_strided_q_and_int64_indices():
    """q as a view into a fused qkv tensor (rows not contiguous); int64 block tables and lengths."""
    case = make_decode_case([5, 300, 64], 9, 3, 64, dtype=torch.bfloat16, seed=4)
    qkv = torch.randn(3, (9 + 2 * 3) * 64).to(torch.bfloat16)
    q = qkv[:, : 9 * 64].view(3, 9, 64)
    assert not q.is_contiguous()
    c = case.cache
    out = cpp_ops.paged_decode_attention(
        q, c.k_cache, c.v_cache, c.block_tables.long(), c.context_lens.long(), 0.125
    )
    expected = reference.paged_decode_attention(
        q.float(), c.k_cache.float(), c.v_cache.float(), c.block_tables, c.context_lens, 0.125
    )
    _check(out, expected, torch.bfloat16)


def test_decode_zero_context_gives_zeros():
    case = make_decode_case([0, 20], 4, 2, 64, seed=5)
    out = _decode(cpp_ops.paged_decode_attention, case)
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    _check(out[1:], _decode(reference.paged_decode_attention, case)[1:], torch.float32)


@DTYPES
@HEAD_DIMS
@HEADS
@pytest.mark.parametrize("context_lens,query_lens", PREFILL_LENS)
def test_prefill_matches_reference(context_lens, query_lens, num_heads, num_kv_heads, head_dim, dtype):
    case = make_prefill_case(context_lens, query_lens, num_heads, num_kv_heads, head_dim, dtype=dtype, seed=1)
    out = _prefill(cpp_ops.paged_prefill_attention, case)
    _check(out, _prefill(reference.paged_prefill_attention, _as_f32(case)), dtype)


@DTYPES
@pytest.mark.parametrize(
    "context_lens,query_lens,window,num_heads,num_kv_heads",
    [
        pytest.param([100], [100], 7, 2, 2, id="window7-mha"),
        pytest.param([300, 40], [250, 40], 33, 9, 3, id="window33-chunked"),
        pytest.param([64], [64], 1, 8, 1, id="window1"),
    ],
)
def test_prefill_sliding_window(context_lens, query_lens, window, num_heads, num_kv_heads, dtype, flavour):
    case = make_prefill_case(context_lens, query_lens, num_heads, num_kv_heads, 64, dtype=dtype, seed=2)
    out = _prefill(cpp_ops.paged_prefill_attention, case, sliding_window=window)
    _check(out, _prefill(reference.paged_prefill_attention, _as_f32(case), sliding_window=window), dtype)


@DTYPES
def test_portable_kernels_match_reference(generic_kernels, dtype):
    decode = make_decode_case([1, 17, 1000], 9, 3, 64, dtype=dtype, seed=6)
    _check(
        _decode(cpp_ops.paged_decode_attention, decode, sliding_window=100),
        _decode(reference.paged_decode_attention, _as_f32(decode), sliding_window=100),
        dtype,
    )
    prefill = make_prefill_case([40, 200], [40, 150], 8, 2, 128, dtype=dtype, seed=6)
    _check(
        _prefill(cpp_ops.paged_prefill_attention, prefill),
        _prefill(reference.paged_prefill_attention, _as_f32(prefill)),
        dtype,
    )


def test_threads_do_not_change_the_result():
    case = make_decode_case(random_lens(17, 1, 1000, seed=9), 9, 3, 64, dtype=torch.bfloat16, seed=7)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = _decode(cpp_ops.paged_decode_attention, case)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(single, _decode(cpp_ops.paged_decode_attention, case))


def test_dispatcher_prefers_cpp_on_cpu():
    assert backend_chain("paged_decode_attention", "cpu") == ["cpp", "torch"]
    assert backend_chain("paged_prefill_attention", "cpu") == ["cpp", "torch"]


def test_float16_is_refused_before_any_work():
    case = make_decode_case([20], 4, 2, 64, dtype=torch.float16, seed=8)
    with pytest.raises(UnsupportedInputError, match="float16") as info:
        _decode(cpp_ops.paged_decode_attention, case)
    assert (info.value.op, info.value.backend) == ("paged_decode_attention", "cpp")


def test_bad_inputs_raise_value_error():
    case = make_decode_case([20, 40], 4, 2, 64, seed=9)
    c = case.cache
    run = functools.partial(cpp_ops.paged_decode_attention, scale=0.125)
    with pytest.raises(ValueError, match="share a dtype"):
        run(case.q.to(torch.bfloat16), c.k_cache, c.v_cache, c.block_tables, c.context_lens)
    with pytest.raises(ValueError, match="KV heads"):
        run(case.q[:, :3], c.k_cache, c.v_cache, c.block_tables, c.context_lens)
    with pytest.raises(ValueError, match="contiguous last dimension"):
        run(
            case.q.transpose(1, 2).contiguous().transpose(1, 2),
            c.k_cache,
            c.v_cache,
            c.block_tables,
            c.context_lens,
        )
    with pytest.raises(ValueError, match="exceeds the block table"):
        run(case.q, c.k_cache, c.v_cache, c.block_tables, c.context_lens * 10)
    bad_table = c.block_tables.clone()
    bad_table[1, 0] = c.k_cache.shape[0]
    with pytest.raises(ValueError, match="not a block of the cache"):
        run(case.q, c.k_cache, c.v_cache, bad_table, c.context_lens)
    with pytest.raises(ValueError, match="int32 or int64"):
        run(case.q, c.k_cache, c.v_cache, c.block_tables.float(), c.context_lens)
    with pytest.raises(ValueError, match="queries but"):
        run(case.q[:1], c.k_cache, c.v_cache, c.block_tables, c.context_lens)
    with pytest.raises(ValueError, match="sliding_window"):
        run(case.q, c.k_cache, c.v_cache, c.block_tables, c.context_lens, sliding_window=0)
    with pytest.raises(ValueError, match="torch.Tensor"):
        run(case.q.tolist(), c.k_cache, c.v_cache, c.block_tables, c.context_lens)


def test_bad_prefill_inputs_raise_value_error():
    case = make_prefill_case([20, 40], [20, 10], 4, 2, 64, seed=10)
    c = case.cache
    run = functools.partial(cpp_ops.paged_prefill_attention, scale=0.125)
    with pytest.raises(ValueError, match="query_start_loc must be"):
        run(case.q, c.k_cache, c.v_cache, c.block_tables, case.query_start_loc[:2], c.context_lens)
    with pytest.raises(ValueError, match="context_lens >= query length"):
        run(case.q, c.k_cache, c.v_cache, c.block_tables, case.query_start_loc, c.context_lens // 4)
    with pytest.raises(ValueError, match="end at the number of query tokens"):
        run(case.q[:5], c.k_cache, c.v_cache, c.block_tables, case.query_start_loc, c.context_lens)
