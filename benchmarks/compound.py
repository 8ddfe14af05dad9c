"""The compound-AI benchmark: a static deployment against swiftserve, on one seeded trace.

Four models, as in the study swiftserve follows: all-MiniLM-L6-v2 (`embed`), SmolLM2-135M
(`smol`) and Gemma 3 270M (`gemma`), and a Llama-3.2-1B-shaped model with random bf16 weights
(`big`, a snapshot written once into --workdir; fixed-length outputs with ignore_eos).

The trace (seeded; every system gets the same one), four classes, each with its own pattern:
  pipeline  retrieve the 2 nearest passages of a 48-line corpus (embed), a fan-out of 3-5 drafts
            on smol, a merge by big: bursts with quiet gaps longer than the idle timeout
  smol      direct chat, steady (the heavy steady traffic; pinned in swiftserve)
  gemma     direct chat, bursts with quiet gaps, out of phase with the pipelines
  embed     direct embeddings, steady
Arrivals are Poisson at a rate that follows each class's pattern through five phases: bursts,
a steady stretch (the pre-spike reference), a 10x step of every class's rate, bursts again.

Systems, one after another, each started here on 127.0.0.1 and stopped after its run:
  static             one `swiftserve launch` per model, always loaded, cores split with taskset and
                     OMP_NUM_THREADS (big alone on half the cores, the three small models sharing the
                     rest), a fixed memory budget each; no scale to zero, no pre-warming; the pipeline
                     run by an orchestrator here that calls the stages one by one (embed, top-k cosine
                     over the corpus vectors, the drafts concurrently, the merge)
  llamacpp           static's deployment built from llama.cpp: one llama-cpp-python server per model
                     on static's cores, the same orchestrator (benchmarks/compound/llamacpp.py; needs
                     `pip install 'llama-cpp-python[server]'` and benchmarks/compound/make_ggufs.py's
                     GGUFs, else skipped, saying why)
  swiftserve         one process, every core; embed and smol pinned, gemma and big on demand (short
                     idle timeout), snapshots, the pipelines declared in its config (pre-warming)
  swiftserve-noprewarm   the same with `prewarm: false`
  swiftserve-pinned      the same with every model pinned (no scale to zero)

Per system: P50/P95/P99 end-to-end latency of pipeline requests and of direct calls, completed
requests/s and goodput (requests within their class's SLO), errors and 429s, cost (resident memory
GB-seconds: RSS, and PSS, of every process of the system, sampled every 0.5 s; reserved
core-seconds), cold-start waits (the pipeline response's per-stage `cold_wait_s`, /metrics), and
P95 per 10-second window. The table, the targets against static, JSON in --out and two figures
(latency through the spike, latency CDFs) under --figures.

    python benchmarks/compound.py            # ~20 minutes: five systems of a 180 s trace
    python benchmarks/compound.py --quick    # ~8 minutes: a 90 s trace
    python benchmarks/compound.py --ci       # seconds: a tiny merge model, static and swiftserve
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import httpx
import jinja2
import numpy as np
import psutil
import yaml

# Appended, not prepended: the root's kernels/ must not shadow the installed `kernels`.
sys.path.append(str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.cold_start import BIG, BIG_CONFIG, prepare_big  # noqa: E402
from benchmarks.common import print_table, wait_ready, write_json  # noqa: E402
from benchmarks.multi_model import free_port, git_commit  # noqa: E402

HERE = Path(__file__).resolve().parent
# benchmarks/compound/ holds this benchmark's parts (the corpus, the llama.cpp peer): this module is
# their package, also when it runs as a script (then registered under its package name, so that
# the parts it imports find this run's module instead of executing it a second time).
__path__ = [str(HERE / "compound")]
sys.modules.setdefault("benchmarks.compound", sys.modules[__name__])
CORPUS = HERE / "compound" / "corpus.jsonl"
SMALL, SECOND, EMBEDDER = "smollm2-135m-instruct", "gemma-3-270m", "all-minilm-l6-v2"
CLASSES = ("pipeline", "smol", "gemma", "embed")
DIRECT = ("smol", "gemma", "embed")
FAN_OUTS = (3, 4, 5)
SYSTEMS = ("static", "llamacpp", "swiftserve", "swiftserve-noprewarm", "swiftserve-pinned")
# no scale to zero: every model loaded from the start, nothing to wait for before the trace
ALWAYS_LOADED = ("static", "llamacpp", "swiftserve-pinned")

# Outputs are short and fixed (ignore_eos) so that a request's work does not depend on the model's
# random weights: the trace is the same work for every system.
DRAFT_TOKENS, MERGE_TOKENS, CHAT_TOKENS = 8, 8, 12
TOP_K = 2
DRAFT = "Facts: {{ stages.context }}\nQuestion: {{ input }}\nDraft {{ i }}:"
# The merge is a completion: the 1B-shaped model stands for a base model, and its prefill is the
# costliest part of a request here (~30 prompt tokens/s on 2 cores), so its prompt is kept lean.
MERGE = "Drafts:\n{{ stages.drafts }}\nQuestion: {{ input }}\nOne answer:"
GREEDY = {"temperature": 0.0, "ignore_eos": True}
QUESTIONS = [
    "What is the capital of France?",
    "Which is the highest mountain?",
    "How fast does light travel?",
    "Who wrote Hamlet?",
    "What does a KV cache store?",
    "Which planet is the largest?",
    "When was the Eiffel Tower completed?",
    "At what temperature does water boil?",
    "What limits single-stream LLM decoding?",
    "How long is a marathon?",
    "What do bees do?",
    "Which river is the longest in Africa?",
]
SENTENCES = [
    "The meeting was moved to Thursday.",
    "How do I reset my password?",
    "Compound AI systems call several models per task.",
    "Rain is expected tomorrow afternoon.",
    "A quick brown fox jumps over the lazy dog.",
    "The invoice is attached to this message.",
]
# The 1B-shaped model's stand-in for --ci: the same architecture, a few MB of random weights.
TINY_CONFIG = {**BIG_CONFIG, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 49152}  # fmt: skip


# --------------------------------------------------------------------------- the trace


@dataclass(frozen=True)
class Pattern:
    """A class's arrival rate (req/s) in the steady phase (x10 in the spike). A `bursts` class is,
    in the burst phases, on for `on_s` at `burst_rate` (default: `rate`) and off for `off_s`
    (from `phase_s`); other classes keep `rate` throughout."""

    rate: float
    bursts: bool = False
    on_s: float = 0.0
    off_s: float = 0.0
    phase_s: float = 0.0
    burst_rate: float | None = None


@dataclass(frozen=True)
class Shape:
    """The trace's phases: bursts [0, steady), steady [steady, spike), the 10x step [spike,
    spike_end), bursts again until `duration`."""

    duration: float
    steady: float
    spike: float
    spike_end: float
    factor: float = 10.0

    def phase(self, t: float) -> str:
        if t < self.steady:
            return "bursts"
        if t < self.spike:
            return "steady"
        return "spike" if t < self.spike_end else "bursts"


@dataclass
class Request:
    index: int
    cls: str
    t: float  # arrival, seconds from the trace's start
    text: str
    fan_out: int = 0


def rate_at(p: Pattern, shape: Shape, t: float) -> float:
    phase = shape.phase(t)
    if phase == "spike":
        return p.rate * shape.factor
    if phase == "steady" or not p.bursts:
        return p.rate
    on = (t - p.phase_s) % (p.on_s + p.off_s) < p.on_s
    return (p.burst_rate or p.rate) if on else 0.0


def make_trace(patterns: dict[str, Pattern], shape: Shape, seed: int) -> list[Request]:
    """Poisson arrivals at each class's time-varying rate (thinning), each class its own stream."""
    arrivals: list[tuple[float, str]] = []
    for k, (cls, p) in enumerate(patterns.items()):
        rng, peak, t = random.Random(seed * 1009 + k), max(p.rate * shape.factor, p.burst_rate or 0.0), 0.0
        while peak > 0:
            t += rng.expovariate(peak)
            if t >= shape.duration:
                break
            if rng.random() * peak < rate_at(p, shape, t):
                arrivals.append((t, cls))
    arrivals.sort()
    rng = random.Random(seed)
    trace = []
    for i, (t, cls) in enumerate(arrivals):
        if cls == "embed":
            trace.append(Request(i, cls, t, f"{rng.choice(SENTENCES)} (#{i})"))
        else:
            fan = rng.choice(FAN_OUTS) if cls == "pipeline" else 0
            trace.append(Request(i, cls, t, f"{rng.choice(QUESTIONS)} (#{i})", fan))
    return trace


