"""Does a request's priority need to weight the device executor? A measurement, not a test.

One device executor steps two SmolLM2 engines. `bulk` decodes 8 requests at priority 5; once all
of them decode, one more request (32 new tokens) arrives:
- same model, priority 0: on `bulk` itself. The scheduler admits it ahead of anything waiting;
  running, it gets one token per batch step, as each bulk request does.
- other model, priority 5: on a second engine. As urgent as the bulk, so the executor shares the
  device per request by measured step time (scheduler/step_policy.py): one request against eight.
- other model, priority 0: the same, more urgent than the bulk: only its engine shares the
  device, the bulk steps at the policy's floor (step_policy.py, 5.).
- with --weight W, also "other model, weighted": priority 5, the second engine's demand
  multiplied by W (its one request counting as W): a proportional weighting, for comparison.
Per variant: the request's time to first token and decode rate, and each bulk request's decode
rate while it ran.

    python benchmarks/priority_executor.py [--rounds 2] [--weight 8]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.common import print_table, write_json
from swiftserve.config import EngineConfig
from swiftserve.engine import async_engine
from swiftserve.engine.async_engine import AsyncEngine
from swiftserve.engine.device_executor import DeviceExecutor
from swiftserve.sampling_params import SamplingParams

NUM_BULK = 8
BULK = SamplingParams(max_tokens=160, temperature=0, ignore_eos=True)
URGENT = SamplingParams(max_tokens=32, temperature=0, ignore_eos=True)
VARIANTS = ("same model, priority 0", "other model, priority 5", "other model, priority 0")
WEIGHTED = "other model, weighted"


async def _stream(engine: AsyncEngine, prompt: str, params, priority: int, times: list[float]) -> None:
    """Generates, appending the time of each new token to `times`."""
    seen = 0
    async for out in engine.generate(prompt, params, priority=priority):
        now = time.perf_counter()
        new = len(out.outputs[0].token_ids) - seen
        times.extend([now] * new)
        seen += new


async def _variant(model: str, variant: str, weight: int) -> dict:
    executor = DeviceExecutor("cpu")
    executor.start()
    config = EngineConfig(model=model, max_model_len=512, kv_cache_memory=64 << 20)
    bulk = AsyncEngine(config, executor, "bulk")
    urgent = bulk if variant.startswith("same") else AsyncEngine(config, executor, "urgent")
    _weigh(urgent, weight if variant == WEIGHTED else 1)
    priority = 0 if variant.endswith("priority 0") else 5
    try:
        for engine in {bulk, urgent}:
            await _stream(engine, "Warm up.", SamplingParams(max_tokens=4), 0, [])
        bulk_times: list[list[float]] = [[] for _ in range(NUM_BULK)]
        tasks = [
            asyncio.ensure_future(_stream(bulk, f"Story {i}: once upon a time", BULK, 5, bulk_times[i]))
            for i in range(NUM_BULK)
        ]
        while not all(bulk_times):
            await asyncio.sleep(0.005)
        urgent_times: list[float] = []
        start = time.perf_counter()
        await _stream(urgent, "Urgent: what is 2 + 2?", URGENT, priority, urgent_times)
        end = time.perf_counter()
        in_window = [sum(start <= t <= end for t in times) for times in bulk_times]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for engine in {bulk, urgent}:
            await engine.shutdown()
        executor.stop()
    decode_s = urgent_times[-1] - urgent_times[0]
    return {
        "variant": variant,
        "urgent_ttft_s": urgent_times[0] - start,
        "urgent_tok_s": (len(urgent_times) - 1) / decode_s,
        "bulk_tok_s_each": statistics.mean(in_window) / (end - start),
        "bulk_finished_early": sum(not t.cancelled() and t.done() for t in tasks),
    }


def _weigh(engine: AsyncEngine, weight: int) -> None:
    """Multiplies the demand the executor sees of `engine` (its share of device time)."""
    if weight == 1:
        return
    original = async_engine.ChatSteppable.demand

    def demand(self) -> int:
        base = original(self)
        return base * weight if self.engine is engine.engine else base

    async_engine.ChatSteppable.demand = demand  # type: ignore[method-assign]  # a measurement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--weight", type=int, default=0, help="also the weighted variant (0: not)")
    parser.add_argument("--out", default="benchmarks/results/priority_executor.json")
    args = parser.parse_args()
    original = async_engine.ChatSteppable.demand
    variants = VARIANTS + ((WEIGHTED,) if args.weight else ())
    runs: list[dict] = []
    for _ in range(args.rounds):
        for variant in variants:
            runs.append(asyncio.run(_variant(args.model, variant, args.weight)))
            async_engine.ChatSteppable.demand = original  # type: ignore[method-assign]
    rows = []
    for variant in variants:
        mine = [r for r in runs if r["variant"] == variant]
        keys = ("urgent_ttft_s", "urgent_tok_s", "bulk_tok_s_each")
        rows.append({"variant": variant, **{k: statistics.median(r[k] for r in mine) for k in keys}})
    print_table(rows, ["variant", "urgent_ttft_s", "urgent_tok_s", "bulk_tok_s_each"])
    write_json(args.out, {"weight": args.weight, "num_bulk": NUM_BULK, "medians": rows, "runs": runs})


if __name__ == "__main__":
    main()
