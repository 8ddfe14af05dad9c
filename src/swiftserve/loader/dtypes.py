"""The serving dtypes, and the one rule for "auto".

"auto" serves a snapshot in the dtype it stores (it was written in its serving layout: no cast),
and a folder, GGUF or alias in its kind's default: bfloat16 for chat models (half the bytes each
decoded token reads) and float32 for embedding models (small; their vectors then equal the
reference models'). Every loader asks `serving_dtype`; nothing else decides what "auto" means.
"""

from __future__ import annotations

import torch

from swiftserve.config import DTYPES

TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
AUTO_DTYPE: dict[str, str] = {"chat": "bfloat16", "embedding": "float32"}
assert set(TORCH_DTYPES) == set(DTYPES) - {"auto"}


def serving_dtype(kind: str, requested: str, stored: str | None = None) -> str:
    """The dtype name a model is served in: `requested`, unless it is "auto" (see the module
    docstring); `stored` is a snapshot's dtype (None for other sources)."""
    if requested not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {requested!r}")
    if requested != "auto":
        return requested
    return stored if stored is not None else AUTO_DTYPE[kind]


def torch_dtype(name: str, device: torch.device) -> torch.dtype:
    """The torch dtype of a resolved dtype name, refused where the device cannot compute in it."""
    dtype = TORCH_DTYPES[name]
    if device.type == "cpu" and dtype is torch.float16:
        raise ValueError("float16 is not supported on CPU; use bfloat16 or float32")
    return dtype
