"""C++ RMSNorm, fused add + RMSNorm, SiLU-and-mul, rotary embedding and store_kv against kernels.reference.

The kernels round like the reference does in the tensor's dtype, so bf16 results are mostly
bit-identical; where an intermediate lands next to a rounding boundary (the sum of squares is
added up in another order) it rounds the other way, and the next op in bf16 (times the weight)
can carry that to two ulps. Tolerances (abs, rel): fp32 (1e-5, 1e-5), bf16 (1e-2, 2^-6), and
99% of the bf16 elements must be bit-identical.
"""

from __future__ import annotations

import pytest
import torch
from swiftserve.kernels import cpp_ops, reference
from swiftserve.kernels.dispatch import backend_chain
from swiftserve.kernels.errors import UnsupportedInputError

from swiftserve import kernels

pytestmark = pytest.mark.skipif(
    not cpp_ops.is_available(), reason="swiftserve._C is not built (pip install -e .)"
)

TOL = {torch.float32: {"atol": 1e-5, "rtol": 1e-5}, torch.bfloat16: {"atol": 1e-2, "rtol": 2**-6}}
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
# (rows..., hidden): one row, odd row counts, a hidden size with a vector tail (111), SmolLM2's
# 576, a 3-D batch, and a batch big enough to go multi-threaded.
SHAPES = pytest.mark.parametrize(
    "shape",
    [(1, 576), (17, 111), (3, 5, 64), (128, 2048), (7,)],
    ids=["1x576", "17x111", "3x5x64", "128x2048", "1d-7"],
)


def _check(out, expected):
    torch.testing.assert_close(out, expected, **TOL[out.dtype])
    if out.dtype == torch.bfloat16 and out.numel():
        assert (out == expected).float().mean() > 0.99


def _rand(shape, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen) * 3).to(dtype)


@DTYPES
@SHAPES
def test_rms_norm_matches_reference(shape, dtype, flavour):
    x, w = _rand(shape, dtype, 0), _rand(shape[-1:], dtype, 1)
    _check(cpp_ops.rms_norm(x, w, 1e-6), reference.rms_norm(x, w, 1e-6))


@DTYPES
@SHAPES
def test_fused_add_rms_norm_matches_reference(shape, dtype, flavour):
    x, residual, w = _rand(shape, dtype, 0), _rand(shape, dtype, 1), _rand(shape[-1:], dtype, 2)
    x_ref, residual_ref = x.clone(), residual.clone()
    returned = cpp_ops.fused_add_rms_norm(x, residual, w, 1e-5)
    reference.fused_add_rms_norm(x_ref, residual_ref, w, 1e-5)
    assert returned is residual
    _check(residual, residual_ref)
    _check(x, x_ref)


@DTYPES
@pytest.mark.parametrize(
    "shape",
    [(1, 2 * 1536), (17, 2 * 111), (2, 3, 2 * 64), (256, 2 * 1536), (0, 8)],
    ids=["1x1536", "17x111", "2x3x64", "256x1536", "empty"],
)
def test_silu_and_mul_matches_reference(shape, dtype, flavour):
    x = _rand(shape, dtype, 3)
    _check(cpp_ops.silu_and_mul(x), reference.silu_and_mul(x))


