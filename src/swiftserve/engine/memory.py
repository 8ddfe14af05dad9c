"""Handing a model's memory back: break every reference to its tensors, then return the pages.

Dropping the engine object is not always enough: the KV cache is also referenced by every
attention layer and by the fused-decode table (models/llama_fused_decode.py), and a traceback or
a pending callback can keep the engine alive a while. Clearing those attributes frees the tensors
as soon as the model's own references go. glibc then keeps freed heap chunks (tensors under its
mmap threshold) for reuse; malloc_trim(0) returns them to the OS so RSS really falls.

A full collection walks every object the process holds, and a server holds ~200k from its
imports alone (torch's): 0.12-0.15 s here, on the event loop, at every unload, stalling every
request in flight. While a server runs, the heap it started with is frozen (gc.freeze, as vLLM's
engine core does): collections then walk only what was made since (the models, the requests).
The freeze is counted per running server, so the last one to stop thaws the heap again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
import threading

logger = logging.getLogger(__name__)


def release_llm_engine(engine) -> None:
    """Breaks the references an LLMEngine's runner holds to its weights and KV cache."""
    model = release_keeping_weights(engine)
    if model is not None and getattr(model, "fused_decode", None) is not None:
        model.fused_decode = None


def release_keeping_weights(engine):
    """Breaks every reference to the KV cache (the attention layers', the fused-decode table's,
    the runner's) and drops the runner, but returns the model with its weights (None if it had
    none): a park keeps it, and a reload binds a fresh KV cache to it (ModelRunner)."""
    runner = getattr(engine, "runner", None)
    if runner is None:
        return None
    runner.close()  # its mask fill thread, which would otherwise wait for the next step
    model = runner.model
    if model is not None:
        _drop_kv_references(model)
    runner.model = runner.kv_cache = runner.sampler = None
    engine.runner = None
    return model


def _drop_kv_references(model) -> None:
    fused = getattr(model, "fused_decode", None)
    if fused is not None:  # the native table holds the KV tensors too; rebuilt on the next decode
        fused.table = fused.table_key = None
    for attn in model.attention_layers():
        attn.k_cache = attn.v_cache = None


def return_freed_memory() -> None:
    """Collects cycles, then asks glibc to give freed heap pages back (a no-op elsewhere)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, looked up once (a lookup runs ldconfig, and each CDLL object is a
    cycle the next collection has to find); None where the C library has none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    return trim


class _Freezes:
    """How many running servers want the startup heap frozen: the process's gc is one, however
    many servers share the process (tests, an application embedding two)."""

    lock = threading.Lock()
    count = 0


def freeze_startup_heap() -> None:
    """Collects, then freezes every object alive now (a server's imports and start-up state) out
    of later collections; the first running server does it, see the module docstring."""
    with _Freezes.lock:
        _Freezes.count += 1
        if _Freezes.count == 1:
            gc.collect()
            gc.freeze()
            logger.debug("startup heap frozen: %d objects out of later collections", gc.get_freeze_count())


def thaw_startup_heap() -> None:
    """Undoes freeze_startup_heap; the last running server to stop gives the objects back to gc."""
    with _Freezes.lock:
        if _Freezes.count == 0:
            return
        _Freezes.count -= 1
        if _Freezes.count == 0:
            gc.unfreeze()
