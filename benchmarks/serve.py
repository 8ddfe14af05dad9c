"""Load generator for any OpenAI-compatible server on this machine (127.0.0.1 only).

Mode `load` (default): for each concurrency level, that many clients send streaming chat requests
back to back (fixed prompts, max_tokens 64, temperature 0, `ignore_eos` when the server accepts
it), bounded by --requests per level and --duration seconds. Reports output tokens/s (all
clients together, over the level's wall time), TTFT and end-to-end latency p50/p95, time per
output token, and errors.

    python benchmarks/serve.py --base-url http://127.0.0.1:8000/v1 --concurrency 1,4,16,64

Mode `overhead`: what the HTTP server adds on top of the engine. Requests with max_tokens=1 are
sent one at a time, so each is one prefill plus one sampled token, with nothing else running:
  1. client e2e: the time the client waits, over HTTP.
  2. server e2e: the server's own histogram (/metrics, swiftserve only), arrival -> last byte
     queued; client minus server is the transport (connection, HTTP parsing, sockets).
  3. engine e2e: the same prompt token ids through an in-process AsyncEngine of the same model
     and settings (--engine-model), timed around generate(); server minus engine is the work
     the server adds in between (JSON, validation, chat template, tokenization, SSE framing,
     the hop from the engine thread to the event loop).
The same prompt repeats, so both paths hit the prefix cache the same way after the first call;
medians are reported, and the first --warmup calls of each path are dropped.

    python benchmarks/serve.py --mode overhead --base-url http://127.0.0.1:8000/v1 \\
        --engine-model smollm2-135m-instruct

Both modes print a table and write JSON (--out).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import re
import socket
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx

PROMPTS = [
    "Explain how a bicycle works.",
    "Write a short poem about the sea.",
    "What are the main causes of rain?",
    "Give me three tips for learning a new language.",
    "Describe the water cycle in simple words.",
    "Why is the sky blue?",
    "List some uses of a paperclip.",
    "Tell me a story about a brave mouse.",
]


def check_loopback(base_url: str) -> None:
    """Refuses any target that is not this machine."""
    host = urlparse(base_url).hostname
    if host is None:
        raise SystemExit(f"no host in {base_url!r}")
    addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise SystemExit(f"refusing {base_url}: this benchmark only targets 127.0.0.1 / localhost")


@dataclass
class Result:
    ok: bool
    ttft_s: float = 0.0
    e2e_s: float = 0.0
    num_output_tokens: int = 0
    error: str = ""


@dataclass
class LevelSummary:
    concurrency: int
    num_requests: int
    num_errors: int
    wall_s: float
    output_tokens: int
    output_tok_per_s: float
    requests_per_s: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    e2e_p50_ms: float
    e2e_p95_ms: float
    tpot_mean_ms: float  # time per output token after the first
    errors: list[str] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class Client:
    def __init__(self, args) -> None:
        self.args = args
        headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        limits = httpx.Limits(
            max_connections=max(args.levels) + 4, max_keepalive_connections=max(args.levels) + 4
        )
        self.http = httpx.AsyncClient(
            base_url=args.base_url, headers=headers, timeout=args.timeout, limits=limits
        )
        self.ignore_eos = False

    async def close(self) -> None:
        await self.http.aclose()

    def body(self, prompt: str, max_tokens: int) -> dict:
        body = {
            "model": self.args.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.ignore_eos:
            body["ignore_eos"] = True
        return body

    async def probe(self) -> None:
        """Find the model name if not given, and whether `ignore_eos` is accepted."""
        if not self.args.model:
            models = (await self.http.get("/models")).json()["data"]
            self.args.model = models[0]["id"]
        if not self.args.no_ignore_eos:
            self.ignore_eos = True
            result = await self.chat(PROMPTS[0], 2)
            self.ignore_eos = result.ok
        print(f"model {self.args.model}; ignore_eos {'on' if self.ignore_eos else 'off'}", file=sys.stderr)

    async def warm_up(self) -> None:
        """A few unmeasured requests: first-call costs (allocations, caches) stay out of the numbers."""
        for i in range(self.args.warmup):
            await self.chat(PROMPTS[i % len(PROMPTS)], self.args.max_tokens)

    async def chat(self, prompt: str, max_tokens: int) -> Result:
        start = time.perf_counter()
        ttft, num_chunks, usage_tokens = None, 0, None
        try:
            async with self.http.stream(
                "POST", "/chat/completions", json=self.body(prompt, max_tokens)
            ) as response:
                if response.status_code != 200:
                    text = (await response.aread()).decode(errors="replace")
                    return Result(False, error=f"HTTP {response.status_code}: {text[:200]}")
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        return Result(False, error=f"stream error: {chunk['error'].get('message')}")
                    if chunk.get("usage"):
                        usage_tokens = chunk["usage"].get("completion_tokens")
                    for choice in chunk.get("choices") or []:
                        if (choice.get("delta") or {}).get("content"):
                            num_chunks += 1
                            if ttft is None:
                                ttft = time.perf_counter() - start
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            return Result(False, error=f"{type(exc).__name__}: {exc}")
        e2e = time.perf_counter() - start
        tokens = usage_tokens if usage_tokens is not None else num_chunks
        return Result(True, ttft if ttft is not None else e2e, e2e, tokens)


async def run_level(client: Client, concurrency: int, args) -> LevelSummary:
    results: list[Result] = []
    issued = 0
    deadline = time.perf_counter() + args.duration

    async def worker(worker_id: int) -> None:
        nonlocal issued
        while issued < args.requests and time.perf_counter() < deadline:
            prompt = PROMPTS[issued % len(PROMPTS)]
            issued += 1
            results.append(await client.chat(prompt, args.max_tokens))

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    wall = time.perf_counter() - start
    ok = [r for r in results if r.ok]
    tokens = sum(r.num_output_tokens for r in ok)
    tpots = [(r.e2e_s - r.ttft_s) / (r.num_output_tokens - 1) for r in ok if r.num_output_tokens > 1]
    errors = sorted({r.error for r in results if not r.ok})
    return LevelSummary(
        concurrency=concurrency,
        num_requests=len(results),
        num_errors=len(results) - len(ok),
        wall_s=round(wall, 3),
        output_tokens=tokens,
        output_tok_per_s=round(tokens / wall, 2) if wall > 0 else 0.0,
        requests_per_s=round(len(ok) / wall, 3) if wall > 0 else 0.0,
        ttft_p50_ms=round(1000 * percentile([r.ttft_s for r in ok], 50), 1),
        ttft_p95_ms=round(1000 * percentile([r.ttft_s for r in ok], 95), 1),
        e2e_p50_ms=round(1000 * percentile([r.e2e_s for r in ok], 50), 1),
        e2e_p95_ms=round(1000 * percentile([r.e2e_s for r in ok], 95), 1),
        tpot_mean_ms=round(1000 * statistics.fmean(tpots), 2) if tpots else float("nan"),
        errors=errors[:5],
    )


def print_table(rows: list[LevelSummary], label: str) -> None:
    print(f"\n{label}")
    header = f"{'conc':>5} {'reqs':>5} {'errs':>5} {'tok/s':>9} {'req/s':>7} {'TTFT p50':>9} {'TTFT p95':>9} "
    header += f"{'e2e p50':>9} {'e2e p95':>9} {'TPOT':>7}"
    print(header)
    for r in rows:
        print(
            f"{r.concurrency:>5} {r.num_requests:>5} {r.num_errors:>5} {r.output_tok_per_s:>9.1f} "
            f"{r.requests_per_s:>7.2f} {r.ttft_p50_ms:>7.0f}ms {r.ttft_p95_ms:>7.0f}ms "
            f"{r.e2e_p50_ms:>7.0f}ms {r.e2e_p95_ms:>7.0f}ms {r.tpot_mean_ms:>5.1f}ms"
        )
        for error in r.errors:
            print(f"      error: {error}")


async def load_mode(args) -> dict:
    client = Client(args)
    try:
        await client.probe()
        await client.warm_up()
        rows = []
        for level in args.levels:
            rows.append(await run_level(client, level, args))
            print_table(rows[-1:], f"concurrency {level}")
    finally:
        await client.close()
    print_table(rows, f"{args.label or args.base_url}: streaming chat, max_tokens {args.max_tokens}")
    return {"mode": "load", "ignore_eos": client.ignore_eos, "levels": [asdict(r) for r in rows]}


# ---------------------------------------------------------------- overhead mode


async def _server_e2e(http: httpx.AsyncClient, base: str, model: str) -> tuple[float, float]:
    """(sum, count) of the server's e2e latency histogram for model; (nan, 0) if not swiftserve."""
    try:
        text = (await http.get(base + "/metrics")).text
    except httpx.HTTPError:
        return float("nan"), 0
    label = rf'\{{model="{re.escape(model)}"\}}'
    total = re.search(rf"^swiftserve_e2e_request_latency_seconds_sum{label} (\S+)$", text, re.MULTILINE)
    count = re.search(rf"^swiftserve_e2e_request_latency_seconds_count{label} (\S+)$", text, re.MULTILINE)
    if not total or not count:
        return float("nan"), 0
    return float(total.group(1)), float(count.group(1))


