"""What the 'cpp' kernel wrappers share: the handle on swiftserve._C and the input checks.

Every wrapper calls `cpp_native._C.<kernel>` at call time, so replacing `_C` here (the tests'
portable-kernel fixture, benchmarks/op_timer.py) reaches all of them.
"""

from __future__ import annotations

import torch

try:
    from swiftserve import _C
except ImportError:  # the extension was not built: the cpp backend is unavailable
    _C = None

NATIVE_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}
HEAD_DIMS = frozenset(_C.head_dims) if _C is not None else frozenset()
MAX_GROUP = _C.max_group if _C is not None else 0


def is_available() -> bool:
    return _C is not None


def check_cpu(op: str, **tensors: torch.Tensor) -> None:
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_cpu:
            raise ValueError(f"{op}: {name} is on {t.device}, the cpp backend runs on CPU tensors only")


def check_rows(op: str, name: str, t: torch.Tensor) -> None:
    """t [..., n] must be addressable as rows of n contiguous elements with one row stride."""
    if t.stride(-1) != 1 or (t.dim() > 2 and not t.is_contiguous()):
        raise ValueError(
            f"{op}: {name} must be contiguous (or a 2-D view with contiguous rows), got strides {t.stride()}"
        )


def int32(t: torch.Tensor) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"index tensors must be torch.Tensor, got {type(t).__name__}")
    if t.dtype == torch.int32 and t.stride(-1) == 1:
        return t
    if t.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"index tensors must be int32 or int64, got {t.dtype}")
    return t.to(torch.int32).contiguous()


def int64(t: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.dtype not in (torch.int32, torch.int64) or t.dim() != 1:
        raise ValueError(f"{name} must be a 1-D int32 or int64 tensor")
    return t if t.dtype == torch.int64 and t.is_contiguous() else t.to(torch.int64).contiguous()
