"""Many models in one process against one process per model, on this machine's cores.

Three measurements in one run, each against a baseline run in the same run (ratios, not
absolute times; the host is shared and absolute figures move between runs):

1. Skewed load. A closed loop of --clients clients; each request goes to chat model `a` with
   probability 0.90, to chat model `b` with 0.05 and to the embedder `emb` with 0.05 (every
   client draws its own seeded sequence of models and prompts, so both deployments get the same
   request stream). Chat requests: short prompts, max_tokens --max-tokens, temperature 0,
   ignore_eos (a fixed amount of work per request); embedding requests: one short sentence.
     swiftserve: one `swiftserve launch` process serving a, b and emb on all the cores;
     static:     one process per model, the cores split in advance with taskset and matching
                 OMP_NUM_THREADS: `a` alone on core 0 (1 thread), `b` and `emb` sharing core 1
                 (1 thread each). A static deployment must pick its split before it sees the
                 load; this one is the best fixed split for a 90/5/5 mix on two cores.
     ceiling:    the swiftserve process with every request sent to `a` (same clients, prompts and
                 lengths): what one engine does with the whole machine, the bound on any
                 deployment of this mix (b's and emb's requests cost at least as much as a's).
   Reports requests/s, output tok/s, p50/p95 end-to-end latency per model, swiftserve/static
   and ceiling/static.
   With --rounds 2 the deployments alternate (swiftserve, static, static, swiftserve) and the
   figures are summed over rounds, so a slow patch of the shared host hits both.
2. Embedding latency under chat load, in the swiftserve process: one client sending embedding
   requests back to back, first alone, then while --chat-streams clients keep chat model `a`
   saturated. Reports p50/p95 and the loaded/alone ratio.
3. Memory over time: a fresh process with `emb` pinned and chat model `chat` on demand
   (--idle-timeout): bursts of chat requests separated by idle gaps. Every 0.5 s it samples the
   process RSS (psutil), the model's state (/v1/models) and swiftserve_model_resident_bytes
   (/metrics). Reports resident bytes and RSS during bursts and in the gaps once past the timeout.

Servers run as subprocesses on 127.0.0.1 and get SIGTERM at the end. The load generator runs in
this process, unpinned, on the same cores as the servers (for both deployments alike).

    python benchmarks/multi_model.py            # ~6 minutes
    python benchmarks/multi_model.py --quick    # ~2 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil

# Appended, not prepended: the root's kernels/ must not shadow the installed `kernels`.
sys.path.append(str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.common import print_table, stop_process, wait_ready, write_json
from benchmarks.serve import PROMPTS, percentile

CHAT = "smollm2-135m-instruct"
EMBEDDER = "all-minilm-l6-v2"
SENTENCES = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog.",
    "Rain is expected tomorrow afternoon.",
    "How do I reset my password?",
    "Compound AI systems call several models per task.",
    "The meeting was moved to Thursday.",
]
MIX = (("a", 0.90), ("b", 0.05), ("emb", 0.05))
CLASSES = [name for name, _ in MIX]


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `swiftserve launch` subprocess, optionally pinned to `cpus` with `threads` threads."""

    def __init__(self, name: str, launch_args: list[str], cpus: str, threads: int, logdir: Path) -> None:
        self.name, self.cpus, self.threads = name, cpus, threads
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        cmd = ["taskset", "-c", cpus, sys.executable, "-m", "swiftserve.cli", "launch"]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), *launch_args]
        self.cmd = cmd
        self.log_path = logdir / f"{name}.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 300.0) -> None:
        wait_ready(self.name, self.proc, self.base + "/health", self.log_path, timeout)

    def cpu_seconds(self) -> float:
        try:
            t = psutil.Process(self.proc.pid).cpu_times()
            return t.user + t.system
        except psutil.Error:
            return float("nan")

    def stop(self) -> None:
        stop_process(self.proc, timeout=20)
        self.log.close()

    def describe(self) -> dict:
        return {"name": self.name, "cpus": self.cpus, "threads": self.threads, "cmd": " ".join(self.cmd[3:])}


# --------------------------------------------------------------------------- requests


