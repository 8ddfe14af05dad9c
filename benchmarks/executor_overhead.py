"""What the shared device executor costs one model: this tree against the tree before it.

Before the executor (commit 10af419), each AsyncEngine stepped on its own worker thread; since,
every engine steps on a DeviceExecutor lane, its commands queued between steps and each step
chosen by the policy. The same in-process workload runs on both trees, in fresh subprocesses,
alternating (baseline, current, current, baseline, ...) so a slow patch of the shared host hits
both:
- single stream: requests one after another (64 new tokens each, ignore_eos): output tok/s;
- 64 concurrent: 64 requests submitted at once: output tok/s over the batch's wall time.
The baseline tree is a `git worktree` of --baseline in a temporary folder, importing the native
extension built here (csrc/ has only grown since: new functions, none changed; checked). Target: within 3%.

    python benchmarks/executor_overhead.py [--rounds 2] [--model smollm2-135m-instruct]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# Appended, not prepended: the root's kernels/ must not shadow the installed `kernels`.
sys.path.append(str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.common import print_table, write_json

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "10af419"
PACKAGE_MAP = {"kernels": "kernels", "scheduler": "scheduler", "router": "router"}

WORKER = r"""
import asyncio, json, sys, time
from swiftserve.config import EngineConfig
from swiftserve.scheduler.config import SchedulerConfig
from swiftserve.engine.async_engine import AsyncEngine
from swiftserve.sampling_params import SamplingParams

model, single, concurrent, tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
PROMPT = "Write a short story about a lighthouse keeper and a storm."

async def one(engine, i, params):
    n = 0
    async for out in engine.generate(PROMPT + f" ({i})", params, request_id=f"r{i}"):
        n = len(out.outputs[0].token_ids)
    return n

async def main():
    scheduler = SchedulerConfig(max_num_seqs=64)
    engine = AsyncEngine(EngineConfig(model=model, max_model_len=512, scheduler=scheduler))
    await engine.start()
    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
    await asyncio.gather(*(one(engine, 10_000 + i, params) for i in range(4)))  # warm-up
    start = time.perf_counter()
    n = 0
    for i in range(single):
        n += await one(engine, i, params)
    single_tps = n / (time.perf_counter() - start)
    start = time.perf_counter()
    counts = await asyncio.gather(*(one(engine, 1000 + i, params) for i in range(concurrent)))
    batch_tps = sum(counts) / (time.perf_counter() - start)
    await engine.shutdown()
    print(json.dumps({"single_stream_tok_per_s": single_tps, "concurrent_tok_per_s": batch_tps}))

asyncio.run(main())
"""


def baseline_tree(commit: str, into: Path) -> Path:
    """A worktree of `commit` whose src/ imports as swiftserve, with this tree's _C."""
    diff = subprocess.run(
        ["git", "-C", str(ROOT), "diff", "--numstat", commit, "HEAD", "--", "csrc", "setup.py"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    if any(line.split()[1] != "0" for line in diff.splitlines()):
        # Lines only added (new native functions) leave the baseline's calls as they were.
        raise SystemExit(f"csrc/ changed since {commit}, not only grew: build the baseline's extension")
    tree = into / "baseline"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(tree), commit], check=True
    )
    package = tree / "src" / "swiftserve"
    for name, folder in PACKAGE_MAP.items():
        (package / name).symlink_to(tree / folder, target_is_directory=True)
    for so in (ROOT / "src" / "swiftserve").glob("_C*.so"):
        (package / so.name).symlink_to(so)
    return tree


def run_worker(src: Path, args: argparse.Namespace) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, "-c", WORKER, args.model, str(args.single), str(args.concurrent), str(args.tokens)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, cwd=src)
    if out.returncode != 0:
        raise SystemExit(f"worker on {src} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def current_src() -> Path:
    """This tree, importable the same way as the baseline (mapped subpackages as symlinks)."""
    tmp = Path(tempfile.mkdtemp(prefix="executor_overhead_current_"))
    package = tmp / "swiftserve"
    package.mkdir()
    for entry in (ROOT / "src" / "swiftserve").iterdir():
        (package / entry.name).symlink_to(entry)
    for name, folder in PACKAGE_MAP.items():
        (package / name).symlink_to(ROOT / folder, target_is_directory=True)
    return tmp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--single", type=int, default=6, help="requests of the single-stream phase")
    parser.add_argument("--concurrent", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--out", default="benchmarks/results/executor_overhead.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="executor_overhead_") as tmp:
        trees = {
            "before (own thread)": baseline_tree(args.baseline, Path(tmp)) / "src",
            "executor": current_src(),
        }
        try:
            runs: dict[str, list[dict]] = {name: [] for name in trees}
            for r in range(args.rounds):
                order = list(trees) if r % 2 == 0 else list(trees)[::-1]
                for name in order:
                    runs[name].append(run_worker(trees[name], args))
                    print(f"round {r + 1} {name}: {runs[name][-1]}", flush=True)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(Path(tmp) / "baseline")]
            )
    summary = summarize(runs)
    print_table(summary["rows"], ["case", "single_stream_tok_per_s", "concurrent_tok_per_s"])
    write_json(args.out, {"args": vars(args), "runs": runs, **summary})


def summarize(runs: dict[str, list[dict]]) -> dict:
    keys = ("single_stream_tok_per_s", "concurrent_tok_per_s")
    means = {name: {k: statistics.fmean(r[k] for r in rs) for k in keys} for name, rs in runs.items()}
    before, now = means["before (own thread)"], means["executor"]
    ratio = {k: now[k] / before[k] for k in keys}
    rows = [{"case": name, **{k: round(v, 1) for k, v in m.items()}} for name, m in means.items()]
    rows.append({"case": "executor / before", **{k: round(v, 3) for k, v in ratio.items()}})
    return {"means": means, "ratio": ratio, "rows": rows}


if __name__ == "__main__":
    main()
