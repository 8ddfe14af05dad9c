"""How many OpenMP threads the torch ops of *this* thread use, without touching other threads.

`torch.set_num_threads` is process-wide in effect: it also stores the count that every thread
starting its first parallel op later adopts, so calling it from a side thread would quietly
shrink the main stepping thread the next time one starts. OpenMP itself keeps the team size per
thread (the nthreads-var ICV of the calling thread), so this module calls `omp_set_num_threads`
of the OpenMP runtime torch loaded, from the thread that wants the smaller team, after torch has
done its own lazy per-thread setup (which would otherwise overwrite it on the first op).
"""

from __future__ import annotations

import ctypes
import logging
from functools import cache
from pathlib import Path

import torch

logger = logging.getLogger("swiftserve.executor")

_RUNTIMES = ("libgomp", "libiomp5", "libomp")


def set_this_thread_num_threads(num_threads: int) -> bool:
    """Torch ops on the calling thread use `num_threads` threads from now on; False (logged once)
    when the OpenMP runtime torch uses cannot be found, and nothing changed."""
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    runtime = _openmp_runtime()
    if runtime is None:
        return False
    torch.get_num_threads()  # torch's lazy per-thread init runs first, so it cannot undo ours
    runtime.omp_set_num_threads(ctypes.c_int(num_threads))
    return True


@cache
def _openmp_runtime() -> ctypes.CDLL | None:
    path = _loaded_runtime_path()
    if path is None:
        logger.warning(
            "no OpenMP runtime found in this process: the executor's urgent lane runs with the "
            "process's thread count and may oversubscribe the cores"
        )
        return None
    return ctypes.CDLL(path)  # already loaded by torch: dlopen hands back the same library


def _loaded_runtime_path() -> str | None:
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return None
    paths = [line.split()[-1] for line in maps.read_text().splitlines() if line.split()]
    return torch_runtime(paths, Path(torch.__file__).parent)


def torch_runtime(mapped: list[str], torch_dir: Path) -> str | None:
    """Of the OpenMP runtimes among the mapped paths, torch's: the one in torch's package (its
    lib/ or the wheel's torch.libs/), else the first. Other wheels bring their own copy (scikit-learn
    vendors a libgomp that sentence-transformers loads), and setting that copy's thread count
    leaves torch's teams as they were."""
    runtimes = list(dict.fromkeys(p for p in mapped if any(Path(p).name.startswith(n) for n in _RUNTIMES)))
    homes = (torch_dir, torch_dir.parent / "torch.libs")
    ours = [p for p in runtimes if any(Path(p).is_relative_to(home) for home in homes)]
    candidates = ours or runtimes
    return candidates[0] if candidates else None
