"""Each step, the constrained rows' bitmasks: filled by the backend, applied to the logits before
sampling. Free rows pay nothing; a batch without constrained rows skips it all."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import torch

from swiftserve.model_runner.grammar.bitmask import allocate_bitmask, apply_bitmask_
from swiftserve.model_runner.grammar.interface import GrammarBackend
from swiftserve.model_runner.sampling_state import SamplingState

_NUM_TIMINGS = 4096  # recent steps kept for percentiles


@dataclass
class MaskTimings:
    """Seconds per step spent filling masks (per row: fill_s / rows) and applying them."""

    fill_s: deque[float] = field(default_factory=lambda: deque(maxlen=_NUM_TIMINGS))
    fill_per_row_s: deque[float] = field(default_factory=lambda: deque(maxlen=_NUM_TIMINGS))
    apply_s: deque[float] = field(default_factory=lambda: deque(maxlen=_NUM_TIMINGS))
    num_constrained_rows: int = 0  # rows masked since the runner started
    num_steps: int = 0  # steps with at least one constrained row


def mask_constrained_rows(
    logits: torch.Tensor, states: list[SamplingState], backend: GrammarBackend | None, timings: MaskTimings
) -> None:
    """Masks, in place, logits[i] of every states[i] with a grammar."""
    rows = [(state.grammar, i) for i, state in enumerate(states) if state.grammar is not None]
    if not rows:
        return
    assert backend is not None, "a constrained row without a grammar backend"
    start = time.perf_counter()
    bitmask = allocate_bitmask(len(rows), backend.vocab_size)
    backend.fill_bitmask([(matcher, k) for k, (matcher, _) in enumerate(rows)], bitmask)
    filled = time.perf_counter()
    apply_bitmask_(logits, bitmask, [i for _, i in rows])
    timings.fill_s.append(filled - start)
    timings.fill_per_row_s.append((filled - start) / len(rows))
    timings.apply_s.append(time.perf_counter() - filled)
    timings.num_constrained_rows += len(rows)
    timings.num_steps += 1