async def overhead_mode(args) -> dict:
    args.levels = [1]
    client = Client(args)
    root = args.base_url.rsplit("/v1", 1)[0]
    prompt = PROMPTS[0]
    client_times, server_times = [], []
    try:
        await client.probe()
        for i in range(args.warmup + args.requests):
            before = await _server_e2e(client.http, root, args.model)
            result = await client.chat(prompt, 1)
            after = await _server_e2e(client.http, root, args.model)
            if not result.ok:
                raise SystemExit(f"request failed: {result.error}")
            if i >= args.warmup:
                client_times.append(result.e2e_s)
                if after[1] == before[1] + 1:
                    server_times.append(after[0] - before[0])
    finally:
        await client.close()
    engine_times = await _engine_times(args, prompt) if args.engine_model else []
    out = {
        "mode": "overhead",
        "client_e2e_ms_p50": round(1000 * statistics.median(client_times), 3),
        "server_e2e_ms_p50": round(1000 * statistics.median(server_times), 3) if server_times else None,
        "engine_e2e_ms_p50": round(1000 * statistics.median(engine_times), 3) if engine_times else None,
        "num_requests": len(client_times),
    }
    print("\nserver overhead, max_tokens=1, one request at a time (medians)")
    names = {
        "client_e2e_ms_p50": "client e2e",
        "server_e2e_ms_p50": "server e2e",
        "engine_e2e_ms_p50": "engine e2e",
    }
    for key, name in names.items():
        value = out[key]
        print(f"  {name:<38} {value if value is not None else 'n/a':>10} ms")
    if out["server_e2e_ms_p50"] is not None:
        out["transport_ms"] = round(out["client_e2e_ms_p50"] - out["server_e2e_ms_p50"], 3)
        print(f"  {'transport (client - server)':<38} {out['transport_ms']:>10.3f} ms")
    if out["engine_e2e_ms_p50"] is not None:
        out["http_overhead_ms"] = round(out["client_e2e_ms_p50"] - out["engine_e2e_ms_p50"], 3)
        print(f"  {'HTTP server in all (client - engine)':<38} {out['http_overhead_ms']:>10.3f} ms")
    return out