# --------------------------------------------------------------------------- the systems


@dataclass
class Proc:
    """One `swiftserve launch` subprocess on `cpus` with `threads` OpenMP threads."""

    health: ClassVar[str] = "/health"  # answers 200 once the server serves

    name: str
    args: list[str]
    cpus: list[int]
    logdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The server's command line (without the taskset prefix)."""
        launch = ["launch", "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        return [sys.executable, "-m", "swiftserve.cli", "-v", *launch]

    def start(self) -> None:
        threads = str(len(self.cpus))
        env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        cmd = ["taskset", "-c", ",".join(map(str, self.cpus)), *self.command()]
        self.cmd = cmd
        self.log = (self.logdir / f"{self.name}.log").open("w")
        # stdin from /dev/null: a server under a job-controlled shell must never stop on reading a tty
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, env=env
        )

    def wait_ready(self, timeout: float = 300.0) -> None:
        wait_ready(self.name, self.proc, self.base + self.health, self.logdir / f"{self.name}.log", timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()


def ignore_eos(model: str, max_tokens: int) -> dict:
    """swiftserve's request fields for a greedy call of exactly max_tokens tokens."""
    return {"max_tokens": max_tokens, **GREEDY}


@dataclass
class System:
    """A deployment: its processes, where each model is served, and how pipelines run."""

    name: str
    procs: list[Proc]
    routes: dict[str, str]  # served model -> base URL
    orchestrated: bool  # True: pipelines run by the client (static); False: by the server
    config_text: str = ""
    # (model, max_tokens) -> the request fields of a greedy call of exactly max_tokens tokens
    fixed_length: Callable[[str, int], dict] = ignore_eos

    def describe(self) -> dict:
        return {
            "processes": [{"name": p.name, "cpus": p.cpus, "cmd": " ".join(p.cmd[3:])} for p in self.procs],
            "pipelines": "client orchestrator" if self.orchestrated else "server (config file)",
            "config": self.config_text,
        }


@dataclass(frozen=True)
class Setup:
    """What every system is built from: model sources, lengths and budgets."""

    sources: dict[str, str]  # served name -> source (alias or snapshot path)
    workdir: Path
    logdir: Path
    cpus: list[int]
    max_model_len: int
    kv_cache_memory: str
    big_step_tokens: int
    idle_timeout: str
    memory_budget: str
    static_budgets: dict[str, str]


def engine_flags(setup: Setup) -> list[str]:
    return ["--max-model-len", str(setup.max_model_len), "--kv-cache-memory", setup.kv_cache_memory]


def static_cpus(cpus: list[int], name: str) -> list[int]:
    """A static deployment's cores for one model: big alone on the upper half, the three small
    models sharing the lower half (one machine of a single core: that core for all)."""
    half = max(1, len(cpus) // 2)
    return (cpus[half:] or cpus[:half]) if name == "big" else cpus[:half]


def static_system(setup: Setup) -> System:
    """One process per model, on its static_cpus, each with a fixed memory budget."""
    procs = []
    for name, source in setup.sources.items():
        cpus = static_cpus(setup.cpus, name)
        args = ["--models", f"{name}={source}", "--memory-budget", setup.static_budgets[name]]
        if name == "big":  # the same step budget as in swiftserve
            args += ["--max-num-batched-tokens", str(setup.big_step_tokens)]
        procs.append(Proc(f"static-{name}", args + engine_flags(setup), cpus, setup.logdir))
    routes = {p.name.removeprefix("static-"): p.base for p in procs}
    return System("static", procs, routes, orchestrated=True)


def pipeline_entries(corpus: Path) -> list[dict]:
    """rag3, rag4, rag5: retrieve, a fan-out of 3-5 drafts on smol, the merge by big."""
    entries = []
    for n in FAN_OUTS:
        stages = [
            {"id": "context", "kind": "retrieve", "model": "embed", "corpus": str(corpus), "top_k": TOP_K},
            {"id": "drafts", "kind": "chat", "model": "smol", "after": ["context"], "fan_out": n,
             "max_tokens": DRAFT_TOKENS, "sampling": GREEDY,
             "messages": [{"role": "user", "content": DRAFT}]},
            {"id": "final", "kind": "completion", "model": "big", "after": ["drafts"],
             "max_tokens": MERGE_TOKENS, "sampling": GREEDY, "prompt": MERGE},
        ]  # fmt: skip
        entries.append({"name": f"rag{n}", "stages": stages})
    return entries


def swiftserve_config(setup: Setup, prewarm: bool, pinned: bool) -> dict:
    on_demand = {"gemma", "big"}
    models = []
    for name, source in setup.sources.items():
        entry = {"name": name, "source": source, "policy": "pinned"}
        if name in on_demand and not pinned:
            entry["policy"] = "on-demand"
        if name == "big":
            entry["max_num_batched_tokens"] = setup.big_step_tokens
        models.append(entry)
    pipelines = pipeline_entries(CORPUS)
    for p in pipelines:
        p["prewarm"] = prewarm
    return {
        "memory_budget": setup.memory_budget,
        "idle_timeout": setup.idle_timeout,
        "models": models,
        "pipelines": pipelines,
    }


def swiftserve_system(setup: Setup, name: str) -> System:
    config = swiftserve_config(
        setup, prewarm=name != "swiftserve-noprewarm", pinned=name == "swiftserve-pinned"
    )
    if name == "swiftserve-pinned":
        config["memory_budget"] = "8GiB"  # every model resident: a budget that holds them all
    text = yaml.safe_dump(config, sort_keys=False)
    path = setup.workdir / f"{name}.yaml"
    path.write_text(text)
    proc = Proc(name, ["--config", str(path), *engine_flags(setup)], setup.cpus, setup.logdir)
    routes = {m: proc.base for m in [*setup.sources, *(f"rag{n}" for n in FAN_OUTS)]}
    return System(name, [proc], routes, orchestrated=False, config_text=text)


def build_system(setup: Setup, name: str) -> System:
    if name == "llamacpp":
        from benchmarks.compound.llamacpp import llamacpp_system

        return llamacpp_system(setup)
    return static_system(setup) if name == "static" else swiftserve_system(setup, name)


# --------------------------------------------------------------------------- requests


class Refused(Exception):
    """A 429: the server's queue for the request was full."""


def _check(r: httpx.Response) -> dict:
    if r.status_code == 429:
        raise Refused(r.text[:200])
    if r.status_code != 200:
        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
    return r.json()


async def chat(client: httpx.AsyncClient, base: str, model: str, content: str, fields: dict) -> dict:
    """fields: the system's fixed_length ones ({} for a swiftserve pipeline: its stages carry theirs)."""
    body: dict = {"model": model, "messages": [{"role": "user", "content": content}], **fields}
    return _check(await client.post(base + "/v1/chat/completions", json=body))


async def complete(client: httpx.AsyncClient, base: str, model: str, prompt: str, fields: dict) -> dict:
    body = {"model": model, "prompt": prompt, **fields}
    return _check(await client.post(base + "/v1/completions", json=body))


async def embed(client: httpx.AsyncClient, base: str, texts: list[str]) -> np.ndarray:
    data = _check(await client.post(base + "/v1/embeddings", json={"model": "embed", "input": texts}))
    return np.asarray([row["embedding"] for row in data["data"]], dtype=np.float32)


class Orchestrator:
    """The static deployment's pipeline: the client calls each model's server in turn, as an
    application calling separate model services does; prompts rendered from the same templates as
    swiftserve's stages, so both systems run the same model calls."""

    def __init__(self, routes: dict[str, str], fixed_length: Callable[[str, int], dict]) -> None:
        self.routes, self.fixed_length = routes, fixed_length
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
        self.draft, self.merge = env.from_string(DRAFT), env.from_string(MERGE)
        self.passages = [json.loads(line)["text"] for line in CORPUS.read_text().splitlines() if line.strip()]
        self.vectors: np.ndarray | None = None

    async def index(self, client: httpx.AsyncClient) -> None:
        self.vectors = _normalized(await embed(client, self.routes["embed"], self.passages))

    async def run(self, client: httpx.AsyncClient, question: str, fan_out: int) -> dict:
        start = time.perf_counter()
        query = _normalized(await embed(client, self.routes["embed"], [question]))[0]
        order = np.argsort(-(self.vectors @ query), kind="stable")[:TOP_K]
        context = "\n\n".join(self.passages[i] for i in order)
        retrieved = time.perf_counter()
        drafts = await asyncio.gather(*(
            chat(client, self.routes["smol"], "smol",
                 self.draft.render(input=question, i=i, stages={"context": context}),
                 self.fixed_length("smol", DRAFT_TOKENS))
            for i in range(fan_out)
        ))  # fmt: skip
        drafted = time.perf_counter()
        texts = "\n\n".join(d["choices"][0]["message"]["content"] for d in drafts)
        merge = self.merge.render(input=question, stages={"drafts": texts})
        final = await complete(
            client, self.routes["big"], "big", merge, self.fixed_length("big", MERGE_TOKENS)
        )
        end = time.perf_counter()
        stages = {"context": retrieved - start, "drafts": drafted - retrieved, "final": end - drafted}
        return {"final": final, "stages_s": stages}


def _normalized(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


async def send(client: httpx.AsyncClient, system: System, orch: Orchestrator | None, req: Request) -> dict:
    """One request of the trace; its record (latency, outcome, cold waits)."""
    start = time.perf_counter()
    record: dict = {"i": req.index, "cls": req.cls, "t": round(req.t, 3), "fan_out": req.fan_out}
    try:
        if req.cls == "embed":
            await embed(client, system.routes["embed"], [req.text])
        elif req.cls in ("smol", "gemma"):
            await chat(
                client, system.routes[req.cls], req.cls, req.text, system.fixed_length(req.cls, CHAT_TOKENS)
            )
        elif orch is not None:
            out = await orch.run(client, req.text, req.fan_out)
            record["stages_s"] = {k: round(v, 4) for k, v in out["stages_s"].items()}
            record["cold_wait_s"] = 0.0
        else:
            name = f"rag{req.fan_out}"
            out = await chat(client, system.routes[name], name, req.text, {})
            stages = out.get("swiftserve", {}).get("stages", [])
            record["stages_s"] = {s["id"]: round(s["end_s"] - s["start_s"], 4) for s in stages}
            record["cold_wait_s"] = round(sum(s["cold_wait_s"] for s in stages), 4)
            record["loads_by"] = [s["load_started_by"] for s in stages if s["load_started_by"]]
        record["outcome"] = "ok"
    except Refused as e:
        record.update(outcome="429", error=str(e))
    except asyncio.CancelledError:
        record.update(outcome="unfinished", error="still running when the drain timed out")
    except Exception as e:  # noqa: BLE001 - every failure is counted, by its message
        record.update(outcome="error", error=f"{type(e).__name__}: {e}"[:300])
    record["latency"] = time.perf_counter() - start
    return record


# --------------------------------------------------------------------------- one run


class Sampler:
    """Every 0.5 s: RSS and PSS summed over the system's processes, and their CPU seconds."""

    def __init__(self, procs: list[Proc], interval: float = 0.5) -> None:
        self.ps = [psutil.Process(p.proc.pid) for p in procs]
        self.interval, self.samples = interval, []

    def read(self, t0: float) -> dict:
        rss = pss = cpu = 0.0
        for p in self.ps:
            try:
                m = p.memory_full_info()
                rss, pss = rss + m.rss, pss + m.pss
                c = p.cpu_times()
                cpu += c.user + c.system
            except psutil.Error:
                pass
        total = psutil.cpu_times()
        return {"t": round(time.perf_counter() - t0, 3), "rss": rss, "pss": pss, "cpu_s": cpu,
                "machine_cpu_s": total.user + total.system + total.nice}  # fmt: skip

    async def run(self, t0: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            tick = time.perf_counter()
            self.samples.append(self.read(t0))
            await asyncio.sleep(max(0.0, self.interval - (time.perf_counter() - tick)))


async def warm_up(client: httpx.AsyncClient, system: System, orch: Orchestrator | None) -> None:
    """Each class once (first forwards, the page cache), not recorded."""
    for cls in CLASSES:
        r = await send(
            client, system, orch, Request(-1, cls, 0.0, "Warm up: what is the capital of Spain?", 3)
        )
        if r["outcome"] != "ok":
            raise RuntimeError(f"{system.name}: warm-up {cls} failed: {r.get('error')}")


async def drive(
    system: System, trace: list[Request], shape: Shape, drain_s: float, idle_wait_s: float
) -> dict:
    """Warm up, let on-demand models go cold, then the trace, open loop, with the sampler on."""
    # A new connection per request (localhost: ~0.1 ms): reusing an idle one races uvicorn's
    # keep-alive timer, which fires late and first when a starved event loop wakes up, and closes
    # the connection under the new request (a ReadError that no server fault caused).
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(None), limits=limits) as client:
        orch = Orchestrator(system.routes, system.fixed_length) if system.orchestrated else None
        if orch is not None:
            await orch.index(client)
        await warm_up(client, system, orch)
        await asyncio.sleep(idle_wait_s)  # on-demand models scale to zero before the trace starts
        sampler, stop = Sampler(system.procs), asyncio.Event()
        t0 = time.perf_counter()
        sampling = asyncio.create_task(sampler.run(t0, stop))
        tasks = []
        for req in trace:
            delay = req.t - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(client, system, orch, req)))
        done, pending = await asyncio.wait(
            tasks, timeout=max(0.0, shape.duration + drain_s - (time.perf_counter() - t0))
        )
        for task in pending:
            task.cancel()
        records = [await task for task in tasks]
        elapsed = time.perf_counter() - t0
        stop.set()
        await sampling
        metrics = {}
        for proc in system.procs:
            try:
                metrics[proc.name] = (await client.get(proc.base + "/metrics", timeout=10)).text
            except httpx.HTTPError as e:
                metrics[proc.name] = f"# unavailable: {e}"
    return {"records": records, "samples": sampler.samples, "elapsed": elapsed, "metrics": metrics}


def run_system(setup: Setup, name: str, trace: list[Request], shape: Shape, drain_s: float) -> dict:
    system = build_system(setup, name)
    began = time.perf_counter()
    try:
        for p in system.procs:
            p.start()
        for p in system.procs:
            p.wait_ready()
        ready_s = time.perf_counter() - began
        idle_wait = 0.0 if name in ALWAYS_LOADED else idle_seconds(setup) + 2.0
        run = asyncio.run(drive(system, trace, shape, drain_s, idle_wait))
    finally:
        for p in system.procs:
            p.stop()
    run["ready_s"] = ready_s
    run["system"] = system.describe()
    run["reserved_cores"] = len({c for p in system.procs for c in p.cpus})
    return run


def idle_seconds(setup: Setup) -> float:
    from swiftserve.router.config_file import parse_duration

    return parse_duration(setup.idle_timeout)


# --------------------------------------------------------------------------- summaries


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def latency_stats(records: list[dict]) -> dict:
    """Percentiles of the requests that completed, and P95 over all of them with each failed one at
    the latency it failed after (an unfinished one: until the drain ended, a lower bound), so that
    a system cannot look faster by dropping its slowest requests."""
    lat = [r["latency"] for r in records if r["outcome"] == "ok"]
    return {
        "count": len(records),
        "ok": len(lat),
        "p50_s": pct(lat, 50),
        "p95_s": pct(lat, 95),
        "p99_s": pct(lat, 99),
        "p95_with_failures_s": pct([r["latency"] for r in records], 95),
    }


def windows(records: list[dict], shape: Shape) -> list[dict]:
    """P95 of each group per 10-second window of arrival times (shorter in a trace under a minute)."""
    width = 10.0 if shape.duration >= 60 else shape.duration / 8
    out = []
    for k in range(math.ceil(shape.duration / width)):
        lo, hi = k * width, (k + 1) * width
        row: dict = {"start_s": lo, "width_s": width, "phase": shape.phase(lo)}
        for group, classes in (("pipeline", ("pipeline",)), ("direct", DIRECT), ("all", CLASSES)):
            mine = [r for r in records if lo <= r["t"] < hi and r["cls"] in classes]
            ok = [r["latency"] for r in mine if r["outcome"] == "ok"]
            row[group] = {"requests": len(mine), "failed": len(mine) - len(ok), "p95_s": pct(ok, 95)}
        out.append(row)
    return out


def spike_check(records: list[dict], shape: Shape) -> dict:
    """Through the spike (arrivals in [spike, spike_end)) against everything before it (bursts with
    their cold starts, then the steady stretch): the rates are low enough before the spike that
    the steady stretch alone holds too few pipeline requests for a P95."""
    out = {}
    for group, classes in (("pipeline", ("pipeline",)), ("direct", DIRECT), ("all", CLASSES)):
        pre = [r for r in records if r["t"] < shape.spike and r["cls"] in classes]
        during = [r for r in records if shape.spike <= r["t"] < shape.spike_end and r["cls"] in classes]
        p_pre = pct([r["latency"] for r in pre if r["outcome"] == "ok"], 95)
        p_in = pct([r["latency"] for r in during if r["outcome"] == "ok"], 95)
        out[group] = {
            "pre_spike_p95_s": p_pre,
            "spike_p95_s": p_in,
            "ratio": p_in / p_pre if p_pre and p_in else None,
            "spike_requests": len(during),
            "spike_failed": sum(r["outcome"] not in ("ok", "429") for r in during),
            "spike_429": sum(r["outcome"] == "429" for r in during),
        }
    return out


def metric_values(text: str, name: str) -> dict[str, float]:
    """{labels: value} of one metric in a Prometheus text page."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            out[key[len(name) :]] = float(value)
    return out


def cold_starts(run: dict) -> dict:
    records = [r for r in run["records"] if r["cls"] == "pipeline" and r["outcome"] == "ok"]
    waits = [r.get("cold_wait_s", 0.0) for r in records]
    out = {
        "pipeline_requests_with_cold_wait": sum(w > 0.001 for w in waits),
        "pipeline_cold_wait_total_s": sum(waits),
        "pipeline_cold_wait_max_s": max(waits, default=0.0),
        "loads_started_by_prewarm": sum(r.get("loads_by", []).count("prewarm") for r in records),
        "loads_started_by_stage": sum(r.get("loads_by", []).count("stage") for r in records),
    }
    loads, direct_cold = 0.0, {"count": 0.0, "sum": 0.0}
    for text in run["metrics"].values():
        loads += sum(metric_values(text, "swiftserve_model_loads_total").values())
        direct_cold["count"] += sum(metric_values(text, "swiftserve_cold_start_seconds_count").values())
        direct_cold["sum"] += sum(metric_values(text, "swiftserve_cold_start_seconds_sum").values())
    out["model_loads"] = loads
    out["cold_start_requests"] = direct_cold["count"]  # requests that found their model cold (/metrics)
    out["cold_start_wait_total_s"] = direct_cold["sum"]
    return out


def cost(run: dict, duration: float) -> dict:
    """Over the trace's duration, the same window for every system (a backlog drained after it
    is not counted: its latency is)."""
    s = [x for x in run["samples"] if x["t"] <= duration + 0.5]
    gib = 1 << 30
    rss = sum((b["t"] - a["t"]) * (a["rss"] + b["rss"]) / 2 for a, b in zip(s, s[1:], strict=False))
    pss = sum((b["t"] - a["t"]) * (a["pss"] + b["pss"]) / 2 for a, b in zip(s, s[1:], strict=False))
    span = s[-1]["t"] - s[0]["t"] if len(s) > 1 else 0.0
    used = s[-1]["cpu_s"] - s[0]["cpu_s"] if len(s) > 1 else 0.0
    machine = s[-1]["machine_cpu_s"] - s[0]["machine_cpu_s"] if len(s) > 1 else 0.0
    return {
        "seconds": span,
        "memory_gb_s": rss / 1e9,
        "memory_pss_gb_s": pss / 1e9,
        "mean_rss_gib": rss / span / gib if span else None,
        "peak_rss_gib": max((x["rss"] for x in s), default=0) / gib,
        "min_rss_gib": min((x["rss"] for x in s), default=0) / gib,
        "reserved_core_s": run["reserved_cores"] * span,
        "used_core_s": used,
        # CPU time the rest of the machine took meanwhile (this client, other users): a busy host
        # shows here, and the run's absolute figures then say less.
        "other_core_s": machine - used,
    }


def stalled_seconds(samples: list[dict], interval: float = 0.5) -> float:
    """Time the sampler missed by more than 5 s at once: this process (and so the load) was stopped
    or starved; requests in flight meanwhile carry the stall in their latency."""
    gaps = (b["t"] - a["t"] for a, b in zip(samples, samples[1:], strict=False))
    return sum(gap - interval for gap in gaps if gap > 5.0)


def summarize(run: dict, shape: Shape, slo: dict[str, float]) -> dict:
    records = run["records"]
    by = {c: [r for r in records if r["cls"] == c] for c in CLASSES}
    direct = [r for r in records if r["cls"] in DIRECT]
    ok = [r for r in records if r["outcome"] == "ok"]
    good = [r for r in ok if r["latency"] <= slo[r["cls"]]]
    last_end = max((r["t"] + r["latency"] for r in records), default=shape.duration)
    return {
        "requests": len(records),
        "completed": len(ok),
        "errors": sum(r["outcome"] in ("error", "unfinished") for r in records),
        "rate_limited_429": sum(r["outcome"] == "429" for r in records),
        "completed_per_s": len(ok) / max(shape.duration, last_end),
        "goodput_per_s": len(good) / shape.duration,
        # goodput of each group: embeddings are most of the requests and cheap, so the overall
        # figure says little about the pipelines
        "pipeline_goodput_per_s": sum(r["cls"] == "pipeline" for r in good) / shape.duration,
        "direct_goodput_per_s": sum(r["cls"] in DIRECT for r in good) / shape.duration,
        "within_slo": len(good),
        "pipeline": latency_stats(by["pipeline"]),
        "direct": latency_stats(direct),
        "per_class": {c: latency_stats(rs) for c, rs in by.items()},
        "pipeline_stages_mean_s": stage_means(by["pipeline"]),
        "cost": cost(run, shape.duration),
        "cold_starts": cold_starts(run),
        "spike": spike_check(records, shape),
        "windows": windows(records, shape),
        "ready_s": run["ready_s"],
        "stalled_s": stalled_seconds(run["samples"]),
        "first_errors": [r["error"] for r in records if r["outcome"] != "ok"][:5],
    }


def stage_means(records: list[dict]) -> dict:
    rows = [r["stages_s"] for r in records if r["outcome"] == "ok" and r.get("stages_s")]
    return (
        {k: sum(r.get(k, 0.0) for r in rows) / len(rows) for k in ("context", "drafts", "final")}
        if rows
        else {}
    )


def _ratio_or_none(ours: float, base: float) -> float | None:
    return ours / base if base else None


def _at_least(ratio: float | None, target: float, ours: float) -> bool:
    return ours > 0 if ratio is None else ratio >= target


def targets(summary: dict, ours: str = "swiftserve", base: str = "static") -> dict:
    """The issue's targets for `ours` against `base`, same run."""
    if base not in summary or ours not in summary:
        return {}
    s, b = summary[ours], summary[base]
    p95, p95_base = s["pipeline"]["p95_with_failures_s"], b["pipeline"]["p95_with_failures_s"]
    reduction = 1 - p95 / p95_base if p95 and p95_base else None
    # None: static had nothing within the SLO, a ratio without a denominator (JSON has no inf)
    goodput = _ratio_or_none(s["goodput_per_s"], b["goodput_per_s"])
    pipe_goodput = _ratio_or_none(s["pipeline_goodput_per_s"], b["pipeline_goodput_per_s"])
    cost_cut = 1 - s["cost"]["memory_gb_s"] / b["cost"]["memory_gb_s"]
    pss_cut = 1 - s["cost"]["memory_pss_gb_s"] / b["cost"]["memory_pss_gb_s"]
    spike = s["spike"]
    ratios = [spike[g]["ratio"] for g in ("pipeline", "direct") if spike[g]["ratio"] is not None]
    failed = sum(spike[g]["spike_failed"] for g in ("pipeline", "direct"))
    return {
        "system": ours,
        "base": base,
        "pipeline_p95_reduction": reduction,
        "pipeline_p95_met": reduction is not None and reduction >= 0.5,
        "goodput_ratio": goodput,
        "goodput_met": _at_least(goodput, 3.9, s["goodput_per_s"]),
        "pipeline_goodput_ratio": pipe_goodput,
        "pipeline_goodput_met": _at_least(pipe_goodput, 3.9, s["pipeline_goodput_per_s"]),
        "memory_cost_reduction": cost_cut,
        "memory_cost_reduction_pss": pss_cut,
        "cost_met": cost_cut >= 0.4,
        "core_cost_reduction": 1 - s["cost"]["reserved_core_s"] / b["cost"]["reserved_core_s"],
        "spike_failed": failed,
        "spike_p95_ratio_max": max(ratios) if ratios else None,
        "spike_met": failed == 0 and bool(ratios) and max(ratios) <= 2.0,
    }


