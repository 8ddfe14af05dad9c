"""Picks the implementation of an op for a device, or the one a caller names.

Each backend is a module exposing functions named after the ops it implements. Backends load
lazily and only when importable (triton, the C++ extension and flash-attn are all optional).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache
from types import ModuleType

_BACKEND_MODULES = {
    "torch": "swiftserve.kernels.reference",
    "triton": "swiftserve.kernels.triton_ops",
    "cpp": "swiftserve.kernels.cpp_ops",
    "cuda": "swiftserve.kernels.cuda_ops",
    "flash_attn": "swiftserve.kernels.flash_attn_ops",
}

# Fastest first, per device type. A backend missing an op (or not importable) is skipped.
_PREFERENCE = {
    "cuda": ("triton", "torch"),
    "cpu": ("cpp", "torch"),
}


@cache
def _load(backend: str) -> ModuleType | None:
    try:
        module = importlib.import_module(_BACKEND_MODULES[backend])
    except ImportError:
        return None
    is_available = getattr(module, "is_available", lambda: True)
    return module if is_available() else None


def available_backends(op: str) -> list[str]:
    """Backends that can run `op` in this process."""
    return [b for b in _BACKEND_MODULES if (m := _load(b)) is not None and hasattr(m, op)]


@cache  # every op call resolves: keep it a dict lookup (failed lookups raise and are not cached)
def resolve(op: str, device_type: str, backend: str | None = None) -> Callable:
    """The function implementing `op`: the named backend, else the fastest for the device."""
    if backend is not None:
        if backend not in _BACKEND_MODULES:
            raise ValueError(f"unknown kernel backend {backend!r}; known: {sorted(_BACKEND_MODULES)}")
        module = _load(backend)
        if module is None or not hasattr(module, op):
            raise ValueError(
                f"kernel backend {backend!r} cannot run {op} here (available: {available_backends(op)})"
            )
        return getattr(module, op)
    for name in _PREFERENCE.get(device_type, ("torch",)):
        module = _load(name)
        if module is not None and hasattr(module, op):
            return getattr(module, op)
    return getattr(_load("torch"), op)
