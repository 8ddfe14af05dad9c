"""GPU kernel benchmark: swiftserve's Triton kernels against torch and flash-attn, in one run.

    python benchmarks/kernels/gpu_bench.py --out benchmarks/results/gpu_kernels.json
    python benchmarks/kernels/gpu_bench.py --dry-run      # tiny shapes on CPU (Triton interpreter)

First measures the device's copy bandwidth (read + write of 1 GiB), then times every op on
Llama-3-8B-like shapes (bf16, 32 query / 8 KV heads, head_dim 128, hidden 4096, 16-token KV
blocks) with triton.testing.do_bench (median):

    op                    shapes                                   bytes counted (or FLOPs)
    paged decode          batch 64, 256 x context 1k, 4k, 8k       K + V of every context, q, out
    paged prefill         causal, 8k tokens: 1 x 8192, 8 x 1024    4 * heads * d * causal pairs
    rms_norm              tokens 4096, 16384 x hidden 4096          read x, write out
    fused_add_rms_norm    same                                     read x, residual; write both
    rotary (neox)         tokens 4096, 16384; q 32x128, k 8x128     read + write q, k; cos/sin rows
    silu_and_mul          tokens 4096, 16384 x intermediate 14336   read gate, up; write out
    store_kv              tokens 4096, 16384; 8 x 128              read k, v; write both caches

Each row gives achieved GB/s (TFLOP/s for prefill), the % of the measured copy bandwidth, and the
speedup over torch eager (the reference, or gather + SDPA for attention). Other baselines:
torch.compile of the eager function, and flash-attn when installed (its paged KV needs 256-token
blocks, so it gets its own cache). Every implementation's output is checked against eager
before it is timed; a mismatch is reported and makes the exit status 1. Without CUDA (and no
--dry-run) the script exits with status 2.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from types import ModuleType

import torch  # does not import triton: TRITON_INTERPRET can still be set for --dry-run

F = torch.nn.functional
BF16_TOL = {"atol": 2e-2, "rtol": 2e-2}  # outputs in bf16; P is rounded to bf16 on the GPU


@dataclass
class Row:
    op: str
    shape: str
    impl: str
    ms: float | None = None
    gbps: float | None = None
    tflops: float | None = None
    pct_of_copy: float | None = None
    speedup_vs_eager: float | None = None
    max_abs_err: float | None = None
    error: str | None = None


def _flat(out) -> torch.Tensor:
    """An op's output (tensor or tuple of tensors) as one fp32 vector to compare."""
    outs = out if isinstance(out, tuple) else (out,)
    return torch.cat([t.float().flatten() for t in outs])