async def chat(client: httpx.AsyncClient, base: str, model: str, prompt: str, max_tokens: int) -> dict:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
    }
    start = time.perf_counter()
    try:
        r = await client.post(base + "/v1/chat/completions", json=body)
        r.raise_for_status()
        tokens = r.json()["usage"]["completion_tokens"]
        return {"ok": True, "start": start, "latency": time.perf_counter() - start, "tokens": tokens}
    except (httpx.HTTPError, KeyError, ValueError) as e:
        return {
            "ok": False,
            "start": start,
            "latency": time.perf_counter() - start,
            "tokens": 0,
            "error": repr(e),
        }


async def embed(client: httpx.AsyncClient, base: str, model: str, text: str) -> dict:
    start = time.perf_counter()
    try:
        r = await client.post(base + "/v1/embeddings", json={"model": model, "input": text})
        r.raise_for_status()
        assert r.json()["data"][0]["embedding"]
        return {"ok": True, "start": start, "latency": time.perf_counter() - start, "tokens": 0}
    except (httpx.HTTPError, KeyError, ValueError, AssertionError) as e:
        return {
            "ok": False,
            "start": start,
            "latency": time.perf_counter() - start,
            "tokens": 0,
            "error": repr(e),
        }


async def one_request(client, routes: dict[str, str], cls: str, rng: random.Random, max_tokens: int) -> dict:
    if cls == "emb":
        return await embed(client, routes[cls], cls, rng.choice(SENTENCES))
    return await chat(client, routes[cls], cls, rng.choice(PROMPTS), max_tokens)


def new_client(connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(timeout=httpx.Timeout(300.0), limits=limits)


async def warm_up(routes: dict[str, str], max_tokens: int) -> None:
    async with new_client(8) as client:
        rng = random.Random(0)
        for _ in range(2):
            for cls in routes:
                r = await one_request(client, routes, cls, rng, max_tokens)
                if not r["ok"]:
                    raise SystemExit(f"warm-up request to {cls} failed: {r['error']}")


async def skewed_load(
    routes: dict[str, str],
    clients: int,
    duration: float,
    seed: int,
    max_tokens: int,
    mix: tuple[tuple[str, float], ...] = MIX,
) -> dict:
    """Closed loop: each client sends its own seeded sequence of requests back to back until
    `duration` has passed, then the requests in flight finish (and count)."""
    records: list[dict] = []

    async def client_loop(client, index: int, start: float) -> None:
        rng = random.Random(seed * 100_003 + index)
        while time.perf_counter() - start < duration:
            x, cls = rng.random(), mix[-1][0]
            for name, share in mix:
                if x < share:
                    cls = name
                    break
                x -= share
            records.append({"cls": cls, **await one_request(client, routes, cls, rng, max_tokens)})

    async with new_client(clients + 4) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client, i, start) for i in range(clients)))
        elapsed = time.perf_counter() - start
    return {"elapsed": elapsed, "records": records}


def summarize_load(runs: list[dict]) -> dict:
    """Sums over rounds: requests and tokens over total wall time; latency quantiles over all."""
    elapsed = sum(r["elapsed"] for r in runs)
    records = [x for r in runs for x in r["records"]]
    ok = [x for x in records if x["ok"]]
    out = {
        "seconds": elapsed,
        "requests": len(ok),
        "errors": len(records) - len(ok),
        "requests_per_s": len(ok) / elapsed,
        "output_tok_per_s": sum(x["tokens"] for x in ok) / elapsed,
        "per_model": {},
        "rounds": [
            {
                "seconds": r["elapsed"],
                "requests_per_s": sum(x["ok"] for x in r["records"]) / r["elapsed"],
                "output_tok_per_s": sum(x["tokens"] for x in r["records"] if x["ok"]) / r["elapsed"],
                "cores_used": r.get("cores_used", {}),
            }
            for r in runs
        ],
    }
    for cls in CLASSES:
        lat = [x["latency"] for x in ok if x["cls"] == cls]
        if not lat:
            continue
        out["per_model"][cls] = {
            "requests": len(lat),
            "requests_per_s": len(lat) / elapsed,
            "p50_ms": 1e3 * percentile(lat, 50),
            "p95_ms": 1e3 * percentile(lat, 95),
        }
    errors = [x["error"] for x in records if not x["ok"]]
    if errors:
        out["first_errors"] = errors[:5]
    return out


