"""The vector flavours of csrc/cpu/vec.h themselves, and the kernels' row tails at a page end.

`_C.vec_probe` runs a flavour's loads, exp and stores over float32 inputs: the native flavour
(Avx2 on an AVX2 CPU without AVX-512, Avx512 with it) and the portable Generic one must store
the bits of f32_to_bf16 (round to nearest even, overflow to inf, NaN made quiet; torch's own
conversion for every non-NaN), exp must be exact-to-a-few-ulps with 0 below -104, and every
length 1..33 (whole vectors plus a partial tail) must write exactly its n elements.

The kernels then run rows of 1..33 elements that end where a page ends and an unreadable page
begins: a load or store past a row's end crashes the test instead of passing unnoticed.
"""

from __future__ import annotations

import ctypes
import math
import mmap
from pathlib import Path

import numpy as np
import pytest
import torch
from swiftserve.kernels import cpp_linear, cpp_native, cpp_ops, reference

pytestmark = pytest.mark.skipif(
    not cpp_ops.is_available(), reason="swiftserve._C is not built (pip install -e .)"
)

DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
NATIVE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}
TAILS = range(1, 34)  # two whole vectors and every partial tail, below, at and past 16 and 32
AVX512 = {"avx512f", "avx512bw", "avx512vl", "avx512dq"}  # what vec.h's Avx512 needs

# float32 bit patterns around every rounding case of a bf16 store.
EDGE_BITS = [
    0x3F808000,  # 1 + 2^-8: a tie, even below -> 1.0
    0x3F818000,  # a tie, odd below -> rounds up
    0x3F808001,  # just past a tie -> up
    0x3F807FFF,  # just short of one -> down
    0xBF818000,  # a negative tie
    0x7F7F8000,  # the largest bf16 plus half an ulp: a tie that rounds to inf
    0x7F7FFFFF,  # float32 max -> inf
    0xFF7FFFFF,  # -float32 max -> -inf
    0x7F800000,  # inf
    0xFF800000,  # -inf
    0x00000001,  # the smallest subnormal -> 0
    0x00018000,  # a subnormal tie, odd below -> up
    0x80008001,  # a negative subnormal past a tie
    0x00000000,
    0x80000000,  # -0
    0x7FC00000,  # quiet NaN
    0x7F800001,  # signalling NaN, payload in the dropped half only
    0x7FA00000,  # signalling NaN, payload kept
    0xFFBFFFFF,  # negative signalling NaN, every payload bit set
    0x7FFFFFFF,
]


def _floats(bits: list[int]) -> torch.Tensor:
    return torch.from_numpy(np.array(bits, dtype=np.uint32).view(np.float32).copy())


def _bits(t: torch.Tensor) -> list[int]:
    """The raw bits of a float32 or bfloat16 tensor, unsigned."""
    if t.dtype == torch.bfloat16:
        return [b & 0xFFFF for b in t.view(torch.int16).tolist()]
    return [b & 0xFFFFFFFF for b in t.view(torch.int32).tolist()]


def _bf16_bits(bits: int) -> int:
    """f32_to_bf16 of csrc/cpu/vec.h, in Python: NaN keeps its top half with the quiet bit set;
    anything else rounds to nearest, ties to even."""
    if bits & 0x7FFFFFFF > 0x7F800000:
        return (bits >> 16) | 0x40
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF


