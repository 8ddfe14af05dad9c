"""Pipelines: coordinated pre-warming against cascading cold starts, fan-out, and the machinery's
overhead, in one run on this machine (in process, through swiftserve.Server).

1. Cascade: every model of a 3-stage (retrieve, fan-out of 3, merge) and a 5-stage pipeline scaled
   to zero, one request, with and without pre-warming. Its cold-start share is its latency minus
   the warm latency measured next to it (each repeat pairs a warm, a cold and a cold-without-
   pre-warm request; the median of the pairs' differences is reported, so a slow stretch of a
   shared host moves both); the loads are each model's own load time, measured alone, with the
   CPU time each takes. Target: with pre-warming, the cold-start share at most the longest single
   load + 10%. Where a load is CPU work rather than a wait (a snapshot from the page cache, a
   conversion), loads that overlap share the cores with each other and with the stages running
   meanwhile, so the share cannot go below the loads' CPU seconds over the cores: the table
   gives that floor, max(longest load, CPU seconds / cores), beside the target. The cascades run
   with one load at a time (in need order) and with every load at once (the default). The sum of
   the stages' cold waits is reported too: it moves less with a busy host than a difference of
   two latencies does.
2. Fan-out of three through one pipeline call against three separate calls (concurrent, as a
   client would make them, and one after another): latency and throughput.
3. Overhead: a warm one-stage pipeline against the same call made directly. Target: < 5 ms.

    python benchmarks/pipeline.py [--repeats 5] [--parallel-loads 1,5]
                                  [--out benchmarks/results/pipeline.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# Appended, not prepended: the root's kernels/ must not shadow the installed `kernels`.
sys.path.append(str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import print_table, write_json  # noqa: E402
from swiftserve import Message, Pipeline, Server, Stage  # noqa: E402

FACTS = [
    "Paris is the capital of France.",
    "The Nile is a river in Africa.",
    "Python is a programming language.",
    "Mount Everest is the highest mountain on Earth.",
    "The Moon orbits the Earth.",
    "Water boils at 100 degrees Celsius at sea level.",
]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
_asked = iter(range(1 << 30))


def fresh_question() -> list[dict]:
    """QUESTION under a number never asked before. Every stage's prompt starts with it (or with an
    upstream output, as unique), so a warm run finds nothing of an earlier run's prompts in the
    prefix cache, which a cold run cannot after the reload: cold minus warm is then the loads and
    what they slow down, not the prefill that a repeated prompt skips. (The fan-out's calls still
    share their prompt's prefix within one run, warm or cold.)"""
    return [{"role": "user", "content": f"Question {next(_asked)}: {QUESTION[0]['content']}"}]


CORES = len(os.sched_getaffinity(0))
GREEDY = {"max_tokens": 16, "temperature": 0, "ignore_eos": True}
MODELS = {
    "embed": "all-minilm-l6-v2",
    "smol-a": "smollm2-135m-instruct",
    "smol-b": "smollm2-135m-instruct",
    "gemma-a": "gemma-3-270m",
    "gemma-b": "gemma-3-270m",
}


def _chat(id: str, model: str, after: str, content: str, fan_out: int = 1) -> Stage:
    return Stage(id, "chat", model, (after,), (Message("user", content),), fan_out=fan_out, sampling=GREEDY)


def pipelines(corpus: Path) -> list[Pipeline]:
    retrieve = Stage("context", "retrieve", "embed", corpus=str(corpus), top_k=2)
    three = (
        retrieve,
        _chat("drafts", "smol-a", "context", "Q: {{ input }}\nFacts: {{ stages.context }}\n#{{ i }}", 3),
        _chat("final", "gemma-a", "drafts", "Merge: {{ stages.drafts }}"),
    )
    five = (
        retrieve,
        _chat("draft", "smol-a", "context", "Q: {{ input }}\nFacts: {{ stages.context }}"),
        _chat("critique", "gemma-a", "draft", "Critique: {{ stages.draft }}"),
        _chat("rewrite", "smol-b", "critique", "Rewrite {{ stages.draft }} given {{ stages.critique }}"),
        _chat("final", "gemma-b", "rewrite", "Polish: {{ stages.rewrite }}"),
    )
    fan = (Stage("fan", "chat", "smol-a", messages=(Message("user", "{{ input }} #{{ i }}"),), fan_out=3,
                 sampling=GREEDY),)  # fmt: skip
    one = (
        Stage(
            "one", "chat", "smol-a", messages=(Message("user", "{{ input }}"),), sampling={"max_tokens": 1}
        ),
    )
    out = []
    for name, stages in (("three", three), ("five", five)):
        out += [Pipeline(name, stages, prewarm=True), Pipeline(f"{name}-cold", stages, prewarm=False)]
    return [*out, Pipeline("fan", fan), Pipeline("one", one)]


async def all_cold(server: Server) -> None:
    for name in MODELS:
        await server.unload(name)
        await server.unload(name)  # parked weights too


@dataclass(frozen=True)
class Load:
    """One model's load alone, medians: wall seconds and the process's CPU seconds meanwhile; and
    its unload's wall seconds (on the event loop: every request in flight waits that long)."""

    wall_s: float
    cpu_s: float
    unload_s: float


async def single_loads(server: Server, repeats: int) -> dict[str, Load]:
    loads = {}
    for name in MODELS:
        walls, cpus, unloads = [], [], []
        for _ in range(repeats):
            await all_cold(server)
            start, cpu = time.perf_counter(), time.process_time()
            await server.load(name)
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu)
            start = time.perf_counter()
            await server.unload(name)
            unloads.append(time.perf_counter() - start)
        loads[name] = Load(statistics.median(walls), statistics.median(cpus), statistics.median(unloads))
    return loads