def overall_p95(runs: list[dict]) -> float:
    """p95 end-to-end latency over every successful request of every model."""
    return percentile([x["latency"] for r in runs for x in r["records"] if x["ok"]], 95)


# --------------------------------------------------------------------------- part 2


async def embedding_under_load(base: str, duration: float, chat_streams: int, max_tokens: int) -> dict:
    async def embed_loop(client, seconds: float) -> list[float]:
        lat, rng, start = [], random.Random(1), time.perf_counter()
        while time.perf_counter() - start < seconds:
            r = await embed(client, base, "emb", rng.choice(SENTENCES))
            if r["ok"]:
                lat.append(r["latency"])
        return lat

    chat_records: list[dict] = []

    async def chat_loop(client, index: int, stop: asyncio.Event) -> None:
        rng = random.Random(7 + index)
        while not stop.is_set():
            chat_records.append(await chat(client, base, "a", rng.choice(PROMPTS), max_tokens))

    async with new_client(chat_streams + 4) as client:
        alone = await embed_loop(client, duration)
        stop = asyncio.Event()
        chats_start = time.perf_counter()
        chats = [asyncio.create_task(chat_loop(client, i, stop)) for i in range(chat_streams)]
        await asyncio.sleep(3.0)  # every stream admitted and decoding before the embedder starts
        loaded = await embed_loop(client, duration)
        stop.set()
        await asyncio.gather(*chats)
        chat_seconds = time.perf_counter() - chats_start

    def stats(lat: list[float]) -> dict:
        return {
            "requests": len(lat),
            "p50_ms": 1e3 * percentile(lat, 50),
            "p95_ms": 1e3 * percentile(lat, 95),
        }

    result = {"alone": stats(alone), "under_chat_load": stats(loaded), "chat_streams": chat_streams}
    # chat throughput over the whole loaded stretch, from the first stream to the last one's end
    result["under_chat_load"]["chat_output_tok_per_s"] = sum(r["tokens"] for r in chat_records) / chat_seconds
    result["p95_ratio"] = result["under_chat_load"]["p95_ms"] / result["alone"]["p95_ms"]
    result["p50_ratio"] = result["under_chat_load"]["p50_ms"] / result["alone"]["p50_ms"]
    return result


# --------------------------------------------------------------------------- part 3

METRIC = re.compile(r'^swiftserve_model_resident_bytes\{model="([^"]+)"\}\s+(\S+)', re.M)