async def _engine_times(args, prompt: str) -> list[float]:
    """The same request through an in-process AsyncEngine (the server's engine class)."""
    from swiftserve.scheduler.config import SchedulerConfig

    from swiftserve.config import EngineConfig
    from swiftserve.engine.async_engine import AsyncEngine
    from swiftserve.sampling_params import SamplingParams

    scheduler = SchedulerConfig(max_model_len=args.max_model_len) if args.max_model_len else SchedulerConfig()
    config = EngineConfig(
        model=args.engine_model,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        kv_cache_memory=args.kv_cache_memory,
        scheduler=scheduler,
    )
    engine = await asyncio.to_thread(AsyncEngine, config)
    await engine.start()
    try:
        text = engine.apply_chat_template([{"role": "user", "content": prompt}])
        ids = engine.tokenizer.encode(text, add_special_tokens=False)
        params = SamplingParams(max_tokens=1, temperature=0)
        times = []
        for i in range(args.warmup + args.requests):
            start = time.perf_counter()
            async for _ in engine.generate(ids, params):
                pass
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
        return times
    finally:
        await engine.shutdown()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="", help="served model name (default: the first of /v1/models)")
    parser.add_argument("--api-key", default="")
    parser.add_argument("--mode", choices=("load", "overhead"), default="load")
    parser.add_argument("--concurrency", default="1,4,16,64", help="comma-separated client counts")
    parser.add_argument("--requests", type=int, default=128, help="requests per level (overhead: samples)")
    parser.add_argument(
        "--duration", type=float, default=120.0, help="seconds per level; no new requests after"
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--no-ignore-eos", action="store_true", help="never send ignore_eos")
    parser.add_argument("--timeout", type=float, default=600.0, help="per-request timeout, seconds")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured calls first")
    parser.add_argument("--engine-model", help="overhead mode: alias/folder/.gguf for the in-process engine")
    parser.add_argument(
        "--dtype", default="auto", help="overhead mode: the engine's dtype (match the server)"
    )
    parser.add_argument("--max-model-len", type=int, help="overhead mode: match the server's")
    parser.add_argument("--kv-cache-memory", type=int, help="overhead mode: bytes, match the server's")
    parser.add_argument("--label", default="", help="name of this run in the table and JSON")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    args.levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    if not args.levels or min(args.levels) < 1 or args.requests < 1 or args.duration <= 0:
        parser.error("concurrency levels, --requests and --duration must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    check_loopback(args.base_url)
    run = load_mode if args.mode == "load" else overhead_mode
    result = asyncio.run(run(args))
    result.update(
        label=args.label,
        base_url=args.base_url,
        model=args.model,
        max_tokens=args.max_tokens if args.mode == "load" else 1,
        requests_per_level=args.requests,
        duration_s=args.duration,
        time=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