@dataclass
class Bench:
    """The backends under test; checks and times implementations of one op on one shape."""

    device: str
    dry_run: bool
    skip_compile: bool
    ops: ModuleType  # swiftserve.kernels.triton_ops
    ref: ModuleType  # swiftserve.kernels.reference
    fa: ModuleType | None  # swiftserve.kernels.flash_attn_ops when usable
    copy_gbps: float = 0.0
    rows: list[Row] = field(default_factory=list)
    mismatches: int = 0

    def time_ms(self, fn: Callable[[], object]) -> float:
        if self.dry_run:  # do_bench needs a GPU; two calls exercise the code path
            fn()
            start = time.perf_counter()
            fn()
            return (time.perf_counter() - start) * 1e3
        from triton.testing import do_bench

        return do_bench(fn, warmup=25, rep=100, return_mode="median")

    def compile(self, fn: Callable) -> Callable | None:
        return None if self.skip_compile else torch.compile(fn)

    def compare(
        self,
        op: str,
        shape: str,
        impls: dict[str, Callable | None],
        make_inputs: Callable[[], tuple],
        *,
        nbytes: float = 0.0,
        flops: float = 0.0,
    ) -> None:
        """impls: name -> fn(*inputs) returning the output, 'eager' first; None entries are skipped.
        In-place ops get fresh inputs for the check; timed calls reuse one set (values drift, cost
        does not)."""
        expected = None
        eager_ms = None
        for name, fn in impls.items():
            if fn is None:
                continue
            row = Row(op, shape, name)
            try:
                expected = self._check(row, fn, make_inputs, expected)
                args = make_inputs()
                row.ms = self.time_ms(lambda fn=fn, args=args: fn(*args))
            except Exception as exc:  # noqa: BLE001 - a failing baseline must not stop the run
                first_line = str(exc).splitlines()[0][:120] if str(exc) else ""
                row.error = f"{type(exc).__name__}: {first_line}"
            if row.ms:
                seconds = row.ms * 1e-3
                row.gbps = nbytes / seconds / 1e9 if nbytes else None
                row.tflops = flops / seconds / 1e12 if flops else None
                row.pct_of_copy = 100.0 * row.gbps / self.copy_gbps if row.gbps and self.copy_gbps else None
                eager_ms = row.ms if name == "eager" else eager_ms
                row.speedup_vs_eager = eager_ms / row.ms if eager_ms else None
            self.rows.append(row)
            print_row(row)
        if self.device == "cuda":
            torch.cuda.empty_cache()

    def _check(self, row: Row, fn: Callable, make_inputs: Callable[[], tuple], expected):
        """Runs fn on fresh inputs; the first output becomes the expected one for the others."""
        out = _flat(fn(*make_inputs()))
        if expected is None:
            return out
        row.max_abs_err = (out - expected).abs().max().item()
        if not torch.allclose(out, expected, **BF16_TOL):
            self.mismatches += 1
            row.error = "MISMATCH vs eager"
        return expected


def print_header() -> None:
    print(
        f"{'op':<20} {'shape':<30} {'impl':<14} {'time us':>10} {'GB/s':>7} {'TFLOP/s':>8} "
        f"{'%copy':>6} {'x eager':>8}  note"
    )


def print_row(r: Row) -> None:
    def fmt(value, spec):
        return format(value, spec) if value is not None else "-"

    print(
        f"{r.op:<20} {r.shape:<30} {r.impl:<14} {fmt(r.ms and r.ms * 1e3, '10.1f'):>10} "
        f"{fmt(r.gbps, '7.0f'):>7} {fmt(r.tflops, '8.1f'):>8} {fmt(r.pct_of_copy, '6.1f'):>6} "
        f"{fmt(r.speedup_vs_eager, '8.2f'):>8}  {r.error or ''}",
        flush=True,
    )


def measure_copy_gbps(bench: Bench) -> float:
    """Device copy bandwidth counting read + write, on 1 GiB (4 MiB in a dry run)."""
    numel = (4 << 20 if bench.dry_run else 1 << 30) // 2
    src = torch.empty(numel, dtype=torch.bfloat16, device=bench.device).normal_()
    dst = torch.empty_like(src)
    ms = bench.time_ms(lambda: dst.copy_(src))
    return 2 * numel * 2 / (ms * 1e-3) / 1e9