async def memory_trace(
    server: Server,
    bursts: int,
    burst_s: float,
    gap_s: float,
    clients: int,
    max_tokens: int,
    idle_timeout: float,
) -> dict:
    proc = psutil.Process(server.proc.pid)
    samples: list[dict] = []
    phase = {"name": "start", "index": -1}
    t0 = time.perf_counter()

    async def sampler(client, stop: asyncio.Event) -> None:
        while not stop.is_set():
            tick = time.perf_counter()
            state, resident = None, {}
            try:
                models = (await client.get(server.base + "/v1/models", timeout=2)).json()["data"]
                state = next(m["state"] for m in models if m["id"] == "chat")
                resident = {
                    m: float(v) for m, v in METRIC.findall((await client.get(server.base + "/metrics")).text)
                }
            except (httpx.HTTPError, KeyError, ValueError, StopIteration):
                pass
            samples.append(
                {
                    "t": round(tick - t0, 2),
                    "phase": phase["name"],
                    "burst": phase["index"],
                    "rss_bytes": proc.memory_info().rss,
                    "chat_state": state,
                    "chat_resident_bytes": resident.get("chat", 0.0),
                    "emb_resident_bytes": resident.get("emb", 0.0),
                }
            )
            await asyncio.sleep(max(0.0, 0.5 - (time.perf_counter() - tick)))

    first_latency: list[float] = []
    burst_records: list[dict] = []

    async def burst_client(client, index: int, k: int, start: float) -> None:
        rng = random.Random(1000 * k + index)
        while time.perf_counter() - start < burst_s:
            r = await chat(client, server.base, "chat", rng.choice(PROMPTS), max_tokens)
            burst_records.append({"burst": k, **r})

    async with new_client(clients + 8) as client:
        stop = asyncio.Event()
        task = asyncio.create_task(sampler(client, stop))
        await asyncio.sleep(2.0)  # cold before the first request
        for k in range(bursts):
            phase.update(name="burst", index=k)
            start = time.perf_counter()
            await asyncio.gather(*(burst_client(client, i, k, start) for i in range(clients)))
            first = [r for r in burst_records if r["burst"] == k]
            first_latency.append(min(first, key=lambda r: r["start"])["latency"] if first else float("nan"))
            phase.update(name="gap", index=k)
            gap_start = time.perf_counter()
            await asyncio.sleep(gap_s)
            for s in samples:
                if s["phase"] == "gap" and s["burst"] == k:
                    s["past_timeout"] = s["t"] >= gap_start - t0 + idle_timeout + 1.0
        stop.set()
        await task

    def med(values):
        return percentile(values, 50) if values else float("nan")

    burst_samples = [s for s in samples if s["phase"] == "burst"]
    idle = [s for s in samples if s["phase"] == "gap" and s.get("past_timeout")]
    gaps = [s for s in samples if s["phase"] == "gap"]
    ok = [r for r in burst_records if r["ok"]]
    return {
        "summary": {
            "burst_chat_resident_bytes_median": med([s["chat_resident_bytes"] for s in burst_samples]),
            "idle_chat_resident_bytes_median": med([s["chat_resident_bytes"] for s in idle]),
            "idle_chat_resident_bytes_max": max(
                (s["chat_resident_bytes"] for s in idle), default=float("nan")
            ),
            "burst_rss_bytes_median": med([s["rss_bytes"] for s in burst_samples]),
            "idle_rss_bytes_median": med([s["rss_bytes"] for s in idle]),
            "start_rss_bytes": samples[0]["rss_bytes"] if samples else float("nan"),
            "emb_resident_bytes": med([s["emb_resident_bytes"] for s in samples]),
            "gap_fraction_cold": sum(s["chat_state"] == "cold" for s in gaps) / max(len(gaps), 1),
            "first_request_latency_ms": [1e3 * x for x in first_latency],
            "burst_requests": len(ok),
            "burst_errors": len(burst_records) - len(ok),
            "burst_p50_ms": 1e3 * percentile([r["latency"] for r in ok], 50),
        },
        "samples": samples,
    }


# --------------------------------------------------------------------------- main


