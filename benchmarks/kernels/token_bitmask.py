"""Applying grammar masks to the logits: the C++ kernel against the numpy path it replaced and the
torch reference, per step, at the batch sizes of benchmarks/structured.py.

    python benchmarks/kernels/token_bitmask.py [--repeats 50] [--out benchmarks/results/token_bitmask.json]

Vocabularies of SmolLM2 (49,152) and Gemma 3 (262,144); a mask shaped like a JSON grammar's (most
words all-disallowed, a run of all-allowed words, one mixed word). Median wall time per call, one
thread (as the engine calls it); ratios are numpy or torch time / C++ time in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

# Appended, not prepended: the root's kernels/ must not shadow the installed `kernels`.
sys.path.append(str(Path(__file__).resolve().parents[2]))
from swiftserve.kernels import cpp_bitmask, reference

from benchmarks.common import print_table, write_json
from swiftserve.model_runner.grammar.bitmask import apply_bitmask_numpy_

VOCABS = {"smollm2": 49152, "gemma3": 262144}
ROWS = (1, 16, 64)


def _cpp(logits: torch.Tensor, mask: torch.Tensor, rows: list[int]) -> None:
    cpp_bitmask.apply_token_bitmask_(logits=logits, bitmask=mask, rows=rows)


def _json_like_mask(rows: int, vocab: int) -> torch.Tensor:
    mask = torch.zeros(rows, (vocab + 31) // 32, dtype=torch.int32)
    mask[:, 5:40] = -1
    mask[:, 100] = 12345
    return mask


def _median_ms(fn, logits: torch.Tensor, mask: torch.Tensor, rows: list[int], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(logits, mask, rows)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def measure(vocab_name: str, num_rows: int, repeats: int) -> dict:
    vocab, rows = VOCABS[vocab_name], list(range(num_rows))
    mask, logits = _json_like_mask(num_rows, vocab), torch.randn(num_rows, vocab)
    paths = {"cpp": _cpp, "numpy": apply_bitmask_numpy_, "torch": reference.apply_token_bitmask_}
    row = {"vocab": vocab_name, "rows": num_rows}
    for name, fn in paths.items():
        times = repeats if name != "torch" else max(3, repeats // 10)  # torch is the slow one
        row[f"{name}_ms"] = _median_ms(fn, logits, mask, rows, times)
    row["numpy_over_cpp"] = row["numpy_ms"] / row["cpp_ms"]
    row["torch_over_cpp"] = row["torch_ms"] / row["cpp_ms"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", default="benchmarks/results/token_bitmask.json")
    args = parser.parse_args()
    if not cpp_bitmask.is_available():
        sys.exit("swiftserve._C has no apply_token_bitmask: build it (pip install -e .)")
    torch.set_num_threads(1)
    results = [measure(v, n, args.repeats) for v in VOCABS for n in ROWS]
    columns = ["vocab", "rows", "cpp_ms", "numpy_ms", "torch_ms", "numpy_over_cpp", "torch_over_cpp"]
    print_table(results, columns)
    write_json(args.out, {"results": results})


if __name__ == "__main__":
    main()
