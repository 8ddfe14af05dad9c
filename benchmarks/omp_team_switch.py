"""Does resizing a thread's OpenMP team before each step cost anything? A measurement, not a test.

The executor's chat lanes (engine/lane_teams.py) call omp_set_num_threads on their own thread
whenever the number of busy lanes changes, at most once per step. This times:
- the call itself (engine/omp_threads.set_this_thread_num_threads), in microseconds;
- a parallel op (a float32 matmul of one decode layer's MLP size: 1 x 2048 x 8192; CPU bf16 matmul
  without native support is 30x slower and would hide the switch) run right after its
  team size changed, against the same op at a steady team of that size: the cost of the runtime
  building the new team.

    python benchmarks/omp_team_switch.py [--iters 100]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
import torch

from benchmarks.common import write_json
from swiftserve.engine.omp_threads import set_this_thread_num_threads


def _op(x: torch.Tensor, w: torch.Tensor) -> float:
    start = time.perf_counter()
    torch.matmul(x, w)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iters", type=int, default=100)
    args = parser.parse_args()
    cores = torch.get_num_threads()
    x, w = torch.randn(1, 2048, dtype=torch.float32), torch.randn(2048, 8192, dtype=torch.float32)
    calls = []
    for i in range(args.iters):
        start = time.perf_counter()
        set_this_thread_num_threads(1 + i % cores)
        calls.append(time.perf_counter() - start)
    result = {"cores": cores, "call_us_median": statistics.median(calls) * 1e6, "ops": {}}
    for team in sorted({1, cores}):
        other = cores if team == 1 else 1
        set_this_thread_num_threads(team)
        steady = [_op(x, w) for _ in range(args.iters)]
        switched = []
        for _ in range(args.iters):
            set_this_thread_num_threads(other)
            _op(x, w)
            set_this_thread_num_threads(team)
            switched.append(_op(x, w))
        result["ops"][team] = {
            "steady_us_median": statistics.median(steady) * 1e6,
            "after_switch_us_median": statistics.median(switched) * 1e6,
        }
    set_this_thread_num_threads(cores)
    print(result)
    write_json(Path(__file__).parent / "results" / "omp_team_switch.json", result)


if __name__ == "__main__":
    main()