def git_commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=root, text=True).strip()
        dirty = subprocess.check_output(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, text=True
        )
        return head + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def common_flags(args) -> list[str]:
    return [
        "--max-model-len", str(args.max_model_len),
        "--kv-cache-memory", args.kv_cache_memory,
        "--max-num-seqs", str(args.max_num_seqs),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short phases, one round (~2 minutes)")
    parser.add_argument("--clients", type=int, default=32, help="closed-loop clients of the skewed load")
    parser.add_argument("--duration", type=float, default=None, help="seconds per deployment per round")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--second-chat", default=CHAT, help="source of chat model b (default: the same as a)")
    parser.add_argument("--chat-streams", type=int, default=16, help="chat clients while timing the embedder")
    parser.add_argument("--embed-duration", type=float, default=None)
    parser.add_argument("--bursts", type=int, default=None)
    parser.add_argument("--burst-seconds", type=float, default=None)
    parser.add_argument("--gap-seconds", type=float, default=8.0)
    parser.add_argument("--idle-timeout", type=float, default=3.0)
    parser.add_argument("--max-model-len", type=int, default=512)
    parser.add_argument("--kv-cache-memory", default="128MiB")
    parser.add_argument("--max-num-seqs", type=int, default=32)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: load,embed,memory")
    parser.add_argument("--out", default="benchmarks/results/multi_model.json")
    args = parser.parse_args()
    q = args.quick
    args.duration = args.duration or (15.0 if q else 45.0)
    args.rounds = args.rounds or (1 if q else 2)
    args.embed_duration = args.embed_duration or (8.0 if q else 20.0)
    args.bursts = args.bursts or (2 if q else 4)
    args.burst_seconds = args.burst_seconds or (3.0 if q else 5.0)
    skip = set(filter(None, args.skip.split(",")))

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("needs at least 2 cores to split")
    all_cpus = ",".join(map(str, cpus))
    logdir = Path(tempfile.mkdtemp(prefix="multi_model_"))
    print(f"server logs in {logdir}; cores {all_cpus}")
    flags = common_flags(args)
    result: dict = {}
    servers: list[Server] = []
    began = time.perf_counter()
    try:
        swift = Server(
            "swiftserve",
            ["--models", f"a={CHAT},b={args.second_chat},emb={EMBEDDER}", *flags],
            all_cpus, len(cpus), logdir,
        )  # fmt: skip
        servers.append(swift)
        if "load" not in skip:
            # the split a static deployment fixes in advance: `a` (90% of requests) gets a core of
            # its own; `b` and `emb` (5% each) share the other. Extra cores, if any, go to `a`.
            a_cpus, rest = ",".join(map(str, cpus[:-1])), str(cpus[-1])
            static = [
                Server("static-a", ["--models", f"a={CHAT}", *flags], a_cpus, len(cpus) - 1, logdir),
                Server("static-b", ["--models", f"b={args.second_chat}", *flags], rest, 1, logdir),
                Server("static-emb", ["--models", f"emb={EMBEDDER}", *flags], rest, 1, logdir),
            ]
            servers += static
        for s in servers:
            s.wait_ready()
        print(f"servers ready after {time.perf_counter() - began:.0f} s")

        if "load" not in skip:
            deployments = {
                "swiftserve": ([swift], {c: swift.base for c in CLASSES}),
                "static": (static, {"a": static[0].base, "b": static[1].base, "emb": static[2].base}),
                "ceiling": ([swift], {"a": swift.base}),
            }
            for _, routes in deployments.values():
                asyncio.run(warm_up(routes, args.max_tokens))
            runs: dict[str, list] = {name: [] for name in deployments}
            idle_cpu: dict[str, list] = {name: [] for name in deployments}
            trio = ["swiftserve", "static", "ceiling"]
            order = [name for r in range(args.rounds) for name in (trio if r % 2 == 0 else trio[::-1])]
            for i, name in enumerate(order):
                mine = deployments[name][0]
                others = [s for n, (ss, _) in deployments.items() if n != name for s in ss if s not in mine]
                before = sum(s.cpu_seconds() for s in others)
                own_before = [s.cpu_seconds() for s in mine]
                gen_before = psutil.Process().cpu_times()
                r = i // len(trio)
                print(f"skewed load, {name}, round {r + 1}: {args.clients} clients, {args.duration:.0f} s")
                mix = (("a", 1.0),) if name == "ceiling" else MIX
                run = asyncio.run(
                    skewed_load(
                        deployments[name][1], args.clients, args.duration, args.seed + r, args.max_tokens, mix
                    )
                )
                gen = psutil.Process().cpu_times()
                # where the cores went: each server's CPU seconds over the phase, and the load
                # generator's (this process), which shares the same cores
                run["cores_used"] = {
                    s.name: (s.cpu_seconds() - b) / run["elapsed"]
                    for s, b in zip(mine, own_before, strict=True)
                }
                run["cores_used"]["load generator"] = (
                    gen.user + gen.system - gen_before.user - gen_before.system
                ) / run["elapsed"]
                runs[name].append(run)
                idle_cpu[name].append(sum(s.cpu_seconds() for s in others) - before)
            load = {name: summarize_load(r) for name, r in runs.items()}
            ours, base, ceiling = load["swiftserve"], load["static"], load["ceiling"]
            load["ratio"] = {
                "requests_per_s": ours["requests_per_s"] / base["requests_per_s"],
                "output_tok_per_s": ours["output_tok_per_s"] / base["output_tok_per_s"],
                **{
                    f"p95_{c}": ours["per_model"][c]["p95_ms"] / base["per_model"][c]["p95_ms"]
                    for c in CLASSES
                },
                "p95_all": overall_p95(runs["swiftserve"]) / overall_p95(runs["static"]),
            }
            load["ceiling_ratio"] = {
                "requests_per_s": ceiling["requests_per_s"] / base["requests_per_s"],
                "output_tok_per_s": ceiling["output_tok_per_s"] / base["output_tok_per_s"],
            }
            load["cpu_seconds_of_idle_deployment"] = idle_cpu
            load["deployments"] = {n: [s.describe() for s in ss] for n, (ss, _) in deployments.items()}
            result["skewed_load"] = load
            for s in static:
                s.stop()
            servers = [swift]

        if "embed" not in skip:
            print(
                f"embedding latency, alone then with {args.chat_streams} chat streams: "
                f"{args.embed_duration:.0f} s each"
            )
            result["embedding_under_load"] = asyncio.run(
                embedding_under_load(swift.base, args.embed_duration, args.chat_streams, 64)
            )
        swift.stop()
        servers = []

        if "memory" not in skip:
            mem = Server(
                "on-demand",
                ["--models", f"emb={EMBEDDER}", "--on-demand", f"chat={CHAT}", "--idle-timeout",
                 f"{args.idle_timeout:g}s", *flags],
                all_cpus, len(cpus), logdir,
            )  # fmt: skip
            servers = [mem]
            mem.wait_ready()
            print(
                f"memory trace: {args.bursts} bursts of {args.burst_seconds:g} s, "
                f"gaps of {args.gap_seconds:g} s"
            )
            result["memory_trace"] = asyncio.run(
                memory_trace(mem, args.bursts, args.burst_seconds, args.gap_seconds, 8, args.max_tokens,
                             args.idle_timeout)
            )  # fmt: skip
            result["memory_trace"]["server"] = mem.describe()
    finally:
        for s in servers:
            s.stop()

    report(result)
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": platform.processor() or platform.machine(),
        "cores": len(cpus),
        "python": platform.python_version(),
        "wall_seconds": time.perf_counter() - began,
        "args": vars(args),
    }
    write_json(args.out, {"meta": meta, **result})


