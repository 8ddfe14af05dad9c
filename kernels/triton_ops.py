"""The 'triton' kernel backend: the dispatcher's view of kernels/triton/, one function per op.

Signatures match kernels/reference.py exactly. Available when triton imports and either CUDA is
present or the kernels were decorated for the CPU interpreter (TRITON_INTERPRET=1 at import).
"""

from __future__ import annotations

import torch
from swiftserve.kernels.triton import INTERPRET
from swiftserve.kernels.triton.paged_decode import paged_decode_attention
from swiftserve.kernels.triton.paged_prefill import paged_prefill_attention
from swiftserve.kernels.triton.rms_norm import fused_add_rms_norm, rms_norm
from swiftserve.kernels.triton.rotary import rotary_embedding
from swiftserve.kernels.triton.silu_and_mul import silu_and_mul
from swiftserve.kernels.triton.store_kv import store_kv

__all__ = [
    "fused_add_rms_norm",
    "is_available",
    "paged_decode_attention",
    "paged_prefill_attention",
    "rms_norm",
    "rotary_embedding",
    "silu_and_mul",
    "status",
    "store_kv",
]


def is_available() -> bool:
    return INTERPRET or torch.cuda.is_available()


def status() -> str:
    import triton

    if INTERPRET:
        return f"triton {triton.__version__} on the CPU interpreter (TRITON_INTERPRET=1)"
    if torch.cuda.is_available():
        return f"triton {triton.__version__} on {torch.cuda.get_device_name()}"
    return f"triton {triton.__version__} installed, no CUDA device"