def test_silu_and_mul_extremes(flavour):
    x = torch.tensor([[-100.0, -20.0, 0.0, 20.0, 100.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    torch.testing.assert_close(cpp_ops.silu_and_mul(x), reference.silu_and_mul(x))


@DTYPES
def test_rows_of_a_strided_2d_view(dtype):
    """x as every other row of a bigger tensor: rows contiguous, one row stride."""
    base = _rand((10, 64), dtype, 4)
    x, w = base[::2], _rand((64,), dtype, 5)
    _check(cpp_ops.rms_norm(x, w, 1e-6), reference.rms_norm(x, w, 1e-6))
    gate_up = _rand((6, 2 * 64), dtype, 6)[::2]
    _check(cpp_ops.silu_and_mul(gate_up), reference.silu_and_mul(gate_up))


def test_other_dtypes_are_refused():
    x, w = _rand((3, 64), torch.float16, 0), _rand((64,), torch.float16, 1)
    with pytest.raises(UnsupportedInputError, match="float16"):
        cpp_ops.rms_norm(x, w, 1e-6)
    with pytest.raises(UnsupportedInputError):  # mixed: the reference promotes, _C cannot
        cpp_ops.rms_norm(x.bfloat16(), w.float(), 1e-6)
    # unnamed, the dispatcher runs them on the reference, with its promotion
    assert kernels.rms_norm(x.bfloat16(), w.float(), 1e-6).dtype == torch.float32
    torch.testing.assert_close(kernels.rms_norm(x, w, 1e-6), reference.rms_norm(x, w, 1e-6))


def test_bad_inputs_raise_value_error():
    x, w = _rand((4, 64), torch.float32, 0), _rand((64,), torch.float32, 1)
    with pytest.raises(ValueError, match="weight must be"):
        cpp_ops.rms_norm(x, w[:32], 1e-6)
    with pytest.raises(ValueError, match="contiguous"):
        cpp_ops.rms_norm(x.t(), w[:4], 1e-6)
    with pytest.raises(ValueError, match="residual"):
        cpp_ops.fused_add_rms_norm(x, x[:2].clone(), w, 1e-6)
    with pytest.raises(ValueError, match="even"):
        cpp_ops.silu_and_mul(x[:, :63])
    with pytest.raises(ValueError, match="torch.Tensor"):
        cpp_ops.silu_and_mul([1.0, 2.0])


def test_dispatcher_prefers_cpp_on_cpu():
    for op in ("rms_norm", "fused_add_rms_norm", "silu_and_mul", "rotary_embedding", "store_kv"):
        assert backend_chain(op, "cpu") == ["cpp", "torch"]


@pytest.mark.usefixtures("generic_kernels")
@DTYPES
def test_portable_kernels_match_reference(dtype):
    x, residual, w = _rand((17, 111), dtype, 0), _rand((17, 111), dtype, 1), _rand((111,), dtype, 2)
    _check(cpp_ops.rms_norm(x, w, 1e-6), reference.rms_norm(x, w, 1e-6))
    x_ref, residual_ref = x.clone(), residual.clone()
    cpp_ops.fused_add_rms_norm(x, residual, w, 1e-6)
    reference.fused_add_rms_norm(x_ref, residual_ref, w, 1e-6)
    _check(x, x_ref)
    _check(residual, residual_ref)
    gate_up = _rand((5, 2 * 111), dtype, 3)
    _check(cpp_ops.silu_and_mul(gate_up), reference.silu_and_mul(gate_up))
    q, k, _ = _qkv_views(7, dtype, 4)
    q_ref, k_ref, cache, positions = q.clone(), k.clone(), _cos_sin_cache(10, 18), torch.arange(7)
    cpp_ops.rotary_embedding(positions, q, k, cache)
    reference.rotary_embedding(positions, q_ref, k_ref, cache)
    _check(q, q_ref)
    _check(k, k_ref)


def _qkv_views(num_tokens, dtype, seed, num_heads=9, num_kv_heads=3, head_dim=64):
    """q, k, v as the model makes them: strided views into one fused qkv projection."""
    qkv = _rand((num_tokens, (num_heads + 2 * num_kv_heads) * head_dim), dtype, seed)
    q, k, v = qkv.split((num_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim), dim=-1)
    return (
        q.view(num_tokens, num_heads, head_dim),
        k.view(num_tokens, num_kv_heads, head_dim),
        v.view(num_tokens, num_kv_heads, head_dim),
    )


def _cos_sin_cache(max_position, rot_dim):
    angles = torch.outer(
        torch.arange(max_position, dtype=torch.float64), torch.rand(rot_dim // 2, dtype=torch.float64)
    )
    return torch.cat((angles.cos(), angles.sin()), dim=-1).float()


@DTYPES
@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize(
    "num_tokens,rot_dim", [(1, 64), (37, 64), (5, 32), (17, 18)], ids=["1tok", "37tok", "partial32", "tail18"]
)
def test_rotary_embedding_matches_reference(num_tokens, rot_dim, is_neox, dtype, flavour):
    q, k, _ = _qkv_views(num_tokens, dtype, 0)
    cache = _cos_sin_cache(100, rot_dim)
    positions = torch.randint(0, 100, (num_tokens,), generator=torch.Generator().manual_seed(1))
    q_ref, k_ref = q.clone(), k.clone()
    cpp_ops.rotary_embedding(positions, q, k, cache, is_neox=is_neox)
    reference.rotary_embedding(positions, q_ref, k_ref, cache, is_neox=is_neox)
    _check(q, q_ref)
    _check(k, k_ref)


def test_rotary_embedding_checks_positions():
    q, k, _ = _qkv_views(3, torch.float32, 0)
    with pytest.raises(ValueError, match="outside the cos/sin cache"):
        cpp_ops.rotary_embedding(torch.tensor([0, 1, 100]), q, k, _cos_sin_cache(100, 64))
    with pytest.raises(ValueError, match="rot_dim"):
        cpp_ops.rotary_embedding(torch.tensor([0, 1, 2]), q, k, _cos_sin_cache(100, 128))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["f32", "bf16", "f16"])
def test_store_kv_matches_reference(dtype):
    _, k, v = _qkv_views(40, dtype, 0)
    slots = torch.randperm(10 * 16, generator=torch.Generator().manual_seed(2))[:40]
    slots[[3, 17]] = -1  # padding: not stored
    caches = [torch.zeros(10, 16, 3, 64, dtype=dtype) for _ in range(4)]
    cpp_ops.store_kv(k, v, caches[0], caches[1], slots.to(torch.int32))
    reference.store_kv(k, v, caches[2], caches[3], slots)
    assert torch.equal(caches[0], caches[2]) and torch.equal(caches[1], caches[3])


def test_store_kv_mixed_dtypes_run_on_the_reference_and_slots_are_checked():
    _, k, v = _qkv_views(4, torch.float32, 0)
    caches = [torch.zeros(2, 16, 3, 64, dtype=torch.bfloat16) for _ in range(4)]
    slots = torch.tensor([0, 5, 31, -1])
    with pytest.raises(UnsupportedInputError, match="the reference casts"):
        cpp_ops.store_kv(k, v, caches[0], caches[1], slots)
    kernels.store_kv(k, v, caches[0], caches[1], slots)  # the dispatcher runs the reference
    reference.store_kv(k, v, caches[2], caches[3], slots)
    assert torch.equal(caches[0], caches[2]) and torch.equal(caches[1], caches[3])
    with pytest.raises(ValueError, match="past the cache"):
        cpp_ops.store_kv(k.bfloat16(), v.bfloat16(), caches[0], caches[1], torch.tensor([0, 1, 32, 2]))
    with pytest.raises(ValueError, match="slots"):
        cpp_ops.store_kv(k, v, caches[0], caches[1], slots[:3])
