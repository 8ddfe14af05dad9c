"""Handing a model's memory back: break every reference to its tensors, then return the pages.

Dropping the engine object is not always enough: the KV cache is also referenced by every
attention layer and by the fused-decode table (models/llama_fused_decode.py), and a traceback or
a pending callback can keep the engine alive a while. Clearing those attributes frees the tensors
as soon as the model's own references go. glibc then keeps freed heap chunks (tensors under its
mmap threshold) for reuse; malloc_trim(0) returns them to the OS so RSS really falls.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

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
    _malloc_trim()


def _malloc_trim() -> None:
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
