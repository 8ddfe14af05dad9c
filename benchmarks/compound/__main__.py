"""The benchmark's command line: `python -m benchmarks.compound [--ci | --quick | ...]` from the
repository root (see the package's docstring)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import benchmarks.compound
from benchmarks.common import write_json
from benchmarks.compound.driver import run_system
from benchmarks.compound.model_sources import prepare_models
from benchmarks.compound.pipelines import CHAT_TOKENS, DRAFT_TOKENS, FAN_OUTS, MERGE_TOKENS
from benchmarks.compound.presets import Preset, presets, shape_for
from benchmarks.compound.sampling import stalled_seconds
from benchmarks.compound.summary import summarize
from benchmarks.compound.systems import SYSTEMS, Setup
from benchmarks.compound.table import table
from benchmarks.compound.targets import print_targets, targets
from benchmarks.compound.workload import CLASSES, Request, Shape, make_trace
from benchmarks.multi_model import git_commit

ROOT = Path(__file__).resolve().parents[2]


def root_last() -> None:
    """`python -m` put the working directory (the repository root) first on sys.path, where the
    root's kernels/ would shadow the installed `kernels` that transformers imports: moved last, as
    the repository's scripts append it. (The modules imported above import nothing the root
    shadows; transformers comes later, when the models are prepared.)"""
    sys.path[:] = [p for p in sys.path if Path(p or os.getcwd()).resolve() != ROOT] + [str(ROOT)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=benchmarks.compound.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a 90 s trace")
    parser.add_argument(
        "--ci", action="store_true", help="a 6 s trace, a tiny merge model, static + swiftserve"
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


def system_names(args: argparse.Namespace) -> list[str]:
    """--systems, else static and swiftserve for --ci and every system otherwise."""
    names = (
        args.systems.split(",") if args.systems else (["static", "swiftserve"] if args.ci else list(SYSTEMS))
    )
    unknown = set(names) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"--systems: unknown {sorted(unknown)}; pick from {SYSTEMS}")
    return names


def llamacpp_ready(sources: dict[str, str]) -> bool:
    """Whether the llama.cpp peer can run here; if not, says why (it is then skipped)."""
    from benchmarks.compound.llamacpp import missing

    reason = missing(sources)
    if reason:
        print(f"llamacpp skipped: {reason}")
    return not reason


def make_setup(args: argparse.Namespace, sources: dict[str, str], workdir: Path, cpus: list[int]) -> Setup:
    logdir = Path(tempfile.mkdtemp(prefix="compound_"))
    big_budget = "256MiB" if args.ci else "3GiB"
    return Setup(
        sources, workdir, logdir, cpus, args.max_model_len, args.kv_cache_memory, args.big_step_tokens,
        args.idle_timeout or ("1s" if args.ci else "3s"), args.memory_budget,
        static_budgets={"embed": "512MiB", "smol": "768MiB", "gemma": "1GiB", "big": big_budget},
    )  # fmt: skip


def slos(args: argparse.Namespace) -> dict[str, float]:
    return {
        "pipeline": args.slo_pipeline,
        "smol": args.slo_chat,
        "gemma": args.slo_chat,
        "embed": args.slo_embed,
    }


def run_all(setup: Setup, names: list[str], trace: list[Request], shape: Shape, drain_s: float) -> dict:
    """Each system in turn, started and stopped; {name: its run}."""
    runs = {}
    for name in names:
        t = time.perf_counter()
        runs[name] = run_system(setup, name, trace, shape, drain_s)
        done = sum(r["outcome"] == "ok" for r in runs[name]["records"])
        print(f"{name}: {done}/{len(trace)} ok, {time.perf_counter() - t:.0f} s with start and stop")
        stalled = stalled_seconds(runs[name]["samples"])
        if stalled:
            print(f"  warning: the load generator stood still for {stalled:.0f} s (stopped or starved)")
    return runs


def trace_json(shape: Shape, preset: Preset, trace: list[Request], counts: dict[str, int]) -> dict:
    return {
        "shape": asdict(shape),
        "patterns": {k: asdict(v) for k, v in preset.patterns.items()},
        "requests": len(trace),
        "per_class": counts,
        "draft_tokens": DRAFT_TOKENS,
        "merge_tokens": MERGE_TOKENS,
        "chat_tokens": CHAT_TOKENS,
        "fan_outs": FAN_OUTS,
    }


def result_json(summary: dict, runs: dict, names: list[str]) -> dict:
    """The systems' part of the JSON: summaries, targets, deployments, every record and sample."""
    return {
        "systems": summary,
        "targets": {n: targets(summary, n) for n in names if n != "static"},
        "targets_against_llamacpp": {n: targets(summary, n, "llamacpp") for n in names if n != "llamacpp"},
        "deployments": {name: run["system"] for name, run in runs.items()},
        "records": {name: run["records"] for name, run in runs.items()},
        "memory_samples": {name: run["samples"] for name, run in runs.items()},
        "figures": [],
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    kind = "ci" if args.ci else "quick" if args.quick else "full"
    preset = presets(kind)
    shape = shape_for(args.duration or preset.duration)
    names = system_names(args)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    sources = prepare_models(args, workdir)
    names = [n for n in names if n != "llamacpp" or llamacpp_ready(sources)]
    cpus = sorted(os.sched_getaffinity(0))
    setup = make_setup(args, sources, workdir, cpus)
    trace = make_trace(preset.patterns, shape, args.seed)
    slo = slos(args)
    counts = {c: sum(r.cls == c for r in trace) for c in CLASSES}
    print(f"trace: {len(trace)} requests over {shape.duration:.0f} s {counts}; spike x{shape.factor:g} "
          f"[{shape.spike:.0f}, {shape.spike_end:.0f}) s; cores {cpus}; logs in {setup.logdir}")  # fmt: skip
    runs = run_all(setup, names, trace, shape, preset.drain_s)
    summary = {name: summarize(run, shape, slo) for name, run in runs.items()}
    result = {
        "wall_seconds": time.perf_counter() - began,
        "commit": git_commit(),
        "cores": len(cpus),
        "args": vars(args),
        "slo_s": slo,
        "trace": trace_json(shape, preset, trace, counts),
        **result_json(summary, runs, names),
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
    root_last()
    main()
