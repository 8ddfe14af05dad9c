"""Triton store_kv, rms norms, rotary embedding and silu_and_mul against kernels.reference.

Tolerances (abs, rel): fp32 (1e-5, 1e-5). bf16 (1e-2, 2e-2): two bf16 roundings (the reference
rounds the normalised row, then the product), and Triton's CPU interpreter truncates fp32 to
bf16 where torch rounds to nearest, so results may sit up to two ulps (2^-7 relative) apart.
store_kv moves data and must be exact.
"""

from __future__ import annotations

import pytest
import torch
from swiftserve.kernels import reference

from .cases import DEVICE

TOL = {torch.float32: {"atol": 1e-5, "rtol": 1e-5}, torch.bfloat16: {"atol": 1e-2, "rtol": 2e-2}}
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])


def _randn(*shape, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen).to(dtype).to(DEVICE)


@DTYPES
@pytest.mark.parametrize(
    "num_tokens,num_kv_heads,head_dim,block_size", [(1, 1, 64, 16), (17, 3, 80, 16), (40, 8, 128, 8)]
)
def test_store_kv_matches_reference(triton_backend, num_tokens, num_kv_heads, head_dim, block_size, dtype):
    num_blocks = num_tokens // block_size + 3
    k, v = (
        _randn(num_tokens, num_kv_heads, head_dim, dtype=dtype),
        _randn(num_tokens, num_kv_heads, head_dim, dtype=dtype, seed=1),
    )
    gen = torch.Generator().manual_seed(2)
    slots = torch.randperm(num_blocks * block_size, generator=gen)[:num_tokens]
    slots[::5] = -1  # skipped tokens
    slots = slots.to(DEVICE)
    caches = [_randn(num_blocks, block_size, num_kv_heads, head_dim, dtype=dtype, seed=s) for s in (3, 4)]
    expected = [c.clone() for c in caches]
    triton_backend.store_kv(k, v, *caches, slots)
    reference.store_kv(k, v, *expected, slots)
    assert torch.equal(caches[0], expected[0]) and torch.equal(caches[1], expected[1])


def test_store_kv_casts_to_cache_dtype_and_takes_strided_input(triton_backend):
    kv = _randn(5, 2, 2, 64)  # k and v as strided views of one [tokens, 2, heads, d] tensor
    k, v = kv[:, 0], kv[:, 1]
    slots = torch.tensor([3, -1, 0, 17, 9], device=DEVICE)
    caches = [torch.zeros(2, 16, 2, 64, dtype=torch.bfloat16, device=DEVICE) for _ in range(2)]
    expected = [c.clone() for c in caches]
    triton_backend.store_kv(k, v, *caches, slots)
    reference.store_kv(k, v, *expected, slots)
    # One bf16 ulp: the interpreter truncates fp32 -> bf16; a GPU rounds to nearest, like torch.
    torch.testing.assert_close(caches, expected, atol=0, rtol=2**-7)


@DTYPES
@pytest.mark.parametrize("shape", [(1, 64), (19, 111), (2, 3, 4096)])
def test_rms_norm_matches_reference(triton_backend, shape, dtype):
    x, w = _randn(*shape, dtype=dtype), _randn(shape[-1], dtype=dtype, seed=1)
    out = triton_backend.rms_norm(x, w, 1e-6)
    torch.testing.assert_close(out, reference.rms_norm(x, w, 1e-6), **TOL[dtype])


def test_rms_norm_promotes_like_torch(triton_backend):
    x, w = _randn(3, 64, dtype=torch.bfloat16), _randn(64, seed=1)  # fp32 weight: fp32 output
    out = triton_backend.rms_norm(x, w, 1e-5)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference.rms_norm(x, w, 1e-5), **TOL[torch.bfloat16])  # rounded via bf16


@DTYPES
@pytest.mark.parametrize("shape", [(1, 64), (19, 111), (2, 3, 4096)])
def test_fused_add_rms_norm_matches_reference(triton_backend, shape, dtype):
    x, res, w = (
        _randn(*shape, dtype=dtype),
        _randn(*shape, dtype=dtype, seed=1),
        _randn(shape[-1], dtype=dtype, seed=2),
    )
    x_ref, res_ref = x.clone(), res.clone()
    returned = triton_backend.fused_add_rms_norm(x, res, w, 1e-6)
    reference.fused_add_rms_norm(x_ref, res_ref, w, 1e-6)
    assert returned is res
    torch.testing.assert_close(res, res_ref, **TOL[dtype])
    torch.testing.assert_close(x, x_ref, **TOL[dtype])