async def cascade(server: Server, name: str, loads: dict[str, Load], repeats: int) -> dict:
    models = sorted({s.model for s in server.router.pipelines.get(name).spec.stages})
    warm, cold, cold_off, waits = [], [], [], []
    for _ in range(repeats):
        for model in models:
            await server.load(model)
        await server.run_pipeline(name, fresh_question())  # the first forwards after a load: not warm
        warm.append((await server.run_pipeline(name, fresh_question())).latency_s)
        await all_cold(server)
        result = await server.run_pipeline(name, fresh_question())
        cold.append(result.latency_s)
        waits.append(sum(stage.timing.cold_wait_s for stage in result.stages))
        await all_cold(server)
        cold_off.append((await server.run_pipeline(f"{name}-cold", fresh_question())).latency_s)
    used = [loads[m] for m in models]
    row = {
        "pipeline": name,
        "models": len(models),
        "warm_s": statistics.median(warm),
        "cold_prewarm_s": statistics.median(cold),
        "cold_no_prewarm_s": statistics.median(cold_off),
        "sum_loads_s": sum(load.wall_s for load in used),
        "max_load_s": max(load.wall_s for load in used),
        "loads_cpu_s": sum(load.cpu_s for load in used),
        "share_prewarm_s": statistics.median(c - w for c, w in zip(cold, warm, strict=True)),
        "share_no_prewarm_s": statistics.median(c - w for c, w in zip(cold_off, warm, strict=True)),
        "stage_waits_prewarm_s": statistics.median(waits),  # summed over stages, parallel ones too
    }
    row["cpu_floor_s"] = max(row["max_load_s"], row["loads_cpu_s"] / CORES)
    row["share_vs_max_load"] = row["share_prewarm_s"] / row["max_load_s"]
    row["share_vs_cpu_floor"] = row["share_prewarm_s"] / row["cpu_floor_s"]
    row["target_met"] = row["share_prewarm_s"] <= 1.1 * row["max_load_s"]
    return row


async def fan_out(server: Server, repeats: int) -> list[dict]:
    await server.load("smol-a")
    prompts = [[{"role": "user", "content": f"{QUESTION[0]['content']} #{i}"}] for i in range(3)]

    async def pipeline_call():
        await server.run_pipeline("fan", QUESTION)

    async def concurrent_calls():
        await asyncio.gather(*(server.chat("smol-a", p, **GREEDY) for p in prompts))

    async def sequential_calls():
        for p in prompts:
            await server.chat("smol-a", p, **GREEDY)

    rows = []
    for label, call in (("one pipeline call", pipeline_call), ("3 concurrent calls", concurrent_calls),
                        ("3 calls in turn", sequential_calls)):  # fmt: skip
        latency = []
        for _ in range(repeats):
            start = time.perf_counter()
            await call()
            latency.append(time.perf_counter() - start)
        start = time.perf_counter()
        await asyncio.gather(*(call() for _ in range(4)))  # 4 clients at once
        elapsed = time.perf_counter() - start
        tokens = 4 * 3 * GREEDY["max_tokens"]
        row = {"way": label, "latency_s": statistics.median(latency), "fan_outs_per_s": 4 / elapsed}
        rows.append({**row, "tokens_per_s": tokens / elapsed})
    return rows


