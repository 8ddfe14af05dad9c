"""The Triton kernels compile for Hopper (sm_90), checked without a GPU.

Runs tests/kernels/triton_aot.py in a subprocess: this process has TRITON_INTERPRET=1, under
which kernels are interpreted, not compiled. Skips where the harness cannot run (no nvidia
backend in this Triton build).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "triton_aot.py")


def test_triton_kernels_compile_for_hopper():
    # A test extra: missing, it fails here; the harness's skip (exit 2) is for Triton builds
    # without the nvidia backend's compiler APIs.
    import triton  # noqa: F401

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # silences Triton 3.9's default-change warning
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--arch", "90"], env=env, capture_output=True, text=True, timeout=600
    )
    if proc.returncode == 2:
        pytest.skip(f"ahead-of-time compile harness unavailable: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "compiled" in proc.stdout