# --------------------------------------------------------------------------- report


def table(summary: dict) -> None:
    rows = []
    for name, s in summary.items():
        c = s["cost"]
        rows.append({
            "system": name,
            "pipe p50/p95/p99 s": _triple(s["pipeline"]),
            "direct p50/p95/p99 s": _triple(s["direct"]),
            "done/s": s["completed_per_s"],
            "goodput/s all/pipe": f"{s['goodput_per_s']:.2f} / {s['pipeline_goodput_per_s']:.3f}",
            "errors": s["errors"],
            "429s": s["rate_limited_429"],
            "mem GB-s": c["memory_gb_s"],
            "PSS GB-s": c["memory_pss_gb_s"],
            "core-s": c["reserved_core_s"],
            "cold starts n, s": f"{s['cold_starts']['cold_start_requests']:.0f}, "
                                f"{s['cold_starts']['cold_start_wait_total_s']:.1f}",
            "other cores": c["other_core_s"] / c["seconds"] if c["seconds"] else None,
            "spike p95 x": _ratio(s["spike"]),
        })  # fmt: skip
    print_table(rows, list(rows[0]))


def _triple(stats: dict) -> str:
    values = [stats[k] for k in ("p50_s", "p95_s", "p99_s")]
    return " / ".join("-" if v is None else f"{v:.2f}" for v in values)


