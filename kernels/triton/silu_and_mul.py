"""silu_and_mul: x [..., 2d] -> silu(x[..., :d]) * x[..., d:] (SwiGLU's gate).

Grid (rows, cdiv(d, BLOCK)). Bytes: 3 * rows * d * element size (read gate and up, write out).
Rounding follows the reference: silu is rounded to the input dtype before the multiply.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from swiftserve.kernels.triton.common import next_pow2


# fmt: off
@triton.jit
def _silu_and_mul_kernel(
    # pointers
    out_ptr, x_ptr,
    # strides
    stride_out_row, stride_x_row,
    # sizes
    d,
    # meta-parameters
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < d
    gate = tl.load(x_ptr + row * stride_x_row + offs, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * stride_x_row + d + offs, mask=mask, other=0.0).to(tl.float32)
    act = (gate * tl.sigmoid(gate)).to(x_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out_ptr + row * stride_out_row + offs, (act * up).to(out_ptr.dtype.element_ty), mask=mask)
# fmt: on


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    if x.shape[-1] % 2:
        raise ValueError(f"last dim must be even (gate | up), got {x.shape[-1]}")
    d = x.shape[-1] // 2
    x2 = x.reshape(-1, x.shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    out = torch.empty(*x.shape[:-1], d, dtype=x.dtype, device=x.device)
    if x2.shape[0] == 0 or d == 0:
        return out
    block = min(next_pow2(d), 2048)
    # fmt: off
    _silu_and_mul_kernel[(x2.shape[0], triton.cdiv(d, block))](
        out.view(-1, d), x2,
        d, x2.stride(0),
        d,
        BLOCK=block, num_warps=min(max(block // 256, 1), 8),
    )
    # fmt: on
    return out
