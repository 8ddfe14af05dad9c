"""Which OpenMP runtime the urgent lane sizes: torch's, even when another wheel maps its own."""

from __future__ import annotations

from pathlib import Path

from swiftserve.engine.omp_threads import torch_runtime

TORCH = Path("/venv/site-packages/torch")
SKLEARN_GOMP = "/venv/site-packages/scikit_learn.libs/libgomp-e985bcbb.so.1.0.0"


def test_torch_own_runtime_wins_over_one_mapped_first():
    mapped = [SKLEARN_GOMP, "/usr/lib/libc.so.6", f"{TORCH}/lib/libgomp.so.1", SKLEARN_GOMP]
    assert torch_runtime(mapped, TORCH) == f"{TORCH}/lib/libgomp.so.1"


def test_a_wheel_bundled_runtime_in_torch_libs_counts_as_torch():
    bundled = "/venv/site-packages/torch.libs/libgomp-a34b3233.so.1"
    assert torch_runtime([SKLEARN_GOMP, bundled], TORCH) == bundled


def test_without_torch_own_the_first_runtime_mapped_else_none():
    assert torch_runtime(["/x/libc.so.6", "/usr/lib/libomp.so", SKLEARN_GOMP], TORCH) == "/usr/lib/libomp.so"
    assert torch_runtime(["/x/libc.so.6", "/x/libiomp5.so"], TORCH) == "/x/libiomp5.so"
    assert torch_runtime(["/x/libc.so.6"], TORCH) is None