def _ratio(spike: dict) -> str:
    return " / ".join(
        "-" if spike[g]["ratio"] is None else f"{spike[g]['ratio']:.2f}" for g in ("pipeline", "direct")
    )


def print_targets(t: dict) -> None:
    if not t:
        return
    print(f"\ntargets, {t['system']} against {t['base']} (same run):")
    print(f"  pipeline P95 (failed requests at their latency) {100 * t['pipeline_p95_reduction']:.0f}% lower "
          f"(target >= 50%): "
          f"{'met' if t['pipeline_p95_met'] else 'missed'}")  # fmt: skip
    print(f"  goodput {_x(t['goodput_ratio'])} over all requests, {_x(t['pipeline_goodput_ratio'])} of the "
          f"pipelines (target >= 3.9x): {'met' if t['goodput_met'] else 'missed'} / "
          f"{'met' if t['pipeline_goodput_met'] else 'missed'}")  # fmt: skip
    print(f"  memory cost {100 * t['memory_cost_reduction']:.0f}% lower by RSS, "
          f"{100 * t['memory_cost_reduction_pss']:.0f}% by PSS (target >= 40%): "
          f"{'met' if t['cost_met'] else 'missed'}; "
          f"reserved cores {100 * t['core_cost_reduction']:.0f}% lower")  # fmt: skip
    ratio = t["spike_p95_ratio_max"]
    print(f"  spike: {t['spike_failed']} failed, P95 {'-' if ratio is None else f'{ratio:.2f}'}x pre-spike "
          f"(target 0 and <= 2x): {'met' if t['spike_met'] else 'missed'}")  # fmt: skip


