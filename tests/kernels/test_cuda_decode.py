"""The CUDA C++ paged decode attention (kernels/cuda_ops.py, csrc/cuda/paged_decode_attention.cu).

Without a GPU only the build is checked: nvcc compiles the .cu file to PTX for sm_90 (skipped
when nvcc is not on PATH). On a GPU the kernel runs against kernels.reference. Tolerances (abs,
rel): fp32 (2e-5, 1e-5); fp16 / bf16 (1e-2, 2e-2): the output is rounded once, and the kernel
adds in another order.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch
from swiftserve.kernels import cuda_ops, reference

from .cases import make_decode_case, random_lens

TOL = {
    torch.float32: {"atol": 2e-5, "rtol": 1e-5},
    torch.float16: {"atol": 1e-2, "rtol": 2e-2},
    torch.bfloat16: {"atol": 1e-2, "rtol": 2e-2},
}


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_cu_source_compiles_with_nvcc(tmp_path):
    ptx = tmp_path / "paged_decode_attention.ptx"
    result = subprocess.run(
        [
            "nvcc",
            "--ptx",
            "-arch=sm_90",
            "-std=c++17",
            "-DSWIFTSERVE_COMPILE_CHECK",
            str(cuda_ops.SOURCE),
            "-o",
            str(ptx),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    text = ptx.read_text()
    assert text.count(".entry") == 7  # the explicit instantiations: 4 partition + 3 reduce kernels
    assert "paged_decode_attention" in text


def test_is_available_agrees_with_status():
    """is_available() is true exactly when status() names the compiled kernel; otherwise status()
    says what is missing. On a GPU machine with CuPy this checks the positive case too."""
    status = cuda_ops.status()
    assert cuda_ops.is_available() == status.startswith("NVRTC-compiled decode attention on ")
    if not torch.cuda.is_available():
        assert not cuda_ops.is_available()
        assert status == "no CUDA device" or "CuPy" in status


def _run(case, fn, **kw):
    c = case.cache
    return fn(case.q, c.k_cache, c.v_cache, c.block_tables, c.context_lens, case.scale, **kw)


@pytest.fixture
def cuda_backend():
    if not cuda_ops.is_available():
        pytest.skip("needs CUDA and CuPy (NVRTC)")
    return cuda_ops


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["f32", "f16", "bf16"])
@pytest.mark.parametrize(
    "context_lens,num_heads,num_kv_heads,head_dim",
    [
        pytest.param([1], 4, 4, 64, id="1seq-ctx1-mha"),
        pytest.param([15, 16, 17], 8, 2, 128, id="3seq-gqa4-d128"),
        pytest.param(random_lens(17, 1, 1000, seed=3), 9, 3, 64, id="17seq-gqa3"),
        pytest.param([1000], 8, 1, 128, id="1seq-ctx1000-gqa8-split"),
        pytest.param([3000, 5, 0], 16, 1, 256, id="ctx3000-gqa16-d256-empty"),
    ],
)
def test_decode_matches_reference(cuda_backend, context_lens, num_heads, num_kv_heads, head_dim, dtype):
    case = make_decode_case(
        context_lens, num_heads, num_kv_heads, head_dim, dtype=dtype, device="cuda", seed=1
    )
    out = _run(case, cuda_backend.paged_decode_attention)
    torch.testing.assert_close(out, _run(case, reference.paged_decode_attention), **TOL[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("window,block_size", [(7, 16), (300, 8), (600, 32)])
def test_decode_sliding_window(cuda_backend, window, block_size):
    case = make_decode_case(
        [1000, 17, 1], 8, 2, 64, block_size=block_size, dtype=torch.bfloat16, device="cuda", seed=2
    )
    out = _run(case, cuda_backend.paged_decode_attention, sliding_window=window)
    expected = _run(case, reference.paged_decode_attention, sliding_window=window)
    torch.testing.assert_close(out, expected, **TOL[torch.bfloat16])


@pytest.mark.gpu
def test_bad_inputs_raise_value_error(cuda_backend):
    case = make_decode_case([20], 4, 2, 96, device="cuda", seed=3)
    with pytest.raises(ValueError, match="head_dim must be one of"):
        _run(case, cuda_backend.paged_decode_attention)
    cpu = make_decode_case([20], 4, 2, 64, seed=3)
    with pytest.raises(ValueError, match="CUDA tensor"):
        _run(cpu, cuda_backend.paged_decode_attention)
