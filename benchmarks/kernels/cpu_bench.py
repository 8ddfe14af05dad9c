"""C++ CPU kernels (the 'cpp' backend) against the torch reference and the best plain-torch way.

    python benchmarks/kernels/cpu_bench.py [--quick] [--threads N] [--out benchmarks/results/cpu_kernels.json]
                                           [--skip-generic] [--skip-decode] [--decode-model SNAPSHOT]
                                           [--decode-gguf GGUF]

Shapes are the engine's: SmolLM2-135M (9 query / 3 KV heads, head_dim 64, hidden 576,
intermediate 1536), block_size 16, decode batches 1..128, contexts 128..1024, prompts 16..1024.
Baselines, per op:
  reference  kernels/reference.py (per-sequence gather + fp32 einsum), the 'torch' backend;
  torch      the fastest plain-torch formulation found: decode = one batched gather of every
             sequence's blocks + scaled_dot_product_attention with a length mask; prefill =
             per-sequence gather + SDPA (causal); rms_norm = F.rms_norm on fp32; silu_and_mul,
             rotary_embedding and store_kv: the reference is already the plain-torch way;
             linear = F.linear (oneDNN), over distinct weights that do not fit in the caches.
Times are the best of N wall-clock runs (the least noisy estimate on a shared 2-core machine; the
medians are in the JSON too); ratios are baseline time / cpp time in the same run. Decode attention
reports the KV bytes read per second (the floor is ~20-25 GB/s of DRAM bandwidth once the cache is
bigger than L3, 32 MB), prefill the attention GFLOP/s (4 * heads * head_dim * causal pairs).

Vector flavours: where _C's native flavour is not Generic (AVX-512 or AVX2, csrc/cpu/vec.h) every
cpp row is also timed on the Generic flavour of the same build (`generic_ms`, `speedup_vs_generic`;
cpp_native.generic_flavour). Then the bf16 linear on a 1B Llama's projections (hidden 2048,
intermediate 8192, vocabulary 128256) at 1..16 rows, both flavours, in GB/s of weight read and as
a share of this machine's memory read bandwidth measured in the same run (`cpp_of_bandwidth`).
Last, an end-to-end decode: swiftserve.LLM on the 1B random-weights snapshot, greedy, 64 tokens at
batch 1 and 4, each flavour in alternating rounds (medians), and llama.cpp (llama-cpp-python, when
importable) on the same weights as a bf16 GGUF, one stream, 2 threads (the JSON's `decode`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

# Appended, not prepended: the root's kernels/ must not shadow the installed `kernels`.
sys.path.append(str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere
from swiftserve.kernels import cpp_linear, cpp_native, cpp_ops, reference

from benchmarks.common import print_table, write_json
from benchmarks.compound.make_ggufs import GGUF_DIR

NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, BLOCK_SIZE = 9, 3, 64, 16
HIDDEN, INTERMEDIATE = 576, 1536
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
_ANGLES = torch.outer(torch.arange(4096.0), 10000.0 ** (-torch.arange(0, HEAD_DIM, 2) / HEAD_DIM))
COS_SIN = torch.cat((_ANGLES.cos(), _ANGLES.sin()), dim=-1)  # [max_position, head_dim] float32


def timings(fn, repeats: int, budget_s: float = 2.0) -> list[float]:
    """Wall-clock seconds of up to `repeats` runs after a warm-up, stopping early past `budget_s`."""
    fn()
    runs: list[float] = []
    while len(runs) < repeats and sum(runs) <= budget_s:
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return runs


def best_of(fn, repeats: int, budget_s: float = 2.0) -> float:
    """Best wall-clock seconds of up to `repeats` runs, stopping early past `budget_s`."""
    return min(timings(fn, repeats, budget_s))


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


# Set by main: whether each cpp row is also timed on the Generic flavour (see the docstring).
COMPARE_GENERIC = False


def measure(op: str, shape: str, dtype: str, call: tuple, backends: dict, repeats: int, **extra) -> dict:
    """Times each backend's fn(*call); the reference, the slow one, gets a quarter of the runs.
    With COMPARE_GENERIC, the cpp one also runs as `generic`: the same build's Generic flavour.
    `extra`: name -> f(seconds), filled from the cpp time (`generic_<name>` from the generic one)."""
    runs = {
        name: timings(functools.partial(fn, *call), max(repeats // 4, 2) if name == "reference" else repeats)
        for name, fn in backends.items()
    }
    if COMPARE_GENERIC:
        with cpp_native.generic_flavour():
            runs["generic"] = timings(functools.partial(backends["cpp"], *call), repeats)
    times = {name: min(r) for name, r in runs.items()}
    result = {"op": op, "shape": shape, "dtype": dtype, **{f"{k}_ms": v * 1e3 for k, v in times.items()}}
    result.update({f"{k}_median_ms": statistics.median(r) * 1e3 for k, r in runs.items()})
    for baseline in ("reference", "torch", "generic"):
        if baseline in times:
            result[f"speedup_vs_{baseline}"] = times[baseline] / times["cpp"]
    result.update({key: value(times["cpp"]) for key, value in extra.items()})
    if "generic" in times:  # cpp_GBps -> generic_GBps
        result.update(
            {f"generic_{key.removeprefix('cpp_')}": value(times["generic"]) for key, value in extra.items()}
        )
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


# A 1B Llama's linears (Llama 3.2 1B: hidden 2048, 32 query / 8 KV heads of 64, intermediate
# 8192, vocabulary 128256), as [out_features, in_features] of the fused projections the model runs.
LLAMA_1B_LINEARS = {
    "qkv_proj": (3072, 2048),
    "o_proj": (2048, 2048),
    "gate_up_proj": (16384, 2048),
    "down_proj": (2048, 8192),
    "lm_head": (128256, 2048),
}


def read_bandwidth(size_mib: int = 512, repeats: int = 9) -> float:
    """This machine's memory read rate right now, GB/s: the best of a few sums (all threads) of a
    float32 buffer far bigger than the caches, which read it once and write nothing."""
    x = torch.ones(size_mib << 18)
    return x.numel() * x.element_size() / min(timings(x.sum, repeats, budget_s=10.0)) / 1e9


def kernel_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """_C's small-M linear at any row count (cpp_linear.linear hands large ones to torch's GEMM)."""
    n, k = weight.shape
    out = torch.empty(x.shape[0], n, dtype=x.dtype)
    cpp_native.calls.linear(
        out=out.data_ptr(), out_stride=n, x=x.data_ptr(), x_stride=k, weight=weight.data_ptr(),
        weight_stride=k, bias=0, m=x.shape[0], n=n, k=k, dtype=cpp_native.NATIVE_DTYPES[x.dtype],
    )  # fmt: skip
    return out


def bench_llama_linear(args, bandwidth: float) -> list[dict]:
    """The bf16 linear on a 1B Llama's projections at decode batch sizes, over distinct weight
    copies (~192 MB a shape, so each call reads from DRAM as in the model), against `bandwidth`."""
    rows = []
    for name, (n, k) in LLAMA_1B_LINEARS.items():
        count = max(1, (192 << 20) // (n * k * 2))
        weights = [torch.randn(n, k).to(torch.bfloat16) for _ in range(count)]
        for m in (1, 2, 4, 8, 16):
            if args.quick and m not in (1, 4):
                continue
            x = torch.randn(m, k).to(torch.bfloat16)
            nbytes = count * n * k * 2
            rows.append(
                measure(
                    "linear",
                    f"llama-1b {name} m={m} n={n} k={k} x{count}",
                    "bf16",
                    (x, weights),
                    {"cpp": functools.partial(_stream, kernel_linear)},
                    max(args.repeats // 2, 3),
                    cpp_GBps=lambda t, b=nbytes: b / t / 1e9,
                    cpp_of_bandwidth=lambda t, b=nbytes: b / t / 1e9 / bandwidth,
                )
            )
        del weights
    return rows


def _generate_seconds(llm, prompts: list[list[int]], max_tokens: int) -> float:
    from swiftserve import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    start = time.perf_counter()
    outputs = llm.generate(prompts, params)
    elapsed = time.perf_counter() - start
    assert all(len(o.outputs[0].token_ids) == max_tokens for o in outputs)
    return elapsed


def decode_rate(llm, prompts: list[list[int]], tokens: int) -> float:
    """Decoded tokens per second of the batch: `tokens` more steps, the prefill (timed alone
    with its one token) taken out."""
    prefill = _generate_seconds(llm, prompts, 1)
    return len(prompts) * tokens / (_generate_seconds(llm, prompts, tokens + 1) - prefill)


def llamacpp_decode_rate(gguf: Path, prompt: list[int], tokens: int, rounds: int) -> float:
    """llama.cpp's single-stream greedy decode, tokens per second after the first token (the
    prefill), median of `rounds`, 2 threads."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=512, n_threads=2, n_threads_batch=2, verbose=False)
    rates = []
    for _ in range(rounds):
        llm.reset()
        stream = llm.generate(prompt, temp=0.0)
        next(stream)
        start = time.perf_counter()
        for _ in range(tokens):
            next(stream)
        rates.append(tokens / (time.perf_counter() - start))
        stream.close()
    return statistics.median(rates)


