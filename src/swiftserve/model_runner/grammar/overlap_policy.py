"""Whether a step's mask fill may run beside the forward: only where a core is free for it.

The forward's OpenMP team spins on its cores; a fill thread on one of them would slow the
forward by more than the fill it hides. So the fill overlaps only when the process may use more
CPUs than the team that runs the forward on this thread; else the serial order stays.
"""

from __future__ import annotations

import logging
import os

import torch

from swiftserve.config import MASK_OVERLAP_MODES

logger = logging.getLogger(__name__)


def has_free_core(num_cpus: int, num_forward_threads: int) -> bool:
    return num_cpus > num_forward_threads


def process_cpu_count() -> int:
    """CPUs this process may run on (its affinity mask, which taskset and cgroups cpusets narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class OverlapPolicy:
    """mode: "auto" overlaps where a core is free; "on" / "off": always / never (benchmarks, tests).
    Decides per step (a lane's team size may change between steps); logs each choice once."""

    def __init__(self, mode: str = "auto") -> None:
        if mode not in MASK_OVERLAP_MODES:
            raise ValueError(f"mask overlap must be one of {MASK_OVERLAP_MODES}, got {mode!r}")
        self.mode = mode
        self._logged: set[bool] = set()

    def should_overlap(self) -> bool:
        """Call on the stepping thread: torch.get_num_threads() is that thread's team size."""
        if self.mode != "auto":
            return self.mode == "on"
        cpus, threads = process_cpu_count(), torch.get_num_threads()
        overlap = has_free_core(cpus, threads)
        self._log_once(overlap, cpus, threads)
        return overlap

    def _log_once(self, overlap: bool, cpus: int, threads: int) -> None:
        if overlap in self._logged:
            return
        self._logged.add(overlap)
        how = "beside the forward" if overlap else "after the forward (no core free)"
        logger.info("grammar masks fill %s: %d CPUs, forward on %d threads", how, cpus, threads)
