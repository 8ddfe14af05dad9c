"""Does filling the grammar masks beside the forward pay? A/B on one engine, interleaved rounds.

Every round runs the same constrained batch (an integer array of >= 1000 items, so every request
makes exactly max_tokens tokens) under each arm, in turn, so a noisy shared host hits every arm
alike:
  serial/T    fill after the forward, the forward on T threads (what "auto" does with no core free)
  beside/T    fill on the runner's fill thread during the forward on T threads
With T = all CPUs, "beside" oversubscribes; with T = CPUs - 1 it has a core of its own.

    python benchmarks/mask_overlap_ab.py [--concurrency 16] [--max-tokens 32] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from swiftserve import LLM, SamplingParams
from swiftserve.engine.grammar_stats import percentile
from swiftserve.model_runner.grammar.overlap_policy import OverlapPolicy
from swiftserve.model_runner.grammar.step_masks import MaskTimings
from swiftserve.structured_outputs import StructuredOutputs

LONG = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 999}, "minItems": 1000}


def arms(cpus: int) -> list[tuple[str, int]]:
    teams = sorted({cpus, max(1, cpus - 1)}, reverse=True)
    return [(mode, team) for team in teams for mode in ("off", "on")]


def run_arm(llm: LLM, prompts: list[list[int]], params: SamplingParams, mode: str, team: int) -> dict:
    torch.set_num_threads(team)  # the engine steps on this thread
    runner = llm.engine.runner
    runner.mask_overlap, runner.mask_timings = OverlapPolicy(mode), MaskTimings()
    start = time.perf_counter()
    outs = llm.generate(prompts, params)
    elapsed = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    assert tokens == len(prompts) * params.max_tokens, "a request ended early"
    t = runner.mask_timings
    return {"tok_s": tokens / elapsed, "fill_ms": 1e3 * sum(t.fill_s), "wait_ms": 1e3 * sum(t.join_wait_s)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0))
    llm = LLM(args.model, max_model_len=512, kv_cache_memory=128 << 20, enable_prefix_caching=False)
    spec = StructuredOutputs(json=LONG)
    params = SamplingParams(
        temperature=0, max_tokens=args.max_tokens, ignore_eos=True, structured_outputs=spec
    )
    prompts = [llm.engine.encode_prompt(f"List {i} numbers as JSON.") for i in range(args.concurrency)]
    llm.generate(prompts[:2], params)  # warm: compile, first fills, kernels
    results: dict[tuple[str, int], list[dict]] = {arm: [] for arm in arms(cpus)}
    for _ in range(args.rounds):
        for arm in results:
            results[arm].append(run_arm(llm, prompts, params, *arm))
    shape = f"{args.concurrency} constrained rows, {args.max_tokens} tokens each, {args.rounds} rounds"
    print(f"{cpus} CPUs, {shape}")
    for (mode, team), rows in results.items():
        rates = [r["tok_s"] for r in rows]
        fill = statistics.median(r["fill_ms"] for r in rows)
        wait = statistics.median(r["wait_ms"] for r in rows)
        name = f"{'beside' if mode == 'on' else 'serial'}/{team}"
        print(
            f"{name:10s} tok/s median {statistics.median(rates):7.1f} "
            f"(min {min(rates):7.1f} max {max(rates):7.1f} p10 {percentile(rates, 0.1):7.1f})  "
            f"fill total {fill:6.1f} ms  waited at join {wait:6.1f} ms"
        )
    llm.engine.close()


if __name__ == "__main__":
    main()