def to_paged(dense_k: torch.Tensor, dense_v: torch.Tensor, block_size: int):
    """dense K, V [num_seqs, context, kv_heads, d] -> (k_cache, v_cache [num_blocks, block_size,
    kv_heads, d], shuffled block_tables int32 [num_seqs, blocks_per_seq]) holding the same tokens."""
    num_seqs, context_len = dense_k.shape[:2]
    blocks_per_seq = -(-context_len // block_size)
    num_blocks = num_seqs * blocks_per_seq
    k_cache = torch.zeros(
        num_blocks, block_size, *dense_k.shape[2:], dtype=dense_k.dtype, device=dense_k.device
    )
    v_cache = torch.zeros_like(k_cache)
    block_tables = torch.randperm(num_blocks, device=dense_k.device).view(num_seqs, blocks_per_seq)
    pos = torch.arange(context_len, device=dense_k.device)
    slots = (block_tables[:, pos // block_size] * block_size + pos % block_size).flatten()  # [seqs * context]
    k_cache.view(-1, *dense_k.shape[2:])[slots] = dense_k.flatten(0, 1)
    v_cache.view(-1, *dense_v.shape[2:])[slots] = dense_v.flatten(0, 1)
    return k_cache, v_cache, block_tables.to(torch.int32)


def random_kv(bench: Bench, num_seqs: int, context_len: int, num_kv_heads: int, head_dim: int):
    shape = (num_seqs, context_len, num_kv_heads, head_dim)
    return (
        torch.randn(shape, dtype=torch.bfloat16, device=bench.device),
        torch.randn(shape, dtype=torch.bfloat16, device=bench.device),
    )


def bench_decode(bench: Bench, num_seqs: int, context_len: int, heads: tuple[int, int, int]) -> None:
    """Every sequence holds context_len tokens; bytes = all of K and V once, plus q and out."""
    num_heads, num_kv_heads, head_dim = heads
    group = num_heads // num_kv_heads
    scale = head_dim**-0.5
    dense_k, dense_v = random_kv(bench, num_seqs, context_len, num_kv_heads, head_dim)
    k_cache, v_cache, block_tables = to_paged(dense_k, dense_v, 16)
    context_lens = torch.full((num_seqs,), context_len, dtype=torch.int32, device=bench.device)
    q = torch.randn(num_seqs, num_heads, head_dim, dtype=torch.bfloat16, device=bench.device)

    def gather_sdpa(q, k_cache, v_cache, block_tables):
        # Equal contexts: gathering the tables gives dense [seqs, kv_heads, ctx, d] K/V, and a KV
        # head's query group acts as its query rows (no GQA expansion, any SDPA backend).
        k = k_cache[block_tables].flatten(1, 2)[:, :context_len].transpose(1, 2)
        v = v_cache[block_tables].flatten(1, 2)[:, :context_len].transpose(1, 2)
        qg = q.view(num_seqs, num_kv_heads, group, head_dim)
        return F.scaled_dot_product_attention(qg, k, v, scale=scale).reshape(num_seqs, num_heads, head_dim)

    def triton_decode(q, k_cache, v_cache, block_tables):
        return bench.ops.paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale)

    impls = {"eager": gather_sdpa, "triton": triton_decode, "torch.compile": bench.compile(gather_sdpa)}
    if bench.fa is not None:  # its own copy with 256-token blocks, flash-attn's paged minimum
        fa_k, fa_v, fa_tables = to_paged(dense_k, dense_v, 256)
        impls["flash_attn"] = lambda q, *_: bench.fa.paged_decode_attention(
            q, fa_k, fa_v, fa_tables, context_lens, scale
        )
    del dense_k, dense_v
    nbytes = (
        2 * num_seqs * context_len * num_kv_heads * head_dim * 2
        + 2 * q.numel() * 2
        + block_tables.numel() * 4
    )
    bench.compare(
        "paged_decode",
        f"b{num_seqs} ctx{context_len} {num_heads}/{num_kv_heads}h d{head_dim}",
        impls,
        lambda: (q, k_cache, v_cache, block_tables),
        nbytes=nbytes,
    )


def bench_prefill(bench: Bench, num_seqs: int, seq_len: int, heads: tuple[int, int, int]) -> None:
    """Whole prompts of seq_len tokens, causal. FLOPs = 4 * d * heads * seq_len (seq_len + 1) / 2 per
    sequence (QK^T and PV over the causal pairs). Eager is SDPA (flash backend on Hopper) on dense
    q, k, v with K/V expanded to all heads beforehand (untimed)."""
    num_heads, num_kv_heads, head_dim = heads
    group = num_heads // num_kv_heads
    scale = head_dim**-0.5
    dense_k, dense_v = random_kv(bench, num_seqs, seq_len, num_kv_heads, head_dim)
    k_cache, v_cache, block_tables = to_paged(dense_k, dense_v, 16)
    context_lens = torch.full((num_seqs,), seq_len, dtype=torch.int32, device=bench.device)
    query_start_loc = torch.arange(
        0, (num_seqs + 1) * seq_len, seq_len, dtype=torch.int32, device=bench.device
    )
    q = torch.randn(num_seqs * seq_len, num_heads, head_dim, dtype=torch.bfloat16, device=bench.device)
    k_full = dense_k.transpose(1, 2).repeat_interleave(group, dim=1)  # [seqs, heads, seq_len, d]
    v_full = dense_v.transpose(1, 2).repeat_interleave(group, dim=1)

    def sdpa(q, *_):
        qh = q.view(num_seqs, seq_len, num_heads, head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(qh, k_full, v_full, is_causal=True, scale=scale)
        return out.transpose(1, 2).reshape(num_seqs * seq_len, num_heads, head_dim)

    def triton_prefill(q, k_cache, v_cache, block_tables):
        return bench.ops.paged_prefill_attention(
            q, k_cache, v_cache, block_tables, query_start_loc, context_lens, scale
        )

    impls = {"eager": sdpa, "triton": triton_prefill}
    if bench.fa is not None:
        fa_k, fa_v, fa_tables = to_paged(dense_k, dense_v, 256)
        impls["flash_attn"] = lambda q, *_: bench.fa.paged_prefill_attention(
            q, fa_k, fa_v, fa_tables, query_start_loc, context_lens, scale
        )
    del dense_k, dense_v
    flops = 4 * head_dim * num_heads * num_seqs * seq_len * (seq_len + 1) / 2
    bench.compare(
        "paged_prefill",
        f"{num_seqs}x{seq_len} causal {num_heads}/{num_kv_heads}h d{head_dim}",
        impls,
        lambda: (q, k_cache, v_cache, block_tables),
        flops=flops,
    )


def returning_inputs(*indices: int):
    """Wraps an in-place op to return the inputs it modifies (so they can be compared)."""

    def wrap(fn):
        def run(*args):
            fn(*args)
            return tuple(args[i] for i in indices)

        return run

    return wrap


def impls_of(bench: Bench, op: str, wrap=lambda fn: fn) -> dict:
    """eager (the reference), triton, and torch.compile of the reference; each through wrap."""
    eager = wrap(getattr(bench.ref, op))
    return {"eager": eager, "triton": wrap(getattr(bench.ops, op)), "torch.compile": bench.compile(eager)}


def bench_elementwise(
    bench: Bench, tokens: int, hidden: int, intermediate: int, heads: tuple[int, int, int]
) -> None:
    """Memory-bound ops; bytes are each op's compulsory reads and writes."""
    num_heads, num_kv_heads, head_dim = heads
    dev, bf16, eps = bench.device, torch.bfloat16, 1e-5

    x = torch.randn(tokens, hidden, dtype=bf16, device=dev)
    residual = torch.randn_like(x)
    weight = torch.randn(hidden, dtype=bf16, device=dev)
    bench.compare(
        "rms_norm",
        f"{tokens}x{hidden}",
        impls_of(bench, "rms_norm"),
        lambda: (x, weight, eps),
        nbytes=2 * x.numel() * 2 + hidden * 2,
    )
    bench.compare(
        "fused_add_rms_norm",
        f"{tokens}x{hidden}",
        impls_of(bench, "fused_add_rms_norm", returning_inputs(0, 1)),
        lambda: (x.clone(), residual.clone(), weight, eps),
        nbytes=4 * x.numel() * 2 + hidden * 2,
    )

    gate_up = torch.randn(tokens, 2 * intermediate, dtype=bf16, device=dev)
    bench.compare(
        "silu_and_mul",
        f"{tokens}x{intermediate}",
        impls_of(bench, "silu_and_mul"),
        lambda: (gate_up,),
        nbytes=3 * tokens * intermediate * 2,
    )

    q = torch.randn(tokens, num_heads, head_dim, dtype=bf16, device=dev)
    k = torch.randn(tokens, num_kv_heads, head_dim, dtype=bf16, device=dev)
    cos_sin = torch.randn(max(tokens, 8192), head_dim, dtype=torch.float32, device=dev)
    positions = torch.randperm(tokens, device=dev)
    bench.compare(
        "rotary_neox",
        f"{tokens}x{num_heads}/{num_kv_heads}h d{head_dim}",
        impls_of(bench, "rotary_embedding", returning_inputs(1, 2)),
        lambda: (positions, q.clone(), k.clone(), cos_sin),
        nbytes=2 * (q.numel() + k.numel()) * 2 + tokens * head_dim * 4 + tokens * 8,
    )

    v = torch.randn_like(k)
    num_blocks = -(-tokens // 16) + 1
    k_cache, v_cache = (
        torch.zeros(num_blocks, 16, num_kv_heads, head_dim, dtype=bf16, device=dev) for _ in range(2)
    )
    slots = torch.randperm(num_blocks * 16, device=dev)[:tokens]
    bench.compare(
        "store_kv",
        f"{tokens}x{num_kv_heads}h d{head_dim}",
        impls_of(bench, "store_kv", returning_inputs(2, 3)),
        lambda: (k, v, k_cache, v_cache, slots),
        nbytes=4 * k.numel() * 2 + tokens * 8,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/gpu_kernels.json", help="JSON results path")
    parser.add_argument(
        "--dry-run", action="store_true", help="tiny shapes on CPU through the Triton interpreter"
    )
    parser.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile baselines")
    args = parser.parse_args(argv)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # read when the kernels are imported, just below
    elif not torch.cuda.is_available():
        print(
            "gpu_bench: no CUDA device here. Run it on a GPU machine, or use --dry-run to exercise the "
            "code on CPU.",
            file=sys.stderr,
        )
        return 2
    import triton
    from swiftserve.kernels import flash_attn_ops, reference, triton_ops

    bench = Bench(
        device="cpu" if args.dry_run else "cuda",
        dry_run=args.dry_run,
        skip_compile=args.skip_compile,
        ops=triton_ops,
        ref=reference,
        fa=flash_attn_ops if flash_attn_ops.is_available() and not args.dry_run else None,
    )
    device_name = "cpu (dry run, Triton interpreter)" if args.dry_run else torch.cuda.get_device_name()
    torch.manual_seed(0)
    bench.copy_gbps = measure_copy_gbps(bench)
    print(
        f"device: {device_name}; copy bandwidth (read + write): {bench.copy_gbps:.1f} GB/s; "
        f"flash-attn: {'yes' if bench.fa else 'no'}"
    )
    print_header()
    if args.dry_run:
        heads = (4, 2, 64)
        decode_shapes, prefill_shapes, token_counts, hidden, intermediate = [(2, 40)], [(2, 24)], [8], 256, 96
    else:
        heads = (32, 8, 128)
        decode_shapes = [(b, c) for b in (64, 256) for c in (1024, 4096, 8192)]
        prefill_shapes, token_counts, hidden, intermediate = (
            [(1, 8192), (8, 1024)],
            [4096, 16384],
            4096,
            14336,
        )
    for num_seqs, context_len in decode_shapes:
        bench_decode(bench, num_seqs, context_len, heads)
    for num_seqs, seq_len in prefill_shapes:
        bench_prefill(bench, num_seqs, seq_len, heads)
    for tokens in token_counts:
        bench_elementwise(bench, tokens, hidden, intermediate, heads)

    result = {
        "device": device_name,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "flash_attn": bench.fa is not None,
        "dry_run": args.dry_run,
        "copy_bandwidth_gbps": bench.copy_gbps,
        "results": [asdict(r) for r in bench.rows],
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}; {bench.mismatches} mismatches")
    return 1 if bench.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
