"""Kernel tests run the Triton kernels on CPU through Triton's interpreter when there is no GPU.

triton.jit reads TRITON_INTERPRET when a kernel module is imported, so this must be set before
anything imports swiftserve.kernels.triton. conftest.py files load during collection, before
any test module of this folder; a test module elsewhere that imported the kernels at import time
would get in first, and the Triton tests then skip with that reason (see triton_backend).
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def triton_backend():
    """The 'triton' backend module, or a skip saying why it cannot run here."""
    import triton  # noqa: F401 - a test extra: failing to import it is a failure, not a skip
    from swiftserve.kernels import triton_ops

    if not triton_ops.is_available():
        pytest.skip(
            "Triton kernels need CUDA, or TRITON_INTERPRET=1 set before swiftserve.kernels.triton "
            "is first imported (run with TRITON_INTERPRET=1)"
        )
    return triton_ops
