"""Compiles the Triton kernels for a CUDA GPU ahead of time, with no GPU: run as a script.

    python tests/kernels/triton_aot.py [--arch 90]

The CPU interpreter checks what the kernels compute, not whether they compile for a GPU
(constexpr specialisation, loop-carried types, dot shapes, register and shared memory limits).
This script runs each launcher on CPU tensors with every kernel launch replaced by a compile for
the target (Triton's nvidia backend ships ptxas). Divisibility hints are passed as a real launch
would. Exit status: 0 all compiled; 1 a kernel failed to compile; 2 the harness could not run
here (no nvidia backend, or a Triton whose internals differ).
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import traceback

DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "int32": "i32", "int64": "i64"}


def _signature(fn, params, args, kwargs):
    """Triton signature, constexprs and divisibility attrs of one launch, as the JIT would build them."""
    import torch

    bound = inspect.signature(fn).bind(*args, **kwargs)
    signature, constexprs, attrs = {}, {}, {}
    for i, p in enumerate(params):
        v = bound.arguments[p.name]
        if p.is_constexpr or (isinstance(v, int) and not isinstance(v, bool) and v == 1):
            signature[p.name], constexprs[p.name] = "constexpr", v  # ints equal to 1 specialise
        elif isinstance(v, torch.Tensor):
            signature[p.name] = "*" + DTYPES[str(v.dtype).removeprefix("torch.")]
        elif isinstance(v, bool):
            signature[p.name] = "i1"
        elif isinstance(v, int):
            signature[p.name] = "i64" if abs(v) >= 2**31 else "i32"
        else:
            signature[p.name] = "fp32"
        divisible = (
            v.data_ptr() % 16 == 0
            if isinstance(v, torch.Tensor)
            else (signature[p.name] in ("i32", "i64") and v % 16 == 0)
        )
        if divisible:
            attrs[(i,)] = [["tt.divisibility", 16]]
    return signature, constexprs, attrs


def run_launches() -> None:
    """Representative launches of every kernel: split and unsplit decode, GQA, windows, a
    non-power-of-two head_dim, head_dim 256 prefill; attention also in fp32 (IEEE dots)."""
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from cases import make_decode_case, make_prefill_case
    from swiftserve.kernels import triton_ops as ops

    for dtype in (torch.bfloat16, torch.float32):
        for lens, heads, kv_heads, head_dim, window in [
            ([1], 32, 8, 128, None),
            ([8192] * 2, 32, 8, 128, None),
            ([17, 1000], 8, 1, 64, 7),
            ([33], 4, 4, 80, None),
        ]:
            c = make_decode_case(lens, heads, kv_heads, head_dim, dtype=dtype)
            ops.paged_decode_attention(
                c.q,
                c.cache.k_cache,
                c.cache.v_cache,
                c.cache.block_tables,
                c.cache.context_lens,
                c.scale,
                sliding_window=window,
            )
        for lens, query_lens, heads, kv_heads, head_dim, window in [
            ([10], [10], 32, 8, 128, None),
            ([40, 30], [40, 3], 32, 8, 128, 16),
            ([5], [5], 2, 1, 256, None),
            ([7], [7], 6, 3, 80, 1),
        ]:
            c = make_prefill_case(lens, query_lens, heads, kv_heads, head_dim, dtype=dtype)
            ops.paged_prefill_attention(
                c.q,
                c.cache.k_cache,
                c.cache.v_cache,
                c.cache.block_tables,
                c.query_start_loc,
                c.cache.context_lens,
                c.scale,
                sliding_window=window,
            )
        if dtype == torch.float32:
            continue  # the elementwise kernels compute in fp32 whatever the input dtype
        x, w = torch.randn(4, 4096, dtype=dtype), torch.randn(4096, dtype=dtype)
        ops.rms_norm(x, w, 1e-5)
        ops.fused_add_rms_norm(x, x.clone(), w, 1e-5)
        ops.silu_and_mul(torch.randn(4, 2 * 14336, dtype=dtype))
        for is_neox in (True, False):
            ops.rotary_embedding(
                torch.arange(4),
                torch.randn(4, 32, 128, dtype=dtype),
                torch.randn(4, 8, 128, dtype=dtype),
                torch.randn(8, 128),
                is_neox,
            )
        cache = torch.zeros(2, 16, 8, 128, dtype=dtype)
        ops.store_kv(torch.randn(4, 8, 128), torch.randn(4, 8, 128), cache, cache.clone(), torch.arange(4))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability, 90 = Hopper")
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("unset TRITON_INTERPRET: interpreted kernels cannot be compiled", file=sys.stderr)
        return 2
    try:
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
        from triton.runtime.jit import JITFunction
    except ImportError as exc:
        print(f"harness unavailable: {exc}", file=sys.stderr)
        return 2
    target = GPUTarget("cuda", args.arch, 32)
    compiled: set[str] = set()

    def compile_instead(self, grid):
        def launch(*launch_args, **kwargs):
            options = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
            signature, constexprs, attrs = _signature(self.fn, self.params, launch_args, kwargs)
            key = repr((self.fn.__name__, signature, constexprs, options))
            if key not in compiled:
                triton.compile(ASTSource(self, signature, constexprs, attrs), target=target, options=options)
                compiled.add(key)

        return launch

    JITFunction.__getitem__ = compile_instead
    try:
        run_launches()
    except triton.CompilationError:
        traceback.print_exc()
        return 1
    print(f"{len(compiled)} kernel variants compiled for sm_{args.arch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
