"""rms_norm and fused_add_rms_norm: one program per row, the whole row in one register tile.

Bytes: rms_norm reads x and writes out (2 * rows * hidden * element size, plus the weight once);
fused_add_rms_norm reads x and residual and writes both (4 *). Rounding follows the reference:
the normalised row is rounded to the input dtype before the weight multiplies it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from swiftserve.kernels.triton.common import next_pow2


# fmt: off
@triton.jit
def _rms_norm_kernel(
    # pointers
    out_ptr, x_ptr, weight_ptr,
    # strides
    stride_out_row, stride_x_row,
    # sizes and scalars
    hidden, eps,
    # meta-parameters
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < hidden
    x = tl.load(x_ptr + row * stride_x_row + offs, mask=mask, other=0.0).to(tl.float32)
    inv_rms = tl.rsqrt(tl.sum(x * x, 0) / hidden + eps)
    normed = (x * inv_rms).to(x_ptr.dtype.element_ty).to(tl.float32)
    w = tl.load(weight_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_out_row + offs, (normed * w).to(out_ptr.dtype.element_ty), mask=mask)
# fmt: on


# fmt: off
@triton.jit
def _fused_add_rms_norm_kernel(
    # pointers
    x_ptr, residual_ptr, weight_ptr,
    # strides
    stride_x_row, stride_res_row,
    # sizes and scalars
    hidden, eps,
    # meta-parameters
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < hidden
    x_row = x_ptr + row * stride_x_row + offs
    res_row = residual_ptr + row * stride_res_row + offs
    x = tl.load(x_row, mask=mask, other=0.0).to(tl.float32)
    res = tl.load(res_row, mask=mask, other=0.0).to(tl.float32)
    res = (res + x).to(residual_ptr.dtype.element_ty)
    tl.store(res_row, res, mask=mask)
    r = res.to(tl.float32)  # normalise the rounded sum, as the reference does
    inv_rms = tl.rsqrt(tl.sum(r * r, 0) / hidden + eps)
    normed = (r * inv_rms).to(residual_ptr.dtype.element_ty).to(tl.float32)
    w = tl.load(weight_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(x_row, (normed * w).to(x_ptr.dtype.element_ty), mask=mask)
# fmt: on


def _rows(t: torch.Tensor) -> torch.Tensor:
    """t as [rows, hidden] without copying (in-place ops write through it)."""
    rows = t if t.dim() == 2 else t.view(-1, t.shape[-1])  # view raises when a copy would be needed
    if rows.stride(-1) != 1:
        raise ValueError("fused_add_rms_norm needs x and residual contiguous in the last dim")
    return rows


def _launch_config(hidden: int) -> dict:
    block = next_pow2(hidden)
    return {"BLOCK": block, "num_warps": min(max(block // 512, 1), 16)}


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x [..., hidden] -> rms-normalised x times weight, in the dtype torch would promote to."""
    if weight.shape != (x.shape[-1],):
        raise ValueError(f"weight {tuple(weight.shape)} does not match hidden size {x.shape[-1]}")
    x2 = x.reshape(-1, x.shape[-1])  # a view when the layout allows
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    out = torch.empty(x.shape, dtype=torch.promote_types(x.dtype, weight.dtype), device=x.device)
    if x2.shape[0] == 0:
        return out
    # fmt: off
    _rms_norm_kernel[(x2.shape[0],)](
        out.view(-1, x.shape[-1]), x2, weight.contiguous(),
        x.shape[-1], x2.stride(0),
        x.shape[-1], eps,
        **_launch_config(x.shape[-1]),
    )
    # fmt: on
    return out


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> torch.Tensor:
    """residual += x; x = rms_norm(residual), both in place. Returns residual."""
    if x.shape != residual.shape or weight.shape != (x.shape[-1],):
        shapes = f"x {tuple(x.shape)}, residual {tuple(residual.shape)}, weight {tuple(weight.shape)}"
        raise ValueError(f"shapes do not match: {shapes}")
    x2, res2 = _rows(x), _rows(residual)
    if x2.shape[0] == 0:
        return residual
    # fmt: off
    _fused_add_rms_norm_kernel[(x2.shape[0],)](
        x2, res2, weight.contiguous(),
        x2.stride(0), res2.stride(0),
        x.shape[-1], eps,
        **_launch_config(x.shape[-1]),
    )
    # fmt: on
    return residual
