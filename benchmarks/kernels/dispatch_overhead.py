"""Per-call cost of the Python side of a kernel call: dispatch, checks and the _C call itself.

    python benchmarks/kernels/dispatch_overhead.py [--number 20000]

A decode step runs ~10 ops per layer through kernels.<op>; on a tiny input (one sequence, one
context token, SmolLM2's 9 / 3 heads of 64) the kernel's own work is negligible, so the time per
call is the wrapper's overhead. Rows: the public op (dispatcher + cpp wrapper + _C), the cpp
wrapper called directly, and _C alone with the same arguments.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path

import torch

# Appended, not prepended: the root's kernels/ must not shadow the installed `kernels`.
sys.path.append(str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere
from swiftserve.kernels import cpp_attention, cpp_elementwise, cpp_native

from swiftserve import kernels


def _decode_inputs():
    q = torch.randn(1, 9, 64, dtype=torch.bfloat16)
    k_cache = torch.randn(4, 16, 3, 64, dtype=torch.bfloat16)
    v_cache = torch.randn(4, 16, 3, 64, dtype=torch.bfloat16)
    block_tables = torch.zeros(1, 4, dtype=torch.int32)
    context_lens = torch.ones(1, dtype=torch.int32)
    return q, k_cache, v_cache, block_tables, context_lens, 0.125


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--number", type=int, default=20000)
    args = parser.parse_args()
    if not cpp_native.is_available():
        sys.exit("swiftserve._C is not built")
    torch.set_num_threads(1)
    q, k_cache, v_cache, block_tables, context_lens, scale = inputs = _decode_inputs()
    out = torch.empty_like(q)
    x, w = torch.randn(1, 576, dtype=torch.bfloat16), torch.ones(576, dtype=torch.bfloat16)
    c = cpp_native._C
    raw_decode = lambda: c.paged_decode_attention(  # noqa: E731 - same arguments the wrapper passes
        out.data_ptr(), 576, 64, q.data_ptr(), 576, 64, k_cache.data_ptr(), v_cache.data_ptr(), 4, 16,
        3072, 192, 64, block_tables.data_ptr(), 4, 4, context_lens.data_ptr(), 1, 9, 3, 64, 0.125, 0,
        "bfloat16",
    )  # fmt: skip
    rows = {
        "kernels.paged_decode_attention": lambda: kernels.paged_decode_attention(*inputs),
        "cpp_attention.paged_decode_attention": lambda: cpp_attention.paged_decode_attention(*inputs),
        "_C.paged_decode_attention (positional)": raw_decode,
        "kernels.rms_norm": lambda: kernels.rms_norm(x, w, 1e-6),
        "cpp_elementwise.rms_norm": lambda: cpp_elementwise.rms_norm(x, w, 1e-6),
    }
    for name, fn in rows.items():
        fn()
        best = min(timeit.repeat(fn, number=args.number, repeat=5)) / args.number
        print(f"{name:45s} {best * 1e6:7.2f} us/call")


if __name__ == "__main__":
    main()
