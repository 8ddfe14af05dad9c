"""The 'cpp' backend: swiftserve._C's CPU kernels behind the signatures of kernels/reference.py.

Each wrapper checks its tensors (CPU, dtypes, shapes, a contiguous last dimension; ValueError),
allocates the output and hands data pointers and element strides to _C by keyword
(cpp_native.calls), which releases the GIL while it runs. float32 and bfloat16 run natively; for
inputs _C has no kernel for (float16, a head_dim it was not built for, mixed dtypes that the
reference casts) the wrapper raises UnsupportedInputError before doing any work, and never runs
the reference itself: the dispatcher then runs the next backend and logs why, once.
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
from swiftserve.kernels.cpp_native import is_available, status

__all__ = [
    "fused_add_rms_norm",
    "is_available",
    "linear",
    "paged_decode_attention",
    "paged_prefill_attention",
    "rms_norm",
    "rotary_embedding",
    "silu_and_mul",
    "status",
    "store_kv",
]
