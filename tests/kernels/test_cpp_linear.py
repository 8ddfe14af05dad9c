"""The C++ small-M linear layer against an fp32 matmul of the same inputs.

Both sum in fp32 (in another order) and round once to the dtype, so bf16 outputs are within one
ulp of the reference rounded to bf16: tolerances (abs, rel) fp32 (1e-4, 1e-5), bf16 (1e-3, 2^-7).
Sizes cover every tile shape (1, 2 and >= 3 rows of x), a short last tile of weight rows
(n = 1, 3, 17, 100) and a vector tail in k (k = 1, 3, 17, 100, plus SmolLM2's 576 and 1536), on
both vector flavours (the `flavour` fixture: native and Generic); test_cpp_vec.py has every k
from 1 to 33 against an unreadable page.
"""

from __future__ import annotations

import pytest
import torch
from swiftserve.kernels import cpp_linear, cpp_native, cpp_ops
from swiftserve.kernels.dispatch import backend_chain
from swiftserve.kernels.errors import UnsupportedInputError

from swiftserve import kernels
from swiftserve.layers.linear import Linear

pytestmark = pytest.mark.skipif(
    not cpp_ops.is_available(), reason="swiftserve._C is not built (pip install -e .)"
)

TOL = {torch.float32: {"atol": 1e-4, "rtol": 1e-5}, torch.bfloat16: {"atol": 1e-3, "rtol": 2**-7}}
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])


def _rand(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype)


def _expected(x, weight, bias):
    out = x.float() @ weight.float().T
    if bias is not None:
        out = out + bias.float()
    return out.to(x.dtype)


def _check(out, x, weight, bias=None):
    expected = _expected(x, weight, bias)
    assert out.dtype == x.dtype and out.shape == expected.shape
    torch.testing.assert_close(out.float(), expected.float(), **TOL[x.dtype])


