"""A run's figures: latency percentiles per group and class, goodput, P95 per window and through
the spike, cold starts (the pipelines' own records and the servers' /metrics), cost."""

from __future__ import annotations

import math

import numpy as np

from benchmarks.compound.sampling import cost, stalled_seconds
from benchmarks.compound.workload import CLASSES, DIRECT, Shape

GROUPS = (("pipeline", ("pipeline",)), ("direct", DIRECT), ("all", CLASSES))


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
        for group, classes in GROUPS:
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
    for group, classes in GROUPS:
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


def stage_means(records: list[dict]) -> dict:
    rows = [r["stages_s"] for r in records if r["outcome"] == "ok" and r.get("stages_s")]
    return (
        {k: sum(r.get(k, 0.0) for r in rows) / len(rows) for k in ("context", "drafts", "final")}
        if rows
        else {}
    )


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
