"""Sampler cost per engine step at batch 1/32/128/256, vocab 49152 (SmolLM2).

    python benchmarks/bench_sampler.py [--threads N] [--device cpu|cuda] [--dtype float32|bfloat16]

The model runner hands the sampler float32 logits. Reports the best-of-N milliseconds per call
(the minimum is the least noisy estimate on a shared machine). The floor is one read of the
logits: B x 49152 x 4 bytes, 25 MB at batch 128, ~1-2 ms at ~25 GB/s.
"""

from __future__ import annotations

import argparse
import time

import torch

from swiftserve.model_runner.sampler import Sampler, SamplingState
from swiftserve.sampling_params import SamplingParams

VOCAB = 49152

SCENARIOS = {
    "greedy": dict(temperature=0.0),
    "temp0.8": dict(temperature=0.8),
    "top_p0.95": dict(temperature=0.7, top_p=0.95),
    "top_k50+top_p0.9": dict(temperature=0.7, top_k=50, top_p=0.9),
    "min_p0.05": dict(temperature=1.0, min_p=0.05),
    "penalties": dict(temperature=0.7, repetition_penalty=1.1, presence_penalty=0.5, frequency_penalty=0.5),
    "greedy+logprobs5": dict(temperature=0.0, logprobs=5),
}


def _states(batch: int, params: dict, seeded: int = 0) -> list[SamplingState]:
    rng = torch.Generator().manual_seed(0)
    states = []
    for i in range(batch):
        prompt = torch.randint(VOCAB, (200,), generator=rng).tolist()
        output = torch.randint(VOCAB, (100,), generator=rng).tolist()
        seed = i if i < seeded else None
        generator = torch.Generator().manual_seed(i) if seed is not None else None
        states.append(
            SamplingState(SamplingParams(seed=seed, **params), prompt, output, frozenset({2}), generator)
        )
    return states


def _time(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    sampler = Sampler(VOCAB)
    batches = (1, 32, 128, 256)
    print(
        f"device={args.device} dtype={args.dtype} threads={torch.get_num_threads()} vocab={VOCAB} "
        f"(ms per call, best of {args.repeats})"
    )
    print(f"{'scenario':<22}" + "".join(f"{f'B={b}':>10}" for b in batches))
    rows = list(SCENARIOS.items()) + [("top_p0.95, 4 seeded", dict(temperature=0.7, top_p=0.95))]
    for name, params in rows:
        cells = []
        for batch in batches:
            logits = (torch.randn(batch, VOCAB, device=args.device) * 3).to(getattr(torch, args.dtype))
            states = _states(batch, params, seeded=4 if "seeded" in name else 0)

            def step(logits=logits, states=states):
                sampler(logits, states)
                sync()

            cells.append(_time(step, args.repeats))
        print(f"{name:<22}" + "".join(f"{ms:>10.2f}" for ms in cells))


if __name__ == "__main__":
    main()