@DTYPES
@pytest.mark.parametrize("m", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("n", [1, 3, 17, 100])
@pytest.mark.parametrize("k", [1, 3, 17, 100, 576])
def test_linear_matches_matmul(dtype, m, n, k, flavour):
    x, weight = _rand((m, k), dtype, 0), _rand((n, k), dtype, 1)
    _check(cpp_linear.linear(x, weight), x, weight)


@DTYPES
@pytest.mark.parametrize("m", [1, 2, 4, 13, 32])
def test_bias_and_model_shapes(dtype, m, flavour):
    """SmolLM2's projections (multi-threaded, the 16 x 1, 8 x 2 and 4 x 4 tiles) with a bias; past
    MAX_ROWS through _C directly, as the fused decode calls it for up to 32 rows."""
    for n, k in [(960, 576), (576, 1536), (3072, 576)]:
        x, weight, bias = _rand((m, k), dtype, n), _rand((n, k), dtype, k), _rand((n,), dtype, 2)
        if m <= cpp_linear.MAX_ROWS:
            _check(cpp_linear.linear(x, weight, bias), x, weight, bias)
        else:
            out = torch.empty(m, n, dtype=dtype)
            cpp_native._C.linear(
                out.data_ptr(), n, x.data_ptr(), k, weight.data_ptr(), k, bias.data_ptr(), m, n, k,
                "float32" if dtype == torch.float32 else "bfloat16",
            )  # fmt: skip
            _check(out, x, weight, bias)


@DTYPES
def test_strided_inputs(dtype, flavour):
    """x as a view with a row stride, a 3-D x, and a weight that is a column slice of a wider one."""
    x = _rand((3, 40), dtype, 0)[:, 5:22]
    weight = _rand((19, 30), dtype, 1)[:, :17]
    _check(cpp_linear.linear(x, weight), x, weight)
    x3 = _rand((2, 3, 17), dtype, 2)
    out = cpp_linear.linear(x3, weight)
    assert out.shape == (2, 3, 19)
    _check(out.reshape(6, 19), x3.reshape(6, 17), weight)


@pytest.mark.usefixtures("generic_kernels")
@DTYPES
@pytest.mark.parametrize("m", [1, 2, 5])
def test_portable_kernel_matches_matmul(dtype, m):
    assert cpp_native._C.linear.keywords == {"generic": True}
    x, weight, bias = _rand((m, 100), dtype, 0), _rand((37, 100), dtype, 1), _rand((37,), dtype, 2)
    _check(cpp_linear.linear(x, weight, bias), x, weight, bias)


def test_large_batches_use_gemm_and_float16_is_refused(monkeypatch):
    """Past MAX_ROWS rows on a CPU with native bf16 the result is exactly torch's F.linear;
    float16 has no kernel."""
    monkeypatch.setattr(cpp_linear, "has_native_bf16_matmul", lambda: True)
    x, weight = _rand((cpp_linear.MAX_ROWS + 1, 33), torch.bfloat16, 0), _rand((9, 33), torch.bfloat16, 1)
    assert torch.equal(cpp_linear.linear(x, weight), torch.nn.functional.linear(x, weight))
    x16, w16 = x[:2].half(), weight.half()
    with pytest.raises(UnsupportedInputError, match="float16"):
        cpp_linear.linear(x16, w16)
    empty = cpp_linear.linear(x[:0], weight)
    assert empty.shape == (0, 9)


@pytest.mark.parametrize("shape", [(1, 33), (24, 100), (2, 1, 576)])
@pytest.mark.parametrize("bias", [False, True])
def test_bf16_without_native_bf16_is_widened(monkeypatch, shape, bias):
    """Where bf16 is emulated, more than max_rows_widened() rows run in float32 over slices of
    weight rows (WIDEN_BYTES shrunk to the 16-row floor: 37 rows in slices of 16, 16 and 5),
    rounded once: equal to a float32 matmul rounded to bf16. `shape`'s second-last size is added
    to the flavour's limit (1, 24 rows past it; 2 x (half the limit + 1))."""
    monkeypatch.setattr(cpp_linear, "has_native_bf16_matmul", lambda: False)
    monkeypatch.setattr(cpp_linear, "WIDEN_BYTES", 64)
    limit = cpp_linear.max_rows_widened()
    shape = (*shape[:-2], shape[-2] + (limit // 2 if len(shape) == 3 else limit), shape[-1])
    k = shape[-1]
    x, weight = _rand(shape, torch.bfloat16, 0), _rand((37, k), torch.bfloat16, 1)
    b = _rand((37,), torch.bfloat16, 2) if bias else None
    out = cpp_linear.linear(x, weight, b)
    assert out.shape == (*shape[:-1], 37) and out.dtype == torch.bfloat16
    _check(out.reshape(-1, 37), x.reshape(-1, k), weight, b)
    expected = torch.nn.functional.linear(x.float(), weight.float(), None if b is None else b.float())
    assert torch.equal(out, expected.bfloat16())


def test_widening_starts_past_max_rows_widened(monkeypatch):
    """Up to max_rows_widened() rows _C runs (it is ahead there), past it the float32 GEMM."""
    monkeypatch.setattr(cpp_linear, "has_native_bf16_matmul", lambda: False)
    calls = []
    monkeypatch.setattr(
        cpp_linear, "gemm", lambda *a: calls.append(a[0].dtype) or torch.nn.functional.linear(*a)
    )
    weight = _rand((9, 33), torch.bfloat16, 1)
    limit = cpp_linear.max_rows_widened()
    cpp_linear.linear(_rand((limit, 33), torch.bfloat16, 0), weight)
    assert calls == []
    cpp_linear.linear(_rand((limit + 1, 33), torch.bfloat16, 0), weight)
    assert calls == [torch.float32]
    cpp_linear.linear(_rand((cpp_linear.MAX_ROWS + 1, 33), torch.float32, 0), weight.float())
    assert calls == [torch.float32, torch.float32]  # float32 past MAX_ROWS: gemm as it is


def test_the_widening_limit_follows_the_flavour(flavour):
    """The AVX2 flavour keeps 64 rows (measured ahead of the widening there), the portable 16."""
    expected = {"avx2": 64, "generic": 16}.get(cpp_native.flavour(), cpp_linear.MAX_ROWS_WIDENED_DEFAULT)
    assert cpp_linear.max_rows_widened() == expected


def test_bad_inputs_raise_value_error():
    x, weight = _rand((2, 8), torch.bfloat16, 0), _rand((4, 8), torch.bfloat16, 1)
    with pytest.raises(ValueError, match="disagree"):
        cpp_linear.linear(x, weight[:, :7])
    with pytest.raises(ValueError, match="bias"):
        cpp_linear.linear(x, weight, weight[0])
    with pytest.raises(ValueError, match="torch.Tensor"):
        cpp_linear.linear([1.0], weight)


def test_dispatch_and_layer():
    assert backend_chain("linear", "cpu") == ["cpp", "torch"]
    layer = Linear(17, 5, bias=True).to(torch.bfloat16)
    with torch.no_grad():
        layer.weight.copy_(_rand((5, 17), torch.bfloat16, 0))
        layer.bias.copy_(_rand((5,), torch.bfloat16, 1))
    x = _rand((3, 17), torch.bfloat16, 2)
    _check(layer(x), x, layer.weight, layer.bias)
    torch.testing.assert_close(
        kernels.linear(x, layer.weight, backend="torch"), torch.nn.functional.linear(x, layer.weight)
    )