def bench_decode_e2e(args) -> list[dict]:
    """End-to-end greedy decode of the 1B snapshot, batch 1 and 4, native and Generic flavours in
    alternating rounds (medians), then llama.cpp on the same weights."""
    from swiftserve import LLM

    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(1000, 100000, (32,), generator=gen).tolist() for _ in range(4)]
    llm = LLM(str(args.decode_model), max_model_len=512, enable_prefix_caching=False)
    flavours = {cpp_native._C.isa: contextlib.nullcontext}
    if COMPARE_GENERIC:
        flavours["generic"] = cpp_native.generic_flavour
    for switch in flavours.values():  # warm-up: first-touch of the weights, thread pools, caches
        with switch():
            _generate_seconds(llm, prompts, 2)
    rates: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.decode_rounds):
        for flavour, switch in flavours.items():
            for batch in (1, 4):
                with switch():
                    rate = decode_rate(llm, prompts[:batch], args.decode_tokens)
                rates.setdefault((flavour, batch), []).append(rate)
    del llm
    rows = [
        {"system": "swiftserve", "flavour": flavour, "batch": batch, "tokens_per_s": statistics.median(r),
         "runs": r}
        for (flavour, batch), r in rates.items()
    ]  # fmt: skip
    if args.decode_gguf.exists() and _has_llama_cpp():
        rate = llamacpp_decode_rate(args.decode_gguf, prompts[0], args.decode_tokens, args.decode_rounds)
        rows.append({"system": "llama.cpp", "flavour": "bf16 gguf", "batch": 1, "tokens_per_s": rate})
    else:
        print(f"(llama.cpp skipped: no llama_cpp module or no {args.decode_gguf})")
    return rows


