"""pytest-benchmark microbenchmarks: the C++ kernels against the torch reference, same shapes.

    python -m pytest benchmarks/kernels/test_cpu_kernels.py --benchmark-only --benchmark-group-by=param:case

Outside `testpaths`, so the test suite never runs these; each group compares `cpp` with `torch`
on one shape (pytest-benchmark prints the ratio column as "relative"). cpu_bench.py has the full
table with GB/s and JSON.
"""

from __future__ import annotations

import pytest
import torch

from swiftserve import kernels

pytest.importorskip("pytest_benchmark")
if "cpp" not in kernels.available_backends("paged_decode_attention"):
    pytest.skip("swiftserve._C is not built", allow_module_level=True)

HEADS, KV_HEADS, HEAD_DIM, BLOCK = 9, 3, 64, 16  # SmolLM2-135M
BACKENDS = ["cpp", "torch"]


def _decode_case(num_seqs: int, context: int, dtype=torch.bfloat16):
    gen = torch.Generator().manual_seed(0)
    blocks_per_seq = (context + BLOCK - 1) // BLOCK
    num_blocks = num_seqs * blocks_per_seq
    shape = (num_blocks, BLOCK, KV_HEADS, HEAD_DIM)
    k_cache = torch.randn(shape, generator=gen).to(dtype)
    v_cache = torch.randn(shape, generator=gen).to(dtype)
    table = torch.randperm(num_blocks, generator=gen).to(torch.int32).view(num_seqs, blocks_per_seq)
    q = torch.randn(num_seqs, HEADS, HEAD_DIM, generator=gen).to(dtype)
    lens = torch.full((num_seqs,), context, dtype=torch.int32)
    return q, k_cache, v_cache, table, lens


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", [(1, 1024), (16, 512), (64, 256)], ids=lambda c: f"batch{c[0]}-ctx{c[1]}")
def test_paged_decode_attention(benchmark, backend: str, case: tuple[int, int]) -> None:
    args = _decode_case(*case)
    benchmark(kernels.paged_decode_attention, *args, HEAD_DIM**-0.5, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["tokens1", "tokens64", "tokens1024"])
def test_fused_add_rms_norm(benchmark, backend: str, case: str) -> None:
    tokens = int(case.removeprefix("tokens"))
    x = torch.randn(tokens, 576).to(torch.bfloat16)
    residual = torch.randn(tokens, 576).to(torch.bfloat16)
    weight = torch.randn(576).to(torch.bfloat16)
    benchmark(kernels.fused_add_rms_norm, x, residual, weight, 1e-5, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["tokens1", "tokens64", "tokens1024"])
def test_silu_and_mul(benchmark, backend: str, case: str) -> None:
    x = torch.randn(int(case.removeprefix("tokens")), 2 * 1536).to(torch.bfloat16)
    benchmark(kernels.silu_and_mul, x, backend=backend)
