"""Do small chat models still wait out a big model's steps? 1 chat lane against 2, same run.
A measurement, not a test (issue #13).

One device executor steps `big` (a Llama-3.2-1B-shaped model, random bf16 weights: load_format
"dummy", the shape of the compound benchmark's big) and SmolLM2-135M. big decodes one long request
throughout; once it runs alone for a few seconds, `--requests` SmolLM2 requests (`--tokens` new
tokens each) arrive one after another. Per executor (1 chat lane: every step in one line; 2 chat
lanes: big on its own lane, SmolLM2 beside it, the cores split while both are busy):
- SmolLM2's request latency (arrival to last token), mean and max;
- big's decode rate alone, and while SmolLM2's requests ran.

    python benchmarks/chat_lanes.py [--requests 3] [--tokens 16] [--out ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.cold_start import BIG_CONFIG
from benchmarks.common import print_table, write_json
from swiftserve.config import EngineConfig
from swiftserve.engine.async_engine import AsyncEngine
from swiftserve.engine.device_executor import DeviceExecutor
from swiftserve.loader import resolve_model
from swiftserve.sampling_params import SamplingParams

SMALL = "smollm2-135m-instruct"
# bf16 weight bytes, what the router plans lanes by (ServedModel.footprint().weight_bytes).
WEIGHT_BYTES = {"big": 2_471_000_000, "smol": 269_000_000}
ALONE_S = 4.0


async def _stream(engine: AsyncEngine, prompt: str, params: SamplingParams, times: list[float]) -> None:
    """Generates, appending the time of each new token to `times`."""
    seen = 0
    async for out in engine.generate(prompt, params):
        new = len(out.outputs[0].token_ids) - seen
        times.extend([time.perf_counter()] * new)
        seen += new


def _rate(times: list[float], start: float, end: float) -> float:
    return sum(start <= t <= end for t in times) / (end - start)


async def _run(lanes: int, big_folder: Path, small: Path, args: argparse.Namespace) -> dict:
    executor = DeviceExecutor("cpu", urgent_lane_threads=0, chat_lanes=lanes)
    executor.plan_lanes(WEIGHT_BYTES)
    executor.start()
    big_config = EngineConfig(
        model=str(big_folder), load_format="dummy", dtype="bfloat16", max_model_len=4096,
        kv_cache_memory=256 << 20,
    )  # fmt: skip
    big = AsyncEngine(big_config, executor, "big")
    smol = AsyncEngine(
        EngineConfig(model=str(small), max_model_len=512, kv_cache_memory=64 << 20), executor, "smol"
    )
    try:
        for engine in (big, smol):
            await _stream(engine, "Warm up.", SamplingParams(max_tokens=4, ignore_eos=True), [])
        big_times: list[float] = []
        long = SamplingParams(max_tokens=4000, temperature=0, ignore_eos=True)
        task = asyncio.ensure_future(_stream(big, "Once upon a time", long, big_times))
        while len(big_times) < 3:
            await asyncio.sleep(0.01)
        alone_start = time.perf_counter()
        await asyncio.sleep(ALONE_S)
        start = time.perf_counter()
        latencies = []
        params = SamplingParams(max_tokens=args.tokens, temperature=0, ignore_eos=True)
        for i in range(args.requests):
            sent = time.perf_counter()
            await _stream(smol, f"Question {i}: what is the capital of France?", params, [])
            latencies.append(time.perf_counter() - sent)
        end = time.perf_counter()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        for engine in (big, smol):
            await engine.shutdown()
        executor.stop()
    return {
        "chat_lanes": lanes,
        "smol_latency_mean_s": statistics.mean(latencies),
        "smol_latency_max_s": max(latencies),
        "big_tok_s_alone": _rate(big_times, alone_start, start),
        "big_tok_s_beside_smol": _rate(big_times, start, end),
        "smol_latencies_s": latencies,
    }


def _big_folder(work: Path, small: Path) -> Path:
    """Config and tokenizer only: load_format="dummy" makes the random weights."""
    folder = work / "big"
    folder.mkdir()
    for f in small.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")) or f.suffix == ".jinja":
            shutil.copy(f, folder / f.name)
    (folder / "config.json").write_text(json.dumps(BIG_CONFIG))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--out", default="benchmarks/results/chat_lanes.json")
    args = parser.parse_args()
    small = resolve_model(SMALL, progress=False)
    with tempfile.TemporaryDirectory() as work:
        big_folder = _big_folder(Path(work), small)
        runs = [asyncio.run(_run(lanes, big_folder, small, args)) for lanes in (1, 2)]
    keys = [
        "chat_lanes",
        "smol_latency_mean_s",
        "smol_latency_max_s",
        "big_tok_s_alone",
        "big_tok_s_beside_smol",
    ]
    print_table(runs, keys)
    write_json(args.out, {"requests": args.requests, "tokens": args.tokens, "runs": runs})


if __name__ == "__main__":
    main()