def _x(ratio: float | None) -> str:
    return "n/a (the base: none within the SLO)" if ratio is None else f"{ratio:.2f}x"


# --------------------------------------------------------------------------- main


@dataclass(frozen=True)
class Preset:
    duration: float
    patterns: dict[str, Pattern]
    drain_s: float


def presets(kind: str) -> Preset:
    """Rates sized to this 2-core machine (see the README's section): at the spike, 10x every rate."""
    if kind == "ci":
        patterns = {"pipeline": Pattern(0.3), "smol": Pattern(0.6), "gemma": Pattern(0.4, True, 1.5, 1.5),
                    "embed": Pattern(0.8)}  # fmt: skip
        return Preset(6.0, patterns, 120.0)  # a generous drain: a loaded CI host is slow, not wrong
    # The pipelines' steady rate is half the first runs': their spike (pipelines alone at ~60% of
    # one process's capacity on both cores) overloaded every system once the direct traffic came
    # beside it, and a spike no deployment can serve measures its queue, not its architecture.
    patterns = {
        "pipeline": Pattern(0.0125, bursts=True, on_s=12.0, off_s=14.0, burst_rate=0.2),
        "smol": Pattern(0.08),
        "gemma": Pattern(0.04, bursts=True, on_s=10.0, off_s=16.0, phase_s=13.0, burst_rate=0.15),
        "embed": Pattern(0.3),
    }
    return Preset(90.0 if kind == "quick" else 180.0, patterns, 120.0)