def _probe(x: torch.Tensor, op: str, dtype: torch.dtype, flavour: str) -> torch.Tensor:
    """vec_probe over x (float32), its output checked for writes past its n elements."""
    n = x.numel()
    guard = torch.full((n + 32,), 7.0, dtype=dtype)
    cpp_native._C.vec_probe(
        out=guard.data_ptr(),
        x=x.data_ptr(),
        n=n,
        op=op,
        dtype=NATIVE_NAMES[dtype],
        generic=flavour == "generic",
    )
    assert torch.equal(guard[n:], torch.full((32,), 7.0, dtype=dtype)), "a store went past n"
    return guard[:n]


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def test_an_avx2_cpu_runs_the_avx2_flavour():
    flags = _cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags to tell the CPU's vector extensions by")
    if cpp_native._C.portable:
        pytest.skip("a portable build (SWIFTSERVE_PORTABLE=1) runs the Generic flavour only")
    if AVX512 <= flags:
        pytest.skip("this CPU has AVX-512: the build runs the Avx512 flavour")
    if not {"avx2", "fma"} <= flags:
        pytest.skip("this CPU has no AVX2 and FMA: the build runs the Generic flavour")
    assert cpp_native._C.isa == "avx2"
    assert "AVX2 kernels" in cpp_native.status()


@pytest.mark.parametrize("flavour", ["native", "generic"])
def test_bf16_stores_round_like_the_scalar_conversion(flavour):
    """Every edge value at every lane of every length 1..33: whole vectors and partial tails."""
    for n in TAILS:
        bits = [EDGE_BITS[(i + n) % len(EDGE_BITS)] for i in range(n)]
        x = _floats(bits)
        assert _bits(_probe(x, "copy", torch.bfloat16, flavour)) == [_bf16_bits(b) for b in bits], n
        assert _bits(_probe(x, "copy", torch.float32, flavour)) == bits, n


def test_bf16_stores_match_torch_except_nan_payloads():
    """torch rounds the same way; a NaN it turns into its one canonical NaN, ours keeps the payload."""
    x = _floats(EDGE_BITS)
    ours = _probe(x, "copy", torch.bfloat16, "native")
    finite_or_inf = ~x.isnan()
    assert _bits(ours[finite_or_inf]) == _bits(x[finite_or_inf].to(torch.bfloat16))
    assert ours[~finite_or_inf].isnan().all()


EXP_INPUTS = [-math.inf, -1e30, -104.5, -104.0, -103.9, -100.0, -87.5, -87.3, -50.0, -1.0, -0.0, 0.0]
EXP_INPUTS += [1e-8, 0.5, 1.0, 10.0, 88.0, 88.7, 88.72, 88.8, 89.0, 89.5, 100.0, 1e30, math.inf]


@pytest.mark.parametrize("flavour", ["native", "generic"])
def test_exp_at_its_extremes(flavour):
    """Within 2.5 ulps (one step where the result is subnormal) of the correctly rounded exp,
    exactly 0 for -inf and below -104, inf past float32's range; NaN gives exactly 0 in the
    intrinsics flavours (Avx2 as Avx512), whatever std::exp gives in Generic (which is also the
    native flavour of a portable build)."""
    x = torch.tensor(EXP_INPUTS + [math.nan], dtype=torch.float32)
    got = _probe(x, "exp", torch.float32, flavour)
    want = x.double().exp().float()
    torch.testing.assert_close(got[:-1], want[:-1], rtol=3e-7, atol=2.0**-149, equal_nan=False)
    assert torch.equal(got[x < -104.0], torch.zeros_like(got[x < -104.0]))
    if flavour == "native" and cpp_native._C.isa != "generic":
        assert got[-1].item() == 0.0
    as_bf16 = _probe(x[:-1], "exp", torch.bfloat16, flavour)
    assert _bits(as_bf16) == [_bf16_bits(b) for b in _bits(got[:-1])]


@pytest.mark.parametrize("flavour", ["native", "generic"])
def test_exp_over_every_tail_length(flavour):
    gen = torch.Generator().manual_seed(0)
    for n in TAILS:
        x = torch.rand(n, generator=gen) * 200.0 - 110.0  # [-110, 90): zeros, subnormals, infs
        got = _probe(x, "exp", torch.float32, flavour)
        torch.testing.assert_close(got, x.double().exp().float(), rtol=3e-7, atol=2.0**-149)