def _has_llama_cpp() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    global COMPARE_GENERIC
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few shapes only")
    parser.add_argument("--threads", type=int, default=None, help="torch/OpenMP threads (default: all cores)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/cpu_kernels.json")
    parser.add_argument("--skip-generic", action="store_true", help="time the native vector flavour only")
    parser.add_argument("--skip-decode", action="store_true", help="no end-to-end decode (LLM, llama.cpp)")
    parser.add_argument(
        "--decode-model",
        type=Path,
        default=Path.home() / ".cache" / "swiftserve" / "bench-compound" / "llama-3.2-1b-dummy.swsnap",
        help="the model the end-to-end decode runs (benchmarks/compound.py makes this one)",
    )
    parser.add_argument(
        "--decode-gguf",
        type=Path,
        default=GGUF_DIR / "llama-3.2-1b-dummy-bf16.gguf",
        help="the same weights for llama.cpp (benchmarks/compound/make_ggufs.py)",
    )
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--decode-rounds", type=int, default=3)
    args = parser.parse_args()
    if not cpp_ops.is_available():
        raise SystemExit(
            "swiftserve._C is not built: pip install -e . (or python setup.py build_ext --inplace)"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    from swiftserve import _C

    COMPARE_GENERIC = _C.isa != "generic" and not args.skip_generic
    bandwidth = read_bandwidth()
    rows = bench_decode(args) + bench_prefill(args) + bench_elementwise(args) + bench_linear(args)
    rows += bench_llama_linear(args, bandwidth)
    columns = [
        "op",
        "shape",
        "dtype",
        "cpp_ms",
        "generic_ms",
        "reference_ms",
        "torch_ms",
        "speedup_vs_generic",
        "speedup_vs_reference",
        "speedup_vs_torch",
        "cpp_GBps",
        "generic_GBps",
        "cpp_of_bandwidth",
        "cpp_GFLOPs",
    ]
    print_table(rows, columns)
    decode = []
    if args.skip_decode or not args.decode_model.exists():
        print(f"(end-to-end decode skipped: --skip-decode or no {args.decode_model})")
    else:
        decode = bench_decode_e2e(args)
        print_table(decode, ["system", "flavour", "batch", "tokens_per_s"])
    load = os.getloadavg()[0]
    print(
        f"(load average {load:.1f} on {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
        f"_C isa {_C.isa}, memory read {bandwidth:.1f} GB/s)"
    )
    write_json(
        args.out,
        {
            "isa": _C.isa,
            "read_bandwidth_GBps": bandwidth,
            "load_average": load,
            "timing": "best-of-N wall clock (medians in *_median_ms); decode: median tokens/s of rounds",
            "results": rows,
            "decode": decode,
        },
    )


if __name__ == "__main__":
    main()