def shape_for(duration: float) -> Shape:
    """Bursts for 30% of the trace, steady for 15%, the spike for 25%, bursts for the last 30%."""
    return Shape(duration, 0.3 * duration, 0.45 * duration, 0.7 * duration)


def prepare_models(args, workdir: Path) -> dict[str, str]:
    from swiftserve.loader import resolve_model

    name, config = ("tiny-llama-dummy", TINY_CONFIG) if args.ci else (BIG, BIG_CONFIG)
    snapshot = workdir / f"{name}.swsnap"
    if not snapshot.exists():
        shutil.rmtree(workdir / name, ignore_errors=True)
        print(f"writing the {name} snapshot (random weights) into {workdir}")
        prepare_big(workdir, resolve_model(SMALL, progress=False), hf_weights=False, config=config, name=name)
    return {"embed": EMBEDDER, "smol": SMALL, "gemma": SECOND, "big": str(snapshot)}


def llamacpp_ready(sources: dict[str, str]) -> bool:
    """Whether the llama.cpp peer can run here; if not, says why (it is then skipped)."""
    from benchmarks.compound.llamacpp import missing

    reason = missing(sources)
    if reason:
        print(f"llamacpp skipped: {reason}")
    return not reason


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a 90 s trace")
    parser.add_argument(
        "--ci", action="store_true", help="an 8 s trace, a tiny merge model, static + swiftserve"
    )
    parser.add_argument("--systems", help=f"comma-separated, of {','.join(SYSTEMS)} (default: all)")
    parser.add_argument("--duration", type=float, help="trace seconds (default: 180, --quick 90)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slo-pipeline", type=float, default=10.0, help="seconds")
    parser.add_argument("--slo-chat", type=float, default=2.5, help="seconds, direct chat")
    parser.add_argument("--slo-embed", type=float, default=0.5, help="seconds")
    parser.add_argument("--memory-budget", default="3GiB", help="swiftserve's (not all four models fit)")
    parser.add_argument("--idle-timeout", help="swiftserve's on-demand models (default 3s, --ci 1s)")
    parser.add_argument("--max-model-len", type=int, default=512)
    parser.add_argument("--kv-cache-memory", default="128MiB")
    parser.add_argument(
        "--big-step-tokens",
        type=int,
        default=16,
        help="the 1B model's step budget, in both systems: short steps hold the small models back less, "
        "and up to 16 rows its matmuls take the bandwidth-bound kernel (no native bf16 here)",
    )
    parser.add_argument("--workdir", default=str(Path.home() / ".cache" / "swiftserve" / "bench-compound"))
    parser.add_argument("--out", default="benchmarks/results/compound.json")
    parser.add_argument("--figures", default="benchmarks/results", help="folder for the PNGs ('' for none)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    kind = "ci" if args.ci else "quick" if args.quick else "full"
    preset = presets(kind)
    shape = shape_for(args.duration or preset.duration)
    names = (
        args.systems.split(",") if args.systems else (["static", "swiftserve"] if args.ci else list(SYSTEMS))
    )
    unknown = set(names) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"--systems: unknown {sorted(unknown)}; pick from {SYSTEMS}")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    sources = prepare_models(args, workdir)
    names = [n for n in names if n != "llamacpp" or llamacpp_ready(sources)]
    logdir = Path(tempfile.mkdtemp(prefix="compound_"))
    cpus = sorted(os.sched_getaffinity(0))
    big_budget = "256MiB" if args.ci else "3GiB"
    setup = Setup(
        sources, workdir, logdir, cpus, args.max_model_len, args.kv_cache_memory, args.big_step_tokens,
        args.idle_timeout or ("1s" if args.ci else "3s"), args.memory_budget,
        static_budgets={"embed": "512MiB", "smol": "768MiB", "gemma": "1GiB", "big": big_budget},
    )  # fmt: skip
    trace = make_trace(preset.patterns, shape, args.seed)
    slo = {
        "pipeline": args.slo_pipeline,
        "smol": args.slo_chat,
        "gemma": args.slo_chat,
        "embed": args.slo_embed,
    }
    counts = {c: sum(r.cls == c for r in trace) for c in CLASSES}
    print(f"trace: {len(trace)} requests over {shape.duration:.0f} s {counts}; spike x{shape.factor:g} "
          f"[{shape.spike:.0f}, {shape.spike_end:.0f}) s; cores {cpus}; logs in {logdir}")  # fmt: skip
    runs = {}
    for name in names:
        t = time.perf_counter()
        runs[name] = run_system(setup, name, trace, shape, preset.drain_s)
        done = sum(r["outcome"] == "ok" for r in runs[name]["records"])
        print(f"{name}: {done}/{len(trace)} ok, {time.perf_counter() - t:.0f} s with start and stop")
        stalled = stalled_seconds(runs[name]["samples"])
        if stalled:
            print(f"  warning: the load generator stood still for {stalled:.0f} s (stopped or starved)")
    summary = {name: summarize(run, shape, slo) for name, run in runs.items()}
    result = {
        "wall_seconds": time.perf_counter() - began,
        "commit": git_commit(),
        "cores": len(cpus),
        "args": vars(args),
        "slo_s": slo,
        "trace": {
            "shape": asdict(shape),
            "patterns": {k: asdict(v) for k, v in preset.patterns.items()},
            "requests": len(trace),
            "per_class": counts,
            "draft_tokens": DRAFT_TOKENS,
            "merge_tokens": MERGE_TOKENS,
            "chat_tokens": CHAT_TOKENS,
            "fan_outs": FAN_OUTS,
        },  # fmt: skip
        "systems": summary,
        "targets": {n: targets(summary, n) for n in names if n != "static"},
        "targets_against_llamacpp": {n: targets(summary, n, "llamacpp") for n in names if n != "llamacpp"},
        "deployments": {name: run["system"] for name, run in runs.items()},
        "records": {name: run["records"] for name, run in runs.items()},
        "memory_samples": {name: run["samples"] for name, run in runs.items()},
        "figures": [],
    }
    print()
    table(summary)
    print_targets(result["targets"].get("swiftserve", {}))
    print_targets(result["targets_against_llamacpp"].get("swiftserve", {}))
    if args.figures:
        from benchmarks.compound.figures import figures

        result["figures"] = figures(result, shape, Path(args.figures))
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