def test_vec_probe_refuses_unknown_ops():
    x = torch.zeros(4)
    with pytest.raises(ValueError, match="op must be"):
        cpp_native._C.vec_probe(out=x.data_ptr(), x=x.data_ptr(), n=4, op="log", dtype="float32")


# ---- The kernels' tails against an unreadable page -------------------------------------------


class PageEnd:
    """Tensors that end exactly where a readable page ends, the next page made PROT_NONE."""

    libc = ctypes.CDLL(None, use_errno=True)
    PROT_NONE = 0  # POSIX's value; the mmap module names only the other protections

    def __init__(self) -> None:
        self._maps: list[tuple[mmap.mmap, ctypes.Array]] = []  # kept alive as long as the tensors

    def tensor(self, values: torch.Tensor) -> torch.Tensor:
        """A contiguous copy of `values` whose last byte is the last readable one."""
        nbytes = values.numel() * values.element_size()
        pages = -(-nbytes // mmap.PAGESIZE)
        size = (pages + 1) * mmap.PAGESIZE
        mapping = mmap.mmap(-1, size)
        window = (ctypes.c_char * size).from_buffer(mapping)
        guard = ctypes.addressof(window) + pages * mmap.PAGESIZE
        if self.libc.mprotect(ctypes.c_void_p(guard), mmap.PAGESIZE, self.PROT_NONE) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")
        self._maps.append((mapping, window))
        start = pages * mmap.PAGESIZE - nbytes
        raw = torch.frombuffer(mapping, dtype=torch.uint8, count=nbytes, offset=start)
        out = raw.view(values.dtype).view(values.shape)
        out.copy_(values)
        return out


def _rand(shape, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen) * 3).to(dtype)


TOL = {torch.float32: {"atol": 1e-5, "rtol": 1e-5}, torch.bfloat16: {"atol": 1e-2, "rtol": 2**-6}}


@DTYPES
def test_norms_and_silu_tails_stop_at_the_row_end(dtype, flavour):
    """hidden 1..33: rms_norm reads x and the weight, the fused norm also writes x and the
    residual in place, silu_and_mul reads the up half, each ending at an unreadable page."""
    pages = PageEnd()
    for n in TAILS:
        x, residual, w = _rand((3, n), dtype, n), _rand((3, n), dtype, n + 1), _rand((n,), dtype, n + 2)
        x_end, w_end = pages.tensor(x), pages.tensor(w)
        torch.testing.assert_close(
            cpp_ops.rms_norm(x_end, w_end, 1e-6), reference.rms_norm(x, w, 1e-6), **TOL[dtype]
        )
        x_ref, residual_ref = x.clone(), residual.clone()
        residual_end = pages.tensor(residual)
        cpp_ops.fused_add_rms_norm(x_end, residual_end, w_end, 1e-6)
        reference.fused_add_rms_norm(x_ref, residual_ref, w, 1e-6)
        torch.testing.assert_close(residual_end, residual_ref, **TOL[dtype])
        torch.testing.assert_close(x_end, x_ref, **TOL[dtype])
        gate_up = _rand((2, 2 * n), dtype, n + 3)
        torch.testing.assert_close(
            cpp_ops.silu_and_mul(pages.tensor(gate_up)), reference.silu_and_mul(gate_up), **TOL[dtype]
        )


@DTYPES
@pytest.mark.parametrize("m", [1, 2, 5])
def test_linear_k_tails_stop_at_the_row_end(dtype, m, flavour):
    """k 1..33 for every tile shape (1, 2 and more rows of x), x and weight ending at an
    unreadable page (the weight's last row is the one that touches it)."""
    pages = PageEnd()
    for k in TAILS:
        x, weight = _rand((m, k), dtype, k), _rand((11, k), dtype, k + 1)
        out = cpp_linear.linear(pages.tensor(x), pages.tensor(weight))
        expected = (x.float() @ weight.float().T).to(dtype)
        tol = {"atol": 1e-4, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-3, "rtol": 2**-7}
        torch.testing.assert_close(out.float(), expected.float(), **tol)
