"""Each step, the constrained rows' bitmasks: filled by the backend, applied to the logits before
sampling. Free rows pay nothing; a batch without constrained rows skips it all.

The mask of the token a step samples depends only on the tokens accepted before that step, so its
fill may start before the forward, on the runner's fill thread (mask_worker.py), and be joined
just before the masks are applied (vLLM v1 fills them in its scheduler for the same reason).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial

import torch

from swiftserve.model_runner.grammar.bitmask import allocate_bitmask, apply_bitmask_
from swiftserve.model_runner.grammar.interface import GrammarBackend, GrammarMatcher
from swiftserve.model_runner.grammar.mask_worker import MaskFillWorker
from swiftserve.model_runner.sampling_state import SamplingState

_NUM_TIMINGS = 4096  # recent steps kept for percentiles


def _recent() -> deque[float]:
    return deque(maxlen=_NUM_TIMINGS)


@dataclass
class MaskTimings:
    """Seconds per step spent filling masks (per row: fill_s / rows) and applying them. A fill
    beside the forward is hidden but for the wait at its join: join_wait_s is that wait, hidden_s
    the rest of the fill (both recorded for overlapped steps only)."""

    fill_s: deque[float] = field(default_factory=_recent)
    fill_per_row_s: deque[float] = field(default_factory=_recent)
    apply_s: deque[float] = field(default_factory=_recent)
    join_wait_s: deque[float] = field(default_factory=_recent)
    hidden_s: deque[float] = field(default_factory=_recent)
    num_constrained_rows: int = 0  # rows masked since the runner started
    num_steps: int = 0  # steps with at least one constrained row
    num_overlapped_steps: int = 0  # of those, steps whose fill ran beside the forward


@dataclass
class PendingMasks:
    """One step's masks on their way: bitmask row k masks logits row rows[k]. fill is the fill's
    seconds, or its future while it runs on the fill thread."""

    rows: list[int]
    bitmask: torch.Tensor
    fill: concurrent.futures.Future[float] | float


def start_masks(
    states: list[SamplingState], backend: GrammarBackend | None, worker: MaskFillWorker | None
) -> PendingMasks | None:
    """Fills the masks of every states[i] with a grammar: on worker's thread when given (returns
    at once), else here. None when no row is constrained."""
    rows = [(state.grammar, i) for i, state in enumerate(states) if state.grammar is not None]
    if not rows:
        return None
    assert backend is not None, "a constrained row without a grammar backend"
    bitmask = allocate_bitmask(len(rows), backend.vocab_size)
    job = partial(_timed_fill, backend, [(matcher, k) for k, (matcher, _) in enumerate(rows)], bitmask)
    fill = worker.submit(job) if worker is not None else job()
    return PendingMasks([i for _, i in rows], bitmask, fill)


def _timed_fill(
    backend: GrammarBackend, rows: list[tuple[GrammarMatcher, int]], bitmask: torch.Tensor
) -> float:
    start = time.perf_counter()
    backend.fill_bitmask(rows, bitmask)
    return time.perf_counter() - start


def apply_masks(logits: torch.Tensor, pending: PendingMasks | None, timings: MaskTimings) -> None:
    """Joins the fill (if it runs beside) and masks, in place, the constrained rows of logits."""
    if pending is None:
        return
    joined = time.perf_counter()
    fill_s = pending.fill.result() if isinstance(pending.fill, concurrent.futures.Future) else pending.fill
    filled = time.perf_counter()
    apply_bitmask_(logits, pending.bitmask, pending.rows)
    if isinstance(pending.fill, concurrent.futures.Future):
        _record_overlap(timings, fill_s, filled - joined)
    _record(timings, fill_s, time.perf_counter() - filled, len(pending.rows))


def settle(pending: PendingMasks | None) -> None:
    """Waits out a fill still running (its step failed before the join), so no fill touches a
    matcher once the step is over; the fill's own error, if any, is the failed step's to ignore."""
    if pending is not None and isinstance(pending.fill, concurrent.futures.Future):
        concurrent.futures.wait([pending.fill])


def mask_constrained_rows(
    logits: torch.Tensor, states: list[SamplingState], backend: GrammarBackend | None, timings: MaskTimings
) -> None:
    """Masks, in place, logits[i] of every states[i] with a grammar, filling here (serial order)."""
    apply_masks(logits, start_masks(states, backend, None), timings)


def _record(timings: MaskTimings, fill_s: float, apply_s: float, num_rows: int) -> None:
    timings.fill_s.append(fill_s)
    timings.fill_per_row_s.append(fill_s / num_rows)
    timings.apply_s.append(apply_s)
    timings.num_constrained_rows += num_rows
    timings.num_steps += 1


def _record_overlap(timings: MaskTimings, fill_s: float, wait_s: float) -> None:
    timings.join_wait_s.append(wait_s)
    timings.hidden_s.append(max(0.0, fill_s - wait_s))
    timings.num_overlapped_steps += 1
