"""One system's run: start its processes, warm it up, replay the trace open loop with the sampler
on, collect every request's record and the servers' /metrics, stop it."""

from __future__ import annotations

import asyncio
import time

import httpx

from benchmarks.compound.client import Refused, chat, embed
from benchmarks.compound.orchestrator import Orchestrator
from benchmarks.compound.pipelines import CHAT_TOKENS
from benchmarks.compound.sampling import Sampler
from benchmarks.compound.server_proc import Proc
from benchmarks.compound.systems import ALWAYS_LOADED, Setup, System, build_system
from benchmarks.compound.workload import CLASSES, Request, Shape


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


async def warm_up(client: httpx.AsyncClient, system: System, orch: Orchestrator | None) -> None:
    """Each class once (first forwards, the page cache), not recorded."""
    for cls in CLASSES:
        r = await send(
            client, system, orch, Request(-1, cls, 0.0, "Warm up: what is the capital of Spain?", 3)
        )
        if r["outcome"] != "ok":
            raise RuntimeError(f"{system.name}: warm-up {cls} failed: {r.get('error')}")


async def replay(
    client: httpx.AsyncClient,
    system: System,
    orch: Orchestrator | None,
    trace: list[Request],
    t0: float,
    deadline_s: float,
) -> list[dict]:
    """Each request sent at its arrival time (from t0), not waiting for earlier ones; those still
    running `deadline_s` after t0 are cancelled and recorded as unfinished."""
    tasks = []
    for req in trace:
        delay = req.t - (time.perf_counter() - t0)
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(client, system, orch, req)))
    done, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline_s - (time.perf_counter() - t0)))
    for task in pending:
        task.cancel()
    return [await task for task in tasks]


async def scrape_metrics(client: httpx.AsyncClient, procs: list[Proc]) -> dict[str, str]:
    """Each process's /metrics page (its cold starts and loads), or why there is none."""
    metrics = {}
    for proc in procs:
        try:
            metrics[proc.name] = (await client.get(proc.base + "/metrics", timeout=10)).text
        except httpx.HTTPError as e:
            metrics[proc.name] = f"# unavailable: {e}"
    return metrics


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
        records = await replay(client, system, orch, trace, t0, shape.duration + drain_s)
        elapsed = time.perf_counter() - t0
        stop.set()
        await sampling
        metrics = await scrape_metrics(client, system.procs)
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
