"""Picks the implementation of an op for a device, or the one a caller names.

Each backend is a module exposing functions named after the ops it implements. Backends load
lazily and only when importable (triton, the C++ extension and flash-attn are all optional).

A backend op that has no kernel for its (valid) inputs, say float16 or a head size it was not
built for, raises UnsupportedInputError before doing any work; its `supports_*` predicate gives
the reason. With no backend named, an op runs on the fastest backend for the device that accepts
the inputs: a faster one that refuses them is skipped and the skip is logged once per op and
reason, so a slow path is never silent. A named backend that refuses raises the error to the
caller instead of running something else.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from types import ModuleType

from swiftserve.kernels.errors import UnsupportedInputError

logger = logging.getLogger(__name__)

_BACKEND_MODULES = {
    "torch": "swiftserve.kernels.reference",
    "triton": "swiftserve.kernels.triton_ops",
    "cpp": "swiftserve.kernels.cpp_ops",
    "cuda": "swiftserve.kernels.cuda_ops",
    "flash_attn": "swiftserve.kernels.flash_attn_ops",
}

# The devices each backend runs on (triton also runs CPU tensors under TRITON_INTERPRET=1, when named).
_DEVICES = {
    "torch": ("cpu", "cuda"),
    "triton": ("cuda",),
    "cpp": ("cpu",),
    "cuda": ("cuda",),
    "flash_attn": ("cuda",),
}

# Fastest first, per device type. A backend missing an op (or not importable) is skipped.
_PREFERENCE = {
    "cuda": ("triton", "torch"),
    "cpu": ("cpp", "torch"),
}


@cache
def _import(backend: str) -> ModuleType | str:
    """The backend's module, or why it cannot be imported."""
    try:
        return importlib.import_module(_BACKEND_MODULES[backend])
    except ImportError as exc:
        return f"not importable ({exc})"


@cache
def _load(backend: str) -> ModuleType | None:
    module = _import(backend)
    if isinstance(module, str):
        return None
    is_available = getattr(module, "is_available", lambda: True)
    return module if is_available() else None


@dataclass(frozen=True)
class BackendStatus:
    name: str
    devices: tuple[str, ...]
    is_available: bool
    detail: str  # what it runs on, or why it cannot run here


def backend_status(backend: str) -> BackendStatus:
    module = _import(backend)
    if isinstance(module, str):
        return BackendStatus(backend, _DEVICES[backend], False, module)
    detail = module.status() if hasattr(module, "status") else ""
    return BackendStatus(backend, _DEVICES[backend], _load(backend) is not None, detail)


def backend_statuses() -> list[BackendStatus]:
    """Every kernel backend this install knows, available or not (and why)."""
    return [backend_status(name) for name in _BACKEND_MODULES]


def preferred_backends(device_type: str) -> tuple[str, ...]:
    """Backend names an unnamed op tries on this device, fastest first."""
    return _PREFERENCE.get(device_type, ("torch",))


def describe(device_type: str, backend: str | None = None) -> str:
    """The backend a model on `device_type` runs, in words: the named one, else the fastest here."""
    if backend is not None:
        status = backend_status(backend) if backend in _BACKEND_MODULES else None
        detail = f"{status.detail}; " if status is not None and status.detail else ""
        return f"{backend} ({detail}named by the caller)"
    skipped = []
    for name in preferred_backends(device_type):
        status = backend_status(name)
        if status.is_available:
            because = "".join(f"; {s.name} unavailable: {s.detail}" for s in skipped)
            return f"{name} ({status.detail}{because})"
        skipped.append(status)
    return "torch"


def available_backends(op: str) -> list[str]:
    """Backends that can run `op` in this process."""
    return [b for b in _BACKEND_MODULES if (m := _load(b)) is not None and hasattr(m, op)]


def backend_chain(op: str, device_type: str) -> list[str]:
    """The backends an unnamed `op` on this device tries, in order: the first that accepts runs."""
    chain = [n for n in preferred_backends(device_type) if (m := _load(n)) is not None and hasattr(m, op)]
    return chain or ["torch"]


@cache  # every op call resolves: keep it a dict lookup (failed lookups raise and are not cached)
def resolve(op: str, device_type: str, backend: str | None = None) -> Callable:
    """The function running `op`: the named backend's, else the fastest accepting backend's."""
    if backend is not None:
        if backend not in _BACKEND_MODULES:
            raise ValueError(f"unknown kernel backend {backend!r}; known: {sorted(_BACKEND_MODULES)}")
        module = _load(backend)
        if module is None or not hasattr(module, op):
            raise ValueError(
                f"kernel backend {backend!r} cannot run {op} here (available: {available_backends(op)})"
            )
        return getattr(module, op)  # its UnsupportedInputError reaches the caller
    chain = [(name, getattr(_load(name), op)) for name in backend_chain(op, device_type)]
    if len(chain) == 1:
        return chain[0][1]
    return _first_accepting(op, chain)


def _first_accepting(op: str, chain: list[tuple[str, Callable]]) -> Callable:
    """Runs `op` on the first backend of `chain` that does not refuse the inputs. A refusal is an
    exception raised before any work, so the accepted path costs one call and a try block."""
    candidates = tuple((name, fn, chain[i + 1][0]) for i, (name, fn) in enumerate(chain[:-1]))
    last = chain[-1][1]

    def run(*args, **kwargs):
        for name, fn, next_name in candidates:
            try:
                return fn(*args, **kwargs)
            except UnsupportedInputError as exc:
                if exc.op != op or exc.backend != name:
                    raise
                _log_skip(op, name, exc.reason, next_name)
        return last(*args, **kwargs)

    return run


@cache  # once per op, backend and reason: a model hits the same reason in every layer and step
def _log_skip(op: str, backend: str, reason: str, instead: str) -> None:
    logger.warning("%s: kernel backend %r skipped (%s); running %r instead", op, backend, reason, instead)