def report(result: dict) -> None:
    if "skewed_load" in result:
        load = result["skewed_load"]
        rows = []
        for name in ("swiftserve", "static", "ceiling"):
            r = load[name]
            row = {"deployment": name, "req/s": r["requests_per_s"], "out tok/s": r["output_tok_per_s"]}
            for c, stats in r["per_model"].items():
                row[f"{c} p50 ms"] = stats["p50_ms"]
                row[f"{c} p95 ms"] = stats["p95_ms"]
            row["errors"] = r["errors"]
            rows.append(row)
        ratio = load["ratio"]
        rows.append({
            "deployment": "ratio",
            "req/s": ratio["requests_per_s"],
            "out tok/s": ratio["output_tok_per_s"],
            **{f"{c} p95 ms": ratio[f"p95_{c}"] for c in CLASSES},
        })  # fmt: skip
        rows.append({
            "deployment": "ceiling / static",
            "req/s": load["ceiling_ratio"]["requests_per_s"],
            "out tok/s": load["ceiling_ratio"]["output_tok_per_s"],
        })  # fmt: skip
        print("\n1. skewed load (90% a, 5% b, 5% emb)")
        cols = ["deployment", "req/s", "out tok/s"]
        cols += [f"{c} p{q} ms" for c in CLASSES for q in (50, 95)] + ["errors"]
        print_table(rows, cols)
        print(f"p95 over all requests, swiftserve / static: {ratio['p95_all']:.2f}")
    if "embedding_under_load" in result:
        e = result["embedding_under_load"]
        print(f"\n2. embedding latency, alone and with {e['chat_streams']} chat streams on `a`")
        rows = [
            {"case": "alone", **e["alone"]},
            {"case": "under chat load", **e["under_chat_load"]},
            {"case": "ratio", "p50_ms": e["p50_ratio"], "p95_ms": e["p95_ratio"]},
        ]
        print_table(rows, ["case", "requests", "p50_ms", "p95_ms", "chat_output_tok_per_s"])
    if "memory_trace" in result:
        m = result["memory_trace"]["summary"]
        mib = 1 << 20
        print("\n3. memory trace (on-demand chat model)")
        print_table(
            [
                {"phase": "bursts", "chat resident MiB": m["burst_chat_resident_bytes_median"] / mib,
                 "process RSS MiB": m["burst_rss_bytes_median"] / mib},
                {"phase": "gaps, past the idle timeout",
                 "chat resident MiB": m["idle_chat_resident_bytes_median"] / mib,
                 "process RSS MiB": m["idle_rss_bytes_median"] / mib},
            ],
            ["phase", "chat resident MiB", "process RSS MiB"],
        )  # fmt: skip
        print(
            f"share of gap samples cold: {m['gap_fraction_cold']:.2f}; "
            "first request of each burst (cold start): "
            + ", ".join(f"{x:.0f} ms" for x in m["first_request_latency_ms"])
        )


if __name__ == "__main__":
    main()
