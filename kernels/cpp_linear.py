"""The 'cpp' backend's linear layer: swiftserve._C's small-M kernel for decode-sized batches.

At a few rows a linear layer is a read of its weight matrix, and oneDNN's bf16 GEMV reaches about
half of this CPU's memory bandwidth; _C's kernel streams the weight once at close to full
bandwidth (benchmarks/kernels/cpu_bench.py). Past MAX_ROWS rows the matmul has enough reuse for
torch's GEMM (oneDNN) to win, so this backend runs those through `gemm`: the faster kernel for the
shape, not a fallback. On a CPU without native bf16 (cpu_isa.py) oneDNN emulates bf16 at about a
seventh of its float32 speed, so there a large bf16 matmul is widened to float32 a slice of weight
rows at a time (`widened_gemm`: 6x faster at 200 rows, the transient copy a few MiB) and _C keeps
up to MAX_ROWS_WIDENED rows, where it is still ahead of the widening. Inputs _C has no kernel for
(float16, mixed dtypes, a weight with strided rows) raise UnsupportedInputError at any size, so
the backend's coverage does not depend on M.
"""

from __future__ import annotations

import logging
from functools import cache

import torch
import torch.nn.functional as F
from swiftserve.kernels import cpp_native as native
from swiftserve.kernels.cpu_isa import has_native_bf16_matmul

logger = logging.getLogger(__name__)

# Measured crossover on a 2-core Zen 4 (cpu_bench.py): at 16 rows torch's GEMM is level or ahead.
MAX_ROWS = 8
# Without native bf16, the rows _C keeps per vector flavour (_C.isa), 2-core AVX2 EPYC: the
# portable flavour 1.1 ms against 1.6 ms widened at 16 rows of SmolLM2's gate_up, 2.9 against 1.6
# at 32; the AVX2 flavour ahead through 64 rows on every projection of SmolLM2, Gemma 3 270M and
# a 1B Llama (1.1-1.5x at 64), level at 96, behind from 128 (0.7-0.9x). AVX-512 without native
# bf16 is unmeasured and keeps the portable figure.
MAX_ROWS_WIDENED = {"avx2": 64}
MAX_ROWS_WIDENED_DEFAULT = 16
# float32 bytes of weight widened at a time: the slice is still in cache when the GEMM reads it
# (a 49152-row lm_head: 20 ms in 2 MiB slices, 94 ms widened whole and 113 MiB transient).
WIDEN_BYTES = 2 << 20
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
    widen = x.dtype is torch.bfloat16 and not has_native_bf16_matmul()
    if rows > (max_rows_widened() if widen else MAX_ROWS):
        return widened_gemm(x, weight, bias) if widen else gemm(x, weight, bias)
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


def max_rows_widened() -> int:
    """The most bf16 rows _C runs where bf16 is emulated, for the flavour its kernels run now."""
    return MAX_ROWS_WIDENED.get(native.flavour(), MAX_ROWS_WIDENED_DEFAULT)


def widened_gemm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight^T (+ bias) in float32, rounded once to x's dtype, widening WIDEN_BYTES of weight
    rows at a time: what a bf16 GEMM computes (fp32 sums, one rounding), where bf16 is emulated."""
    _log_widening()
    x32 = x.float()
    n, k = weight.shape
    out = torch.empty(*x.shape[:-1], n, dtype=x.dtype)
    step = max(16, WIDEN_BYTES // (4 * max(k, 1)))
    for n0 in range(0, n, step):
        b = None if bias is None else bias[n0 : n0 + step].float()
        out[..., n0 : n0 + step] = gemm(x32, weight[n0 : n0 + step].float(), b)
    return out


@cache
def _log_widening() -> None:
    logger.info(
        "this CPU has no native bf16 matmul (no AVX512-BF16 or AMX): bf16 matmuls of more than %d "
        "rows run in float32, which torch computes ~6x faster here",
        max_rows_widened(),
    )