async def overhead(server: Server, repeats: int) -> dict:
    await server.load("smol-a")
    direct, piped = [], []
    for _ in range(repeats):  # interleaved: both see the same machine
        start = time.perf_counter()
        await server.chat("smol-a", QUESTION, max_tokens=1)
        direct.append(time.perf_counter() - start)
        start = time.perf_counter()
        await server.run_pipeline("one", QUESTION)
        piped.append(time.perf_counter() - start)
    d, p = statistics.median(direct), statistics.median(piped)
    return {
        "direct_ms": d * 1e3,
        "pipeline_ms": p * 1e3,
        "overhead_ms": (p - d) * 1e3,
        "target_met": p - d < 0.005,
    }


def server(corpus: Path, snapshots: bool, parallel_loads: int | None = None) -> Server:
    specs = [f"{name}={source}" for name, source in MODELS.items()]
    return Server(on_demand=specs, idle_timeout="1h", memory_budget="8GiB", max_model_len=1024,
                  kv_cache_memory="64MiB", snapshots=snapshots, pipelines=pipelines(corpus),
                  parallel_loads=parallel_loads)  # fmt: skip


async def cascades(corpus: Path, snapshots: bool, repeats: int, limits: list[int]) -> tuple[dict, list[dict]]:
    """Single loads and both cascades under each parallel-loads limit, the models loading from
    their snapshots (swiftserve's default) or from their Hugging Face folders (snapshots off:
    loads of about a second)."""
    rows = []
    for limit in limits:
        async with server(corpus, snapshots, limit) as s:
            for name in MODELS:  # the first load writes each automatic snapshot: not measured
                await s.load(name)
            if limit == limits[0]:
                loads = await single_loads(s, repeats)
            for name in ("three", "five"):
                rows.append({"parallel_loads": limit, **await cascade(s, name, loads, repeats)})
    source = "snapshot" if snapshots else "folder"
    table = {k: {"wall_s": round(v.wall_s, 4), "cpu_s": round(v.cpu_s, 4), "unload_s": round(v.unload_s, 4)}
             for k, v in loads.items()}  # fmt: skip
    return table, [{"loads_from": source, **row} for row in rows]


async def main(args: argparse.Namespace) -> dict:
    corpus = Path(tempfile.mkdtemp(prefix="pipeline-bench-")) / "facts.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": fact}) for fact in FACTS))
    limits = [int(limit) for limit in args.parallel_loads.split(",")]
    loads_snap, rows_snap = await cascades(corpus, True, args.repeats, limits)
    loads_folder, rows_folder = await cascades(corpus, False, args.repeats, limits)
    async with server(corpus, True) as s:
        fans = await fan_out(s, args.repeats)
        over = await overhead(s, 10 * args.repeats)
    return {
        "cores": CORES,
        "single_loads": {"snapshot": loads_snap, "folder": loads_folder},
        "cascade": rows_snap + rows_folder,
        "fan_out": fans,
        "overhead": over,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--parallel-loads",
        default=f"1,{len(MODELS)}",
        help="the limits to run the cascades under, comma-separated (default: one load at a time "
        "in need order, then every load at once, swiftserve's default)",
    )
    parser.add_argument("--out", default="benchmarks/results/pipeline.json")
    args = parser.parse_args()
    result = asyncio.run(main(args))
    for source, loads in result["single_loads"].items():
        print(f"single loads from the {source} (s):", loads)
    print_table(result["cascade"], list(result["cascade"][0]))
    print_table(result["fan_out"], list(result["fan_out"][0]))
    print_table([result["overhead"]], list(result["overhead"]))
    write_json(args.out, result)
