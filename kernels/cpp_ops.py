"""The 'cpp' backend: swiftserve._C's CPU kernels behind the signatures of kernels/reference.py.

Each wrapper checks its tensors (CPU, dtypes, shapes, a contiguous last dimension), allocates the
output and hands data pointers and element strides to _C, which releases the GIL while it runs.
float32 and bfloat16 run natively; what _C does not cover (float16, a head_dim it was not built
for, mixed dtypes that the reference casts) runs the torch reference instead, so the dispatcher
can always pick this backend on CPU.
"""

from __future__ import annotations

from swiftserve.kernels.cpp_attention import paged_decode_attention, paged_prefill_attention
from swiftserve.kernels.cpp_elementwise import (
    fused_add_rms_norm,
    rms_norm,
    rotary_embedding,
    silu_and_mul,
    store_kv,
)
from swiftserve.kernels.cpp_linear import linear
from swiftserve.kernels.cpp_native import is_available

__all__ = [
    "fused_add_rms_norm",
    "is_available",
    "linear",
    "paged_decode_attention",
    "paged_prefill_attention",
    "rms_norm",
    "rotary_embedding",
    "silu_and_mul",
    "store_kv",
]
