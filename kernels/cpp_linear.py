"""The 'cpp' backend's linear layer: swiftserve._C's small-M kernel for decode-sized batches.

At a few rows a linear layer is a read of its weight matrix, and oneDNN's bf16 GEMV reaches about
half of this CPU's memory bandwidth; _C's kernel streams the weight once at close to full
bandwidth (benchmarks/kernels/cpu_bench.py). Past MAX_ROWS rows the matmul has enough reuse for
torch's GEMM (oneDNN) to win, so this backend runs those through `gemm`: the faster kernel for the
shape, not a fallback. Inputs _C has no kernel for (float16, mixed dtypes, a weight with strided
rows) raise UnsupportedInputError at any size, so the backend's coverage does not depend on M.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from swiftserve.kernels import cpp_native as native

# Measured crossover on a 2-core Zen 4 (cpu_bench.py): at 16 rows torch's GEMM is level or ahead.
MAX_ROWS = 8
gemm = F.linear  # the large-M path (a module attribute so benchmarks/op_timer.py can time it)


def supports_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> str | None:
    if (reason := native.dtype_reason(x.dtype)) is not None:
        return reason
    if weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        bias_dtype = "" if bias is None else f", bias {bias.dtype}"
        return f"weight is {weight.dtype}{bias_dtype} and x {x.dtype} (_C takes one dtype)"
    if weight.stride(1) != 1 or (bias is not None and not bias.is_contiguous()):
        return "weight rows or bias are not contiguous"
    if weight.numel() == 0:
        return "empty weight"
    return None


def _check(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    native.check_cpu("linear", x=x, weight=weight, **({} if bias is None else {"bias": bias}))
    if weight.dim() != 2 or x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: x [..., in_features] and weight [out_features, in_features] disagree: "
            f"{tuple(x.shape)} and {tuple(weight.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"linear: bias must be [{weight.shape[0]}], got {tuple(bias.shape)}")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., in] @ weight[out, in]^T (+ bias) -> [..., out]; _C for up to MAX_ROWS rows.

    Called ~120 times per decoded token, so the common case (2-D x with contiguous rows) skips
    the reshape and the contiguity copy.
    """
    _check(x, weight, bias)
    native.unsupported("linear", supports_linear(x, weight, bias))
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if rows > MAX_ROWS:
        return gemm(x, weight, bias)
    x2 = x if x.dim() == 2 else x.reshape(rows, x.shape[-1])
    x_stride = x2.stride()
    if x_stride[-1] != 1:
        x2 = x2.contiguous()
        x_stride = x2.stride()
    n, k = weight.shape
    out = torch.empty(rows, n, dtype=x.dtype)
    native.calls.linear(
        out=out.data_ptr(),
        out_stride=n,
        x=x2.data_ptr(),
        x_stride=x_stride[0],
        weight=weight.data_ptr(),
        weight_stride=weight.stride(0),
        bias=0 if bias is None else bias.data_ptr(),
        m=rows,
        n=n,
        k=k,
        dtype=native.NATIVE_DTYPES[x.dtype],
    )
    return out if x.dim() == 2 else out.reshape(*x.shape[:-1], n)
