"""C++ CPU kernels (the 'cpp' backend) against the torch reference and the best plain-torch way.

    python benchmarks/kernels/cpu_bench.py [--quick] [--threads N] [--out benchmarks/results/cpu_kernels.json]

Shapes are the engine's: SmolLM2-135M (9 query / 3 KV heads, head_dim 64, hidden 576,
intermediate 1536), block_size 16, decode batches 1..128, contexts 128..1024, prompts 16..1024.
Baselines, per op:
  reference  kernels/reference.py (per-sequence gather + fp32 einsum), the 'torch' backend;
  torch      the fastest plain-torch formulation found: decode = one batched gather of every
             sequence's blocks + scaled_dot_product_attention with a length mask; prefill =
             per-sequence gather + SDPA (causal); rms_norm = F.rms_norm on fp32; silu_and_mul,
             rotary_embedding and store_kv: the reference is already the plain-torch way;
             linear = F.linear (oneDNN), over distinct weights that do not fit in the caches.
Times are the best of N wall-clock runs (the least noisy estimate on a shared 2-core machine);
ratios are baseline time / cpp time in the same run. Decode reports the KV bytes read per second
(the floor is ~20-25 GB/s of DRAM bandwidth once the cache is bigger than L3, 32 MB), prefill the
attention GFLOP/s (4 * heads * head_dim * causal pairs).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

# Appended, not prepended: the root's kernels/ must not shadow the installed `kernels`.
sys.path.append(str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere
from swiftserve.kernels import cpp_linear, cpp_ops, reference

from benchmarks.common import print_table, write_json

NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, BLOCK_SIZE = 9, 3, 64, 16
HIDDEN, INTERMEDIATE = 576, 1536
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
_ANGLES = torch.outer(torch.arange(4096.0), 10000.0 ** (-torch.arange(0, HEAD_DIM, 2) / HEAD_DIM))
COS_SIN = torch.cat((_ANGLES.cos(), _ANGLES.sin()), dim=-1)  # [max_position, head_dim] float32


def best_of(fn, repeats: int, budget_s: float = 2.0) -> float:
    """Best wall-clock seconds of up to `repeats` runs, stopping early past `budget_s`."""
    fn()
    best, spent = float("inf"), 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
        if spent > budget_s:
            break
    return best


def paged_cache(context_lens: list[int], dtype: torch.dtype, seed: int = 0):
    """Random K/V for each context in shuffled blocks: (k_cache, v_cache, block_tables, context_lens)."""
    gen = torch.Generator().manual_seed(seed)
    blocks = [-(-n // BLOCK_SIZE) for n in context_lens]
    num_blocks = sum(blocks)
    shape = (num_blocks, BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM)
    k_cache = torch.randn(shape, generator=gen).to(dtype)
    v_cache = torch.randn(shape, generator=gen).to(dtype)
    perm = torch.randperm(num_blocks, generator=gen).to(torch.int32)
    tables = torch.zeros(len(context_lens), max(blocks), dtype=torch.int32)
    start = 0
    for i, n in enumerate(blocks):
        tables[i, :n] = perm[start : start + n]
        start += n
    return k_cache, v_cache, tables, torch.tensor(context_lens, dtype=torch.int32)


def torch_decode(q, k_cache, v_cache, block_tables, context_lens, scale):
    """All sequences at once: gather their blocks, pad to the longest, SDPA with a length mask."""
    num_seqs, max_blocks = block_tables.shape
    k = k_cache[block_tables.long()].view(num_seqs, max_blocks * BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM)
    v = v_cache[block_tables.long()].view(num_seqs, max_blocks * BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM)
    mask = torch.arange(max_blocks * BLOCK_SIZE)[None, :] < context_lens[:, None]  # [seqs, keys]
    out = F.scaled_dot_product_attention(
        q[:, :, None],
        k.transpose(1, 2),
        v.transpose(1, 2),
        attn_mask=mask[:, None, None],
        scale=scale,
        enable_gqa=True,
    )
    return out[:, :, 0]


def torch_prefill(q, k_cache, v_cache, block_tables, query_start_loc, context_lens, scale):
    """Per sequence: gather its context, SDPA over it (causal, bottom-right aligned)."""
    out = torch.empty_like(q)
    starts = query_start_loc.tolist()
    for i, ctx in enumerate(context_lens.tolist()):
        begin, end = starts[i], starts[i + 1]
        k = reference.gather_kv(k_cache, block_tables[i], ctx).transpose(0, 1)
        v = reference.gather_kv(v_cache, block_tables[i], ctx).transpose(0, 1)
        qs = q[begin:end].transpose(0, 1)
        if end - begin == ctx:
            o = F.scaled_dot_product_attention(qs, k, v, is_causal=True, scale=scale, enable_gqa=True)
        else:
            mask = torch.ones(end - begin, ctx, dtype=torch.bool).tril(ctx - (end - begin))
            o = F.scaled_dot_product_attention(qs, k, v, attn_mask=mask, scale=scale, enable_gqa=True)
        out[begin:end] = o.transpose(0, 1)
    return out


def torch_rms_norm(x, weight, eps):
    return F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype) * weight


def torch_fused_add_rms_norm(x, residual, weight, eps):
    residual.add_(x)
    x.copy_(torch_rms_norm(residual, weight, eps))
    return residual


def measure(op: str, shape: str, dtype: str, call: tuple, backends: dict, repeats: int, **extra) -> dict:
    """Times each backend's fn(*call); the reference, the slow one, gets a quarter of the runs."""
    times = {
        name: best_of(functools.partial(fn, *call), max(repeats // 4, 2) if name == "reference" else repeats)
        for name, fn in backends.items()
    }
    result = {"op": op, "shape": shape, "dtype": dtype, **{f"{k}_ms": v * 1e3 for k, v in times.items()}}
    for baseline in ("reference", "torch"):
        if baseline in times:
            result[f"speedup_vs_{baseline}"] = times[baseline] / times["cpp"]
    result.update({key: value(times["cpp"]) for key, value in extra.items()})
    return result


ATTENTION = {
    "paged_decode_attention": {
        "cpp": cpp_ops.paged_decode_attention,
        "reference": reference.paged_decode_attention,
        "torch": torch_decode,
    },
    "paged_prefill_attention": {
        "cpp": cpp_ops.paged_prefill_attention,
        "reference": reference.paged_prefill_attention,
        "torch": torch_prefill,
    },
}


def bench_decode(args) -> list[dict]:
    rows = []
    for name, dtype in DTYPES.items():
        for batch in (1, 16, 64, 128):
            for ctx in (128, 512, 1024):
                if args.quick and (batch, ctx) not in ((1, 512), (16, 512), (128, 1024)):
                    continue
                k_cache, v_cache, tables, lens = paged_cache([ctx] * batch, dtype)
                q = torch.randn(batch, NUM_HEADS, HEAD_DIM).to(dtype)
                kv_bytes = 2 * batch * ctx * NUM_KV_HEADS * HEAD_DIM * k_cache.element_size()
                rows.append(
                    measure(
                        "paged_decode_attention",
                        f"batch={batch} ctx={ctx}",
                        name,
                        (q, k_cache, v_cache, tables, lens, HEAD_DIM**-0.5),
                        ATTENTION["paged_decode_attention"],
                        args.repeats,
                        cpp_GBps=lambda t, b=kv_bytes: b / t / 1e9,
                    )
                )
    return rows


def bench_prefill(args) -> list[dict]:
    rows = []
    for name, dtype in DTYPES.items():
        for batch, length in ((1, 16), (1, 128), (1, 512), (1, 1024), (4, 256), (16, 64)):
            if args.quick and (batch, length) not in ((1, 128), (1, 1024), (16, 64)):
                continue
            k_cache, v_cache, tables, lens = paged_cache([length] * batch, dtype)
            q = torch.randn(batch * length, NUM_HEADS, HEAD_DIM).to(dtype)
            starts = torch.arange(batch + 1, dtype=torch.int32) * length
            flops = 4 * NUM_HEADS * HEAD_DIM * batch * length * (length + 1) / 2
            rows.append(
                measure(
                    "paged_prefill_attention",
                    f"seqs={batch} len={length}",
                    name,
                    (q, k_cache, v_cache, tables, starts, lens, HEAD_DIM**-0.5),
                    ATTENTION["paged_prefill_attention"],
                    args.repeats,
                    cpp_GFLOPs=lambda t, f=flops: f / t / 1e9,
                )
            )
    return rows


def bench_elementwise(args) -> list[dict]:
    rows = []
    norm = {"cpp": cpp_ops.rms_norm, "reference": reference.rms_norm, "torch": torch_rms_norm}
    fused = {
        "cpp": cpp_ops.fused_add_rms_norm,
        "reference": reference.fused_add_rms_norm,
        "torch": torch_fused_add_rms_norm,
    }
    silu = {"cpp": cpp_ops.silu_and_mul, "reference": reference.silu_and_mul}
    rotary = {"cpp": cpp_ops.rotary_embedding, "reference": reference.rotary_embedding}
    store = {"cpp": cpp_ops.store_kv, "reference": reference.store_kv}
    for name, dtype in DTYPES.items():
        for tokens in (1, 16, 128, 1024):
            if args.quick and tokens not in (1, 128):
                continue
            x, residual = torch.randn(tokens, HIDDEN).to(dtype), torch.randn(tokens, HIDDEN).to(dtype)
            w = torch.randn(HIDDEN).to(dtype)
            gate_up = torch.randn(tokens, 2 * INTERMEDIATE).to(dtype)
            reps = args.repeats * 5
            qkv = torch.randn(tokens, (NUM_HEADS + 2 * NUM_KV_HEADS) * HEAD_DIM).to(dtype)
            q, k, v = (
                t.view(tokens, -1, HEAD_DIM)
                for t in qkv.split(
                    [NUM_HEADS * HEAD_DIM, NUM_KV_HEADS * HEAD_DIM, NUM_KV_HEADS * HEAD_DIM], dim=-1
                )
            )
            positions = torch.arange(tokens)
            k_cache, v_cache, _, _ = paged_cache([2048], dtype)
            slots = torch.randperm(2048)[:tokens]
            rows += [
                measure(
                    "rotary_embedding",
                    f"tokens={tokens} qkv-views",
                    name,
                    (positions, q, k, COS_SIN),
                    rotary,
                    reps,
                ),
                measure(
                    "store_kv",
                    f"tokens={tokens} qkv-views",
                    name,
                    (k, v, k_cache, v_cache, slots),
                    store,
                    reps,
                ),
                measure("rms_norm", f"tokens={tokens} d={HIDDEN}", name, (x, w, 1e-5), norm, reps),
                measure(
                    "fused_add_rms_norm",
                    f"tokens={tokens} d={HIDDEN}",
                    name,
                    (x, residual, w, 1e-5),
                    fused,
                    reps,
                ),
                measure("silu_and_mul", f"tokens={tokens} d={INTERMEDIATE}", name, (gate_up,), silu, reps),
            ]
    return rows


def _stream(linear, x, weights) -> None:
    for w in weights:
        linear(x, w)


def bench_linear(args) -> list[dict]:
    """Decode-sized linears over ~96 MB of distinct weight copies, so each call reads its weight
    from DRAM as in the model (one matrix reused would sit in L2/L3 and flatter both sides)."""
    rows = []
    backends = {
        "cpp": functools.partial(_stream, cpp_linear.linear),
        "torch": functools.partial(_stream, F.linear),
    }
    for name, dtype in DTYPES.items():
        size = torch.empty((), dtype=dtype).element_size()
        for n, k in ((960, HIDDEN), (3072, HIDDEN), (HIDDEN, INTERMEDIATE), (49152, HIDDEN)):
            count = max(1, (96 << 20) // (n * k * size))
            weights = [torch.randn(n, k).to(dtype) for _ in range(count)]
            for m in (1, 4, 8):
                if args.quick and m == 4:
                    continue
                x = torch.randn(m, k).to(dtype)
                rows.append(
                    measure(
                        "linear",
                        f"m={m} n={n} k={k} x{count}",
                        name,
                        (x, weights),
                        backends,
                        max(args.repeats // 2, 3),
                        cpp_GBps=lambda t, b=count * n * k * size: b / t / 1e9,
                    )
                )
            del weights
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few shapes only")
    parser.add_argument("--threads", type=int, default=None, help="torch/OpenMP threads (default: all cores)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/cpu_kernels.json")
    args = parser.parse_args()
    if not cpp_ops.is_available():
        raise SystemExit(
            "swiftserve._C is not built: pip install -e . (or python setup.py build_ext --inplace)"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    from swiftserve import _C

    rows = bench_decode(args) + bench_prefill(args) + bench_elementwise(args) + bench_linear(args)
    columns = [
        "op",
        "shape",
        "dtype",
        "cpp_ms",
        "reference_ms",
        "torch_ms",
        "speedup_vs_reference",
        "speedup_vs_torch",
        "cpp_GBps",
        "cpp_GFLOPs",
    ]
    print_table(rows, columns)
    load = os.getloadavg()[0]
    print(
        f"(load average {load:.1f} on {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
        f"_C isa {_C.isa})"
    )
    write_json(
        args.out, {"isa": _C.isa, "load_average": load, "timing": "best-of-N wall clock", "results": rows}
    )


if __name__ == "__main__":
    main()
