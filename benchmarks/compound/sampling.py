"""What a system costs: its processes' memory and CPU time sampled through the run, and the
GB-seconds and core-seconds over the trace made of the samples."""

from __future__ import annotations

import asyncio
import time

import psutil

from benchmarks.compound.server_proc import Proc


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
