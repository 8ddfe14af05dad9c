"""Triton kernels of swiftserve, one file per kernel: the @triton.jit kernel and its launcher.

`kernels/triton_ops.py` is the dispatcher's view of this package. Every launcher checks its
inputs, allocates outputs, and launches with keyword meta-parameters. Nothing here syncs with
the host (no .item()), so all launches can be captured in CUDA graphs.

INTERPRET records whether these kernels were decorated for Triton's CPU interpreter: triton.jit
reads TRITON_INTERPRET when a kernel module is imported, not when it is launched.
"""

from __future__ import annotations

import os

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
