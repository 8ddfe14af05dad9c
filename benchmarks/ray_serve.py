"""swiftserve on Ray Serve: what the extra hop costs, what residency-aware routing saves, and a cold
model's first token against Ray's own scale from zero. Prints a table and writes JSON.

    python -P benchmarks/ray_serve.py [--requests 40] [--trace 48] [--out benchmarks/results/ray_serve.json]

1. hop: one replica (chat + embeddings pinned) through Ray (HAProxy -> ingress -> replica)
   against `swiftserve launch` with the same models hit directly over HTTP; small embedding
   requests and GET /v1/models, sequential (latency) and 4 at a time (throughput); and the two
   handle call shapes A/B (call_shapes: unary against streaming, the same request and replica);
   with --same-loop-ab, the Ray half again on a Ray started with Ray Serve's default thread
   switches instead of ours (serve_env.py), and with --proxy-ab through Ray's Python proxy
   instead of HAProxy (ours by default: one Ray call fewer per request). Beside them, on the
   same Ray, Ray's own floor: bare deployments answering a constant through one hop and through
   two (bare_apps), so that what the hop costs us above Ray itself is seen apart from what Ray
   costs on this host.
2. skew: two replicas, three on-demand models under a budget that holds two of them per replica
   (SmolLM2-135M, gemma-3-270m, MiniLM), a Zipf-skewed trace, 2 clients: our routing against Ray's
   default (power of two choices with model multiplexing, 2 models per replica); cold loads
   counted by the replicas, latency at the client.
3. cold: time to the first token of a request for a model resident nowhere, through Ray (a load
   inside a running replica), against Ray Serve's scale from zero (min_replicas 0: a replica
   process started for the request).
4. predict: the two routing rules simulated over a Zipf trace for 8 and 64 replicas (routing.rank
   itself; Ray's rule as its pow-2 router applies multiplexing), cold loads per 1000 requests.
A local Ray of 2 CPUs; run it on a quiet host (every figure here is CPU-bound).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

CHAT, EMBED, GEMMA = "smollm2-135m-instruct", "all-minilm-l6-v2", "gemma-3-270m"
MiB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(latencies_s: list[float], wall_s: float) -> dict:
    return {
        "p50_ms": 1e3 * statistics.median(latencies_s),
        "p95_ms": 1e3 * pct(latencies_s, 0.95),
        "req_per_s": len(latencies_s) / wall_s,
    }


async def timed_requests(base: str, calls: list[tuple[str, str, dict | None]], concurrency: int) -> dict:
    """(method, path, json) calls, `concurrency` at a time; latency per call and throughput."""
    latencies: list[float] = []
    queue = list(calls)
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:

        async def worker() -> None:
            while queue:
                method, path, body = queue.pop(0)
                start = time.perf_counter()
                response = await client.request(method, path, json=body)
                response.raise_for_status()
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return summary(latencies, time.perf_counter() - start)


def seq_and_x4(base: str, calls: list[tuple[str, str, dict | None]], key: str) -> dict:
    """The calls after five to warm up: one at a time (`key`/seq, latency) and 4 at a time
    (`key`/x4, throughput)."""
    asyncio.run(timed_requests(base, calls[:5], 1))
    return {
        f"{key}/seq": asyncio.run(timed_requests(base, calls, 1)),
        f"{key}/x4": asyncio.run(timed_requests(base, calls, 4)),
    }


def router_config(pinned: tuple[str, ...] = (), on_demand: tuple[str, ...] = (), budget: int = 2 << 30):
    from swiftserve.router.router_config import RouterConfig

    return RouterConfig.from_flags(
        pinned or None,
        on_demand or None,
        memory_budget=budget,
        max_model_len=512,
        kv_cache_memory=32 * MiB,
        idle_timeout_s=600,
    )


def wait_health(base: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{base} never became healthy")


def replica_loads() -> dict[str, dict[str, int]]:
    import ray

    loads = {}
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith("SERVE_REPLICA::") and "SwiftServeReplica" in actor["name"]:
            handle = ray.get_actor(actor["name"], namespace="serve")
            loads[actor["name"]] = ray.get(handle.record_routing_stats.remote(), timeout=30)["num_loads"]
    return loads


def deploy(spec, port: int) -> str:
    from swiftserve.ray.application import ClusterOptions
    from swiftserve.ray.application import deploy as ray_deploy

    ray_deploy(spec, ClusterOptions(num_cpus=2, object_store_bytes=200 * MiB, port=port), wait=True)
    base = f"http://127.0.0.1:{port}"
    wait_health(base)
    time.sleep(2.0)  # the replicas' first reports reach the request router
    return base


def undeploy(spec) -> None:
    from ray import serve

    serve.delete(spec.app_name)


# ---------------------------------------------------------------- 1. the extra hop


def hop(port: int, n: int, serve_envs: dict[str, dict[str, str]]) -> dict:
    calls = [("POST", "/v1/embeddings", {"model": EMBED, "input": "a short text"})] * n
    models = [("GET", "/v1/models", None)] * n
    kinds = {"embeddings": calls, "models": models}
    results: dict = {}
    for label, env in serve_envs.items():
        results.update(ray_hop(port, n, kinds, label, env))
    os.environ.update(next(iter(serve_envs.values())))  # the later parts: the first env's Ray
    direct_port = free_port()
    command = [sys.executable, "-P", "-m", "swiftserve", "launch", "--models", f"{CHAT},{EMBED}"]
    command += ["--port", str(direct_port), "--max-model-len", "512", "--kv-cache-memory", "32MiB"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        direct = f"http://127.0.0.1:{direct_port}"
        wait_health(direct)
        for name, c in kinds.items():
            results.update(seq_and_x4(direct, c, f"direct/{name}"))
    finally:
        server.terminate()
        server.wait(30)
    for label in serve_envs:
        for name in kinds:
            results[f"hop_p50_ms/{label}/{name}"] = (
                results[f"{label}/{name}/seq"]["p50_ms"] - results[f"direct/{name}/seq"]["p50_ms"]
            )
        # What of the hop is ours: our relay and replica against Ray's own two hops, both
        # answering GET with a small JSON list.
        results[f"ours_above_bare_2hop_p50_ms/{label}/models"] = (
            results[f"{label}/models/seq"]["p50_ms"] - results[f"{label}/bare-2hop/seq"]["p50_ms"]
        )
    return results


def ray_hop(port: int, n: int, kinds: dict, label: str, env: dict[str, str]) -> dict:
    """The requests through a local Ray started afresh with `env` set (then shut down)."""
    import ray
    from ray import serve

    from swiftserve.ray.replica_config import ReplicaSetConfig
    from swiftserve.ray.spec import ServeSpec

    os.environ.update(env)  # explicit either way: deploy() would set serve_env()'s by default
    spec = ServeSpec(
        router_config((CHAT, EMBED)), ReplicaSetConfig(num_replicas=1, num_cpus=1), app_name="hop"
    )
    base = deploy(spec, port)
    results: dict = {}
    for name, c in kinds.items():
        results.update(seq_and_x4(base, c, f"{label}/{name}"))
    shapes = call_shapes(spec.app_name, n)
    results.update({f"{label}/{key}": value for key, value in shapes.items()})
    results.update(ray_floor(port, n, label))
    serve.shutdown()
    ray.shutdown()
    return results


def call_shapes(app_name: str, n: int) -> dict:
    """The A/B of the two handle call shapes, from this process straight to the replica (no HTTP,
    no ingress): GET /v1/models as one unary call (`answer`: every part in one reply) and as a
    streaming call (`relay`: head, body and end, each through Ray's streaming generator)."""
    from ray import serve

    from swiftserve.ray.ingress import REPLICA_DEPLOYMENT
    from swiftserve.ray.relay import relayed

    handle = serve.get_deployment_handle(REPLICA_DEPLOYMENT, app_name)
    request = relayed("GET", "/v1/models", {}, b"")

    def unary() -> None:
        handle.options(stream=False).answer.remote(request).result()

    def streamed() -> None:
        list(handle.options(stream=True).relay.remote(request))

    shapes = {"unary": unary, "stream": streamed}
    latencies: dict[str, list[float]] = {name: [] for name in shapes}
    for i in range(n + 5):  # interleaved, so that the host's noise falls on both alike
        for name, call in shapes.items():
            start = time.perf_counter()
            call()
            if i >= 5:  # the first five warm up
                latencies[name].append(time.perf_counter() - start)
    out = {f"handle/models/{name}": summary(lat, sum(lat)) for name, lat in latencies.items()}
    return out


BARE_BODY = {"object": "list", "data": [{"id": CHAT, "object": "model"}, {"id": EMBED, "object": "model"}]}


def bare_apps():
    """Ray Serve with nothing of ours: one deployment answering a constant (proxy -> deployment),
    and an ingress asking it through a handle (proxy -> ingress -> deployment: Ray Serve LLM's
    own shape, and ours). What they cost on this host is Ray's floor under our hop."""
    from ray import serve
    from starlette.responses import JSONResponse

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class Constant:
        async def __call__(self, request) -> JSONResponse:
            return JSONResponse(BARE_BODY)

        async def answer(self) -> dict:
            return BARE_BODY

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class Front:
        def __init__(self, constant) -> None:
            self.constant = constant

        async def __call__(self, request) -> JSONResponse:
            return JSONResponse(await self.constant.answer.remote())

    return {"bare-1hop": Constant.bind(), "bare-2hop": Front.bind(Constant.bind())}


def ray_floor(port: int, n: int, label: str) -> dict:
    """GET on the bare apps (bare_apps), beside ours on the same Ray, sequential and 4 at a time."""
    from ray import serve

    results = {}
    for name, app in bare_apps().items():
        serve.run(app, name=name, route_prefix=f"/{name}")
        calls = [("GET", f"/{name}", None)] * n
        results.update(seq_and_x4(f"http://127.0.0.1:{port}", calls, f"{label}/{name}"))
        serve.delete(name)
    return results


# ---------------------------------------------------------------- 2. a skewed multi-model trace


def zipf_trace(models: list[str], n: int, s: float, seed: int) -> list[str]:
    rng = random.Random(seed)
    weights = [1 / (i + 1) ** s for i in range(len(models))]
    return rng.choices(models, weights, k=n)


def request_for(model: str) -> tuple[str, str, dict]:
    if model == EMBED:
        return ("POST", "/v1/embeddings", {"model": EMBED, "input": "a short text"})
    messages = [{"role": "user", "content": "hi"}]
    return ("POST", "/v1/chat/completions", {"model": model, "messages": messages, "max_tokens": 2})


def skew(port: int, n: int) -> dict:
    from swiftserve.ray.replica_config import ReplicaSetConfig
    from swiftserve.ray.spec import POW2_MULTIPLEX, RESIDENCY, ServeSpec

    trace = zipf_trace([CHAT, EMBED, GEMMA], n, 1.0, seed=7)
    results: dict = {"trace": {m: trace.count(m) for m in (CHAT, EMBED, GEMMA)}}
    # 700 MiB: gemma (~540 MiB) beside MiniLM (~90 MiB), or SmolLM2 (~270 MiB) beside MiniLM; never
    # gemma beside SmolLM2: a replica serving both alternately reloads.
    budget = 700 * MiB
    for router in (RESIDENCY, POW2_MULTIPLEX):
        spec = ServeSpec(
            router_config(on_demand=(CHAT, EMBED, GEMMA), budget=budget),
            ReplicaSetConfig(num_replicas=2, num_cpus=1),
            app_name=f"skew-{router}",
            request_router=router,
        )
        base = deploy(spec, port)
        before = replica_loads()
        timing = asyncio.run(timed_requests(base, [request_for(m) for m in trace], 2))
        after = replica_loads()
        cold = sum(sum(after[r].values()) - sum(before.get(r, {}).values()) for r in after)
        results[router] = {**timing, "cold_loads": cold}
        undeploy(spec)
    return results


# ---------------------------------------------------------------- 3. a cold model's first token


async def first_token_s(base: str, model: str) -> float:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        start = time.perf_counter()
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: ") and '"content":"' in line and '"content":""' not in line:
                    return time.perf_counter() - start
            raise RuntimeError(f"no token: {response.status_code} {line[:300]}")
    raise RuntimeError("no token")


def cold(port: int) -> dict:
    from swiftserve.ray.autoscale import ScalingTargets
    from swiftserve.ray.replica_config import Autoscaling, ReplicaSetConfig
    from swiftserve.ray.spec import ServeSpec

    spec = ServeSpec(
        router_config((EMBED,), (GEMMA,)), ReplicaSetConfig(num_replicas=1, num_cpus=1), app_name="cold"
    )
    base = deploy(spec, port)
    ours = asyncio.run(first_token_s(base, GEMMA))
    warm = asyncio.run(first_token_s(base, GEMMA))
    undeploy(spec)
    auto = Autoscaling(0, 1, ScalingTargets(target_queue_depth=1))
    spec0 = ServeSpec(
        router_config((EMBED,), (GEMMA,)), ReplicaSetConfig(num_cpus=1, autoscaling=auto), app_name="zero"
    )
    from swiftserve.ray.application import ClusterOptions
    from swiftserve.ray.application import deploy as ray_deploy

    ray_deploy(spec0, ClusterOptions(num_cpus=2, object_store_bytes=200 * MiB, port=port), wait=True)
    base0 = f"http://127.0.0.1:{port}/"
    from swiftserve.ray.ingress import running_replicas

    time.sleep(3)
    assert running_replicas("zero") == 0, "the deployment did not start at zero replicas"
    zero = asyncio.run(first_token_s(base0.rstrip("/"), GEMMA))
    undeploy(spec0)
    return {"ours_cold_model_ttft_s": ours, "ours_warm_ttft_s": warm, "ray_scale_from_zero_ttft_s": zero}


# ---------------------------------------------------------------- 4. 8 and 64 replicas, simulated


def simulate(num_replicas: int, seed: int = 1) -> dict:
    """A fleet at rest (requests one at a time, so load never breaks a tie): 3 models per replica
    in the catalogue, each 1 or 2 units of memory, 4 units per replica, least recently used models
    evicted by bytes (the replica's pool); a Zipf(1.1) trace of 200 requests per replica. Ours ranks
    by what the replicas report (routing.rank); Ray's multiplexing sees each replica's last 2 model
    ids by request, whatever is resident. Cold loads per 1000 requests under each rule."""
    from swiftserve.ray.routing import ReplicaReport, RouteRequest, rank

    rng = random.Random(seed)
    models = [f"m{i}" for i in range(3 * num_replicas)]
    size = {m: rng.choice((1, 2)) for m in models}
    trace = zipf_trace(models, 200 * num_replicas, 1.1, seed)
    out = {}
    for rule in ("residency", "pow2-multiplex"):
        rng = random.Random(seed)
        held: list[list[str]] = [[] for _ in range(num_replicas)]  # resident, least recent first
        seen: list[list[str]] = [[] for _ in range(num_replicas)]  # Ray's multiplex LRU of ids
        loads = 0
        for model in trace:
            chosen = _choose(rule, model, held, seen, size, rng, rank, ReplicaReport, RouteRequest)
            loads += _serve(held[chosen], model, size)
            if model in seen[chosen]:
                seen[chosen].remove(model)
            seen[chosen] = (seen[chosen] + [model])[-2:]
        out[rule] = 1000 * loads / len(trace)
    return out


def _choose(rule, model, held, seen, size, rng, rank, report_type, request_type) -> int:
    if rule == "residency":
        reports = [
            report_type(str(i), {m: "resident" for m in h}, 0, 4 - sum(size[m] for m in h))
            for i, h in enumerate(held)
        ]
        return int(rank(request_type((model,)), reports)[0])
    # Ray's pow-2 with multiplexing: two random replicas among those whose ids include the model,
    # else among those with the fewest ids; equal queues, so either of the two.
    having = [i for i, ids in enumerate(seen) if model in ids]
    fewest = min(len(ids) for ids in seen)
    pool = having or [i for i, ids in enumerate(seen) if len(ids) == fewest]
    return rng.choice(rng.sample(pool, min(2, len(pool))))


def _serve(resident: list[str], model: str, size: dict[str, int]) -> int:
    """1 if the replica had to load the model (evicting the least recently used to fit)."""
    if model in resident:
        resident.remove(model)
        resident.append(model)
        return 0
    while sum(size[m] for m in resident) + size[model] > 4:
        resident.pop(0)
    resident.append(model)
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--trace", type=int, default=48)
    parser.add_argument("--out", default="benchmarks/results/ray_serve.json")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: hop,skew,cold")
    parser.add_argument(
        "--same-loop-ab",
        action="store_true",
        help="hop: also through a Ray started with Ray Serve's default switches (serve_env.py)",
    )
    parser.add_argument(
        "--proxy-ab",
        action="store_true",
        help="hop: also through Ray's Python proxy instead of HAProxy (serve_env.py)",
    )
    args = parser.parse_args()
    os.environ.setdefault("PYTHONSAFEPATH", "1")  # the Ray workers: the repo's kernels/ stays off sys.path
    import ray
    from ray import serve

    skip = set(args.skip.split(","))
    port = free_port()
    results: dict = {"host": f"{os.cpu_count()} vCPU, shared", "predict": {}}
    try:
        if "hop" not in skip:
            from swiftserve.ray.serve_env import RAY_DEFAULT_ENV, serve_env

            envs = {"ray": serve_env("haproxy")}
            if args.proxy_ab:
                envs["ray-python-proxy"] = serve_env("ray")
            if args.same_loop_ab:
                envs["ray-defaults"] = RAY_DEFAULT_ENV
            results["hop"] = hop(port, args.requests, envs)
        if "skew" not in skip:
            results["skew"] = skew(port, args.trace)
        if "cold" not in skip:
            results["cold"] = cold(port)
    finally:
        serve.shutdown()
        ray.shutdown()
    for replicas in (2, 8, 64):
        results["predict"][replicas] = simulate(replicas)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print_table(results)
    return 0


def print_table(results: dict) -> None:
    print(f"\nswiftserve on Ray Serve ({results['host']})")
    for key, value in results.get("hop", {}).items():
        if isinstance(value, dict):
            line = f"p50 {value['p50_ms']:7.2f} ms  p95 {value['p95_ms']:7.2f} ms"
            print(f"  {key:36s} {line}  {value['req_per_s']:7.1f} req/s")
        else:
            what = "(ours - bare Ray)" if key.startswith("ours_above") else "(Ray - direct)"
            print(f"  {key:36s} {value:+7.2f} ms {what}")
    skew_results = results.get("skew", {})
    if skew_results:
        print(f"  skewed trace {skew_results['trace']}")
        for router in ("residency", "pow2-multiplex"):
            r = skew_results[router]
            line = f"p50 {r['p50_ms']:8.1f} ms  p95 {r['p95_ms']:8.1f} ms"
            print(f"  {router:16s} cold loads {r['cold_loads']:3d}  {line}")
    for key, value in results.get("cold", {}).items():
        print(f"  {key:28s} {value:7.2f} s")
    for replicas, rules in results["predict"].items():
        text = "  ".join(f"{rule} {loads:6.1f}" for rule, loads in rules.items())
        print(f"  simulated {replicas:3d} replicas: cold loads per 1000 requests: {text}")


if __name__ == "__main__":
    sys.exit(main())