@DTYPES
@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize(
    "num_heads,num_kv_heads,head_dim,rot_dim",
    [(1, 1, 64, 64), (8, 2, 128, 128), (6, 3, 80, 20)],
    ids=["mha-full", "gqa-d128", "partial-rot20-d80"],
)
def test_rotary_matches_reference(triton_backend, num_heads, num_kv_heads, head_dim, rot_dim, is_neox, dtype):
    num_tokens, max_pos = 17, 100
    # q and k as strided views of a fused qkv projection output, as models produce them.
    qkv = _randn(num_tokens, (num_heads + 2 * num_kv_heads) * head_dim, dtype=dtype)
    q = qkv[:, : num_heads * head_dim].view(num_tokens, num_heads, head_dim)
    k = qkv[:, num_heads * head_dim : (num_heads + num_kv_heads) * head_dim].view(
        num_tokens, num_kv_heads, head_dim
    )
    cos_sin = _randn(max_pos, rot_dim, seed=1)
    positions = torch.randint(0, max_pos, (num_tokens,), generator=torch.Generator().manual_seed(2)).to(
        DEVICE
    )
    q_ref, k_ref = q.clone(), k.clone()
    untouched = qkv[:, (num_heads + num_kv_heads) * head_dim :].clone()
    triton_backend.rotary_embedding(positions, q, k, cos_sin, is_neox=is_neox)
    reference.rotary_embedding(positions, q_ref, k_ref, cos_sin, is_neox=is_neox)
    torch.testing.assert_close(q, q_ref, **TOL[dtype])
    torch.testing.assert_close(k, k_ref, **TOL[dtype])
    assert torch.equal(qkv[:, (num_heads + num_kv_heads) * head_dim :], untouched)  # v untouched


@DTYPES
@pytest.mark.parametrize("shape", [(1, 2), (19, 222), (2, 3, 2 * 2500)])
def test_silu_and_mul_matches_reference(triton_backend, shape, dtype):
    x = _randn(*shape, dtype=dtype)
    out = triton_backend.silu_and_mul(x)
    torch.testing.assert_close(out, reference.silu_and_mul(x), **TOL[dtype])


def test_empty_inputs(triton_backend):
    assert triton_backend.rms_norm(_randn(0, 64), _randn(64), 1e-6).shape == (0, 64)
    assert triton_backend.silu_and_mul(_randn(0, 8)).shape == (0, 4)
    q, k = _randn(0, 2, 64), _randn(0, 1, 64)
    triton_backend.rotary_embedding(torch.zeros(0, dtype=torch.long, device=DEVICE), q, k, _randn(4, 64))


def test_dispatcher_reaches_triton(triton_backend):
    from swiftserve import kernels

    x = _randn(4, 32)
    assert "triton" in kernels.available_backends("silu_and_mul")
    torch.testing.assert_close(kernels.silu_and_mul(x, backend="triton"), reference.silu_and_mul(x))


@pytest.mark.gpu
def test_elementwise_realistic_gpu(triton_backend):
    """Llama-3-8B-like sizes: 4096 tokens, hidden 4096, 32/8 heads, bf16."""
    dtype = torch.bfloat16
    x, res, w = (
        _randn(4096, 4096, dtype=dtype),
        _randn(4096, 4096, dtype=dtype, seed=1),
        _randn(4096, dtype=dtype, seed=2),
    )
    torch.testing.assert_close(
        triton_backend.rms_norm(x, w, 1e-5), reference.rms_norm(x, w, 1e-5), **TOL[dtype]
    )
    gate_up = _randn(4096, 2 * 14336, dtype=dtype, seed=3)
    torch.testing.assert_close(
        triton_backend.silu_and_mul(gate_up), reference.silu_and_mul(gate_up), **TOL[dtype]
    )
    q, k = _randn(4096, 32, 128, dtype=dtype, seed=4), _randn(4096, 8, 128, dtype=dtype, seed=5)
    cos_sin = _randn(8192, 128, seed=6)
    positions = torch.arange(4096, device=DEVICE)
    q_ref, k_ref = q.clone(), k.clone()
    triton_backend.rotary_embedding(positions, q, k, cos_sin)
    reference.rotary_embedding(positions, q_ref, k_ref, cos_sin)
    torch.testing.assert_close(q, q_ref, **TOL[dtype])
    x_ref, res_ref = x.clone(), res.clone()
    triton_backend.fused_add_rms_norm(x, res, w, 1e-5)
    reference.fused_add_rms_norm(x_ref, res_ref, w, 1e-5)
    torch.testing.assert_close(x, x_ref, **TOL[dtype])
