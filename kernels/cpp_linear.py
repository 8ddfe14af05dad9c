"""The 'cpp' backend's linear layer: swiftserve._C's small-M kernel for decode-sized batches.

At a few rows a linear layer is a read of its weight matrix, and oneDNN's bf16 GEMV reaches about
half of this CPU's memory bandwidth; _C's kernel streams the weight once at close to full
bandwidth (benchmarks/kernels/cpu_bench.py). Past MAX_ROWS rows the matmul has enough reuse for
torch's GEMM to win, so larger inputs (and dtypes or layouts _C does not take) go to the reference.
"""

from __future__ import annotations

import torch
from swiftserve.kernels import cpp_native as native
from swiftserve.kernels import reference

# Measured crossover on a 2-core Zen 4 (cpu_bench.py): at 16 rows torch's GEMM is level or ahead.
MAX_ROWS = 8


def _check(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    native.check_cpu("linear", x=x, weight=weight, **({} if bias is None else {"bias": bias}))
    if weight.dim() != 2 or x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: x [..., in_features] and weight [out_features, in_features] disagree: "
            f"{tuple(x.shape)} and {tuple(weight.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"linear: bias must be [{weight.shape[0]}], got {tuple(bias.shape)}")


def _native(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    return (
        native._C is not None
        and x.dtype in native.NATIVE_DTYPES
        and weight.dtype == x.dtype
        and weight.stride(1) == 1
        and weight.numel() > 0
        and (bias is None or (bias.dtype == x.dtype and bias.is_contiguous()))
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., in] @ weight[out, in]^T (+ bias) -> [..., out]; _C for up to MAX_ROWS rows.

    Called ~120 times per decoded token, so the common case (2-D x with contiguous rows) skips
    the reshape and the contiguity copy.
    """
    _check(x, weight, bias)
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if rows > MAX_ROWS or not _native(x, weight, bias):
        return reference.linear(x, weight, bias)
    x2 = x if x.dim() == 2 else x.reshape(rows, x.shape[-1])
    x_stride = x2.stride()
    if x_stride[-1] != 1:
        x2 = x2.contiguous()
        x_stride = x2.stride()
    n, k = weight.shape
    out = torch.empty(rows, n, dtype=x.dtype)
    native._C.linear(
        out.data_ptr(),
        n,
        x2.data_ptr(),
        x_stride[0],
        weight.data_ptr(),
        weight.stride(0),
        0 if bias is None else bias.data_ptr(),
        rows,
        n,
        k,
        native.NATIVE_DTYPES[x.dtype],
    )
    return out if x.dim() == 2 else out.reshape(*x.shape[:-1], n)
