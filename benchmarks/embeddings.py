"""Embedding throughput: swiftserve's EmbeddingEngine against sentence-transformers, same run.

    python benchmarks/embeddings.py [--model all-minilm-l6-v2] [--dtype float32] [--threads N]
                                    [--out benchmarks/results/embeddings.json]

Scenarios (sentences x tokens each, [CLS]/[SEP] included):
- batch:      one call with a batch (short ~12, medium ~60, mixed lengths up to 256).
- concurrent: 64 clients each sending one short sentence at once; the engine batches them,
              the baseline encodes them one by one (what a server without batching does).
Reports best-of-N wall time, tokens/s, achieved GFLOP/s (2 x non-embedding params per token plus
attention) and the speed-up over the baseline. The minimum is the least noisy estimate on a shared
machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path

import torch

from swiftserve.engine.embedding_engine import EmbeddingEngine
from swiftserve.loader import resolve_model

WORDS = (
    "the model maps every sentence to a vector so that similar meanings end up close together while "
    "unrelated text lands far apart which makes retrieval ranking and clustering fast and simple"
).split()


def _sentences(count: int, num_words: int | tuple[int, int], seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    low, high = (num_words, num_words) if isinstance(num_words, int) else num_words
    return [" ".join(rng.choices(WORDS, k=rng.randint(low, high))) for _ in range(count)]


def _best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _flops_per_token(engine: EmbeddingEngine, seq_len: float) -> float:
    config = engine.model.config
    layer_params = 4 * config.hidden_size**2 + 2 * config.hidden_size * config.intermediate_size
    attention = 4 * seq_len * config.hidden_size  # QK^T and PV
    return config.num_hidden_layers * (2 * layer_params + attention)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="all-minilm-l6-v2")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/embeddings.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from sentence_transformers import SentenceTransformer

    folder = resolve_model(args.model)
    engine = EmbeddingEngine(str(folder), dtype=args.dtype, device=args.device)
    baseline = SentenceTransformer(str(folder), device=args.device)
    if args.dtype == "bfloat16":
        baseline = baseline.to(torch.bfloat16)

    scenarios = {
        "batch 64 short": _sentences(64, 10),
        "batch 64 medium": _sentences(64, 55),
        "batch 32 mixed": _sentences(32, (1, 300)),
        "batch 1 short": _sentences(1, 10),
    }
    rows = []
    for name, texts in scenarios.items():
        num_tokens = engine.embed_sync(texts).num_prompt_tokens
        ours = _best_seconds(lambda t=texts: engine.embed_sync(t), args.repeats)
        base = _best_seconds(lambda t=texts: baseline.encode(t, batch_size=len(t)), args.repeats)
        rows.append(_row(name, engine, texts, num_tokens, ours, base))

    clients = _sentences(64, 10, seed=1)
    num_tokens = engine.embed_sync(clients).num_prompt_tokens

    async def concurrent() -> float:
        await engine.start()
        best = float("inf")
        for _ in range(args.repeats + 1):
            start = time.perf_counter()
            await asyncio.gather(*(engine.embed([text]) for text in clients))
            best = min(best, time.perf_counter() - start)
        await engine.shutdown()
        return best

    ours = asyncio.run(concurrent())
    base = _best_seconds(lambda: [baseline.encode([t]) for t in clients], args.repeats)
    rows.append(_row("64 concurrent x 1 short", engine, clients, num_tokens, ours, base))

    header = f"{'scenario':<26}{'tokens':>8}{'ours ms':>10}{'tok/s':>10}{'GFLOP/s':>9}"
    header += f"{'base ms':>10}{'speed-up':>10}"
    print(f"{args.model} {args.dtype} on {args.device}, {torch.get_num_threads()} threads")
    print(header)
    for r in rows:
        print(
            f"{r['scenario']:<26}{r['num_tokens']:>8}{r['ours_ms']:>10.1f}{r['ours_tokens_per_s']:>10.0f}"
            f"{r['ours_gflops']:>9.1f}{r['baseline_ms']:>10.1f}{r['speedup']:>9.2f}x"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(model=args.model, dtype=args.dtype, device=args.device, threads=torch.get_num_threads())
    out.write_text(json.dumps({**meta, "baseline": "sentence-transformers encode", "rows": rows}, indent=2))
    print(f"wrote {out}")


def _row(name: str, engine: EmbeddingEngine, texts: list[str], num_tokens: int, ours: float, base: float):
    mean_len = num_tokens / len(texts)
    flops = num_tokens * _flops_per_token(engine, mean_len)
    return dict(
        scenario=name,
        num_inputs=len(texts),
        num_tokens=num_tokens,
        ours_ms=ours * 1e3,
        ours_tokens_per_s=num_tokens / ours,
        ours_gflops=flops / ours / 1e9,
        baseline_ms=base * 1e3,
        speedup=base / ours,
    )


if __name__ == "__main__":
    main()
