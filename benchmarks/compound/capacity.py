"""Throughput as the study means it: the highest request rate each system sustains within the SLO.

    python -m benchmarks.compound.capacity [--scales 1,2,3,4] [--systems static,swiftserve]
        [--duration 60] [--out benchmarks/results/compound_capacity.json] [compound's own flags]

The full run's traffic mix (each class at its mean rate over the full trace, spike included) times
each scale, held steady (no bursts, no spike) for `duration` seconds, every system started afresh
for every level, the same seeded arrivals for each system at a level. A level is sustained when no
request fails and at least 90% answer within their SLO (compound's --slo-* flags). A system's
capacity is the highest offered rate it sustains; once a level is not, its higher levels are not
run. The full trace cannot say this: every system completes all of it, so its goodput differs only
by the requests that miss their SLO.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from benchmarks.common import write_json
from benchmarks.compound.__main__ import make_setup, parse_args, root_last, slos, system_names
from benchmarks.compound.driver import run_system
from benchmarks.compound.model_sources import prepare_models
from benchmarks.compound.presets import presets, shape_for
from benchmarks.compound.summary import summarize
from benchmarks.compound.workload import CLASSES, Pattern, Shape, make_trace
from benchmarks.multi_model import git_commit

SUSTAINED_SHARE = 0.9


def mean_rates(seed: int) -> dict[str, float]:
    """Each class's requests per second over the full trace (its mix, its mean load)."""
    preset = presets("full")
    shape = shape_for(preset.duration)
    trace = make_trace(preset.patterns, shape, seed)
    return {c: sum(r.cls == c for r in trace) / shape.duration for c in CLASSES}


def level_trace(rates: dict[str, float], scale: float, duration: float, seed: int):
    shape = Shape(duration, steady=0.0, spike=duration, spike_end=duration)  # steady throughout
    patterns = {c: Pattern(rate * scale) for c, rate in rates.items()}
    return shape, make_trace(patterns, shape, seed)


def level_row(name: str, scale: float, summary: dict, offered: float) -> dict:
    share = summary["within_slo"] / max(summary["requests"], 1)
    return {
        "system": name,
        "scale": scale,
        "offered_per_s": offered,
        "completed_per_s": summary["completed_per_s"],
        "goodput_per_s": summary["goodput_per_s"],
        "within_slo_share": share,
        "errors": summary["errors"],
        "rate_limited_429": summary["rate_limited_429"],
        "pipeline_p95_s": summary["pipeline"]["p95_s"],
        "direct_p95_s": summary["direct"]["p95_s"],
        "sustained": summary["errors"] == 0 and share >= SUSTAINED_SHARE,
    }


def capacities(rows: list[dict], names: list[str]) -> dict[str, float]:
    """The highest offered rate each system sustained (0 where it sustained none)."""
    return {n: max((r["offered_per_s"] for r in rows if r["system"] == n and r["sustained"]), default=0.0)
            for n in names}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,2,3,4", help="comma-separated multiples of the mean rates")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per level")
    parser.add_argument("--out", default="benchmarks/results/compound_capacity.json")
    own, rest = parser.parse_known_args(argv)
    args = parse_args(rest + ["--figures", ""])
    if not args.systems:
        args.systems = "static,swiftserve"
    names = system_names(args)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    setup = make_setup(args, prepare_models(args, workdir), workdir, sorted(os.sched_getaffinity(0)))
    rates, slo = mean_rates(args.seed), slos(args)
    print(f"mean rates (req/s) x each of {own.scales}: {rates}; {own.duration:.0f} s a level")
    rows: list[dict] = []
    for name in names:
        for scale in (float(s) for s in own.scales.split(",")):
            shape, trace = level_trace(rates, scale, own.duration, args.seed)
            began = time.perf_counter()
            run = run_system(setup, name, trace, shape, drain_s=60.0)
            row = level_row(name, scale, summarize(run, shape, slo), len(trace) / own.duration)
            rows.append(row)
            print(f"{name} x{scale:g}: {row['offered_per_s']:.2f} req/s offered, "
                  f"{row['within_slo_share']:.0%} within SLO, {row['errors']} errors, "
                  f"{time.perf_counter() - began:.0f} s")  # fmt: skip
            if not row["sustained"]:
                break
    caps = capacities(rows, names)
    ratios = {n: caps[n] / caps["static"] for n in names if "static" in caps and caps["static"] > 0}
    result = {"commit": git_commit(), "slo_s": slo, "mean_rates": rates, "duration_s": own.duration,
              "sustained_share": SUSTAINED_SHARE, "levels": rows, "capacity_per_s": caps,
              "capacity_vs_static": ratios}  # fmt: skip
    print("capacity (req/s sustained):", {n: round(c, 2) for n, c in caps.items()}, "vs static:", ratios)
    write_json(own.out, result)
    return result


if __name__ == "__main__":
    root_last()
    sys.exit(0 if main() else 1)
