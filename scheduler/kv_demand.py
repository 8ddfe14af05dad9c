"""How big a model's KV cache should be next, from how it is used. No torch.

A resident chat model's cache starts at its floor (one max_model_len sequence) plus a first step
and then follows demand, one decision per controller tick (router/kv_controller.py carries it out
against the residency ledger):
1. Starved (a request waits for blocks, or more than STARVED_USAGE of the blocks are in use):
   grow by GROW_FRACTION, at least MIN_STEP_BLOCKS, up to the model's maximum.
2. Mostly idle (over the last IDLE_TICKS ticks the peak use, with SHRINK_HEADROOM, stayed at least
   MIN_STEP_BLOCKS below the size, or down to the floor): shrink to max(floor, SHRINK_HEADROOM x
   that peak).
3. Otherwise keep the size.
A cache that does not commit memory on use (CUDA) is asked for its whole maximum at once (its
memory is allocated at load anyway, and it cannot grow past that later) and never shrinks: a
shrink would not hand its memory back.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

GROW_FRACTION = 0.25
MIN_STEP_BLOCKS = 4
STARVED_USAGE = 0.9
SHRINK_HEADROOM = 1.5
IDLE_TICKS = 10  # 5 s at the pool's 0.5 s reaper interval


@dataclass(frozen=True)
class KvUsage:
    """One engine's KV cache as the controller sees it (LLMEngine.kv_usage)."""

    num_used_blocks: int  # held by live sequences
    num_blocks: int  # usable now
    num_backed_blocks: int  # still backed by memory: more than num_blocks while a shrink waits
    num_floor_blocks: int  # one max_model_len sequence: the engine never goes below it
    num_max_blocks: int  # the most its memory can hold
    is_waiting_for_blocks: bool
    commits_on_use: bool = True  # unused blocks cost no memory (CPU)

    @property
    def is_starved(self) -> bool:
        return self.is_waiting_for_blocks or self.num_used_blocks > STARVED_USAGE * self.num_blocks


def grow_target(usage: KvUsage) -> int:
    step = max(MIN_STEP_BLOCKS, math.ceil(GROW_FRACTION * usage.num_blocks))
    return min(usage.num_max_blocks, usage.num_blocks + step)


def shrink_target(usage: KvUsage, peak_used_blocks: int) -> int:
    return max(usage.num_floor_blocks, math.ceil(SHRINK_HEADROOM * peak_used_blocks))


def initial_target(usage: KvUsage) -> int:
    """The size to ask for at load: the floor and one step, or everything when memory is not lazy."""
    if not usage.commits_on_use:
        return usage.num_max_blocks
    step = max(MIN_STEP_BLOCKS, math.ceil(GROW_FRACTION * usage.num_floor_blocks))
    return min(usage.num_max_blocks, usage.num_floor_blocks + step)


class KvDemand:
    """One model's recent use and the size its cache should take next (the module docstring)."""

    def __init__(self, idle_ticks: int = IDLE_TICKS) -> None:
        self._recent: deque[int] = deque(maxlen=idle_ticks)

    def target(self, usage: KvUsage) -> int:
        """The number of blocks to resize to after this tick's usage (usage.num_blocks: no change)."""
        self._recent.append(usage.num_used_blocks)
        if usage.is_starved:
            self._recent.clear()  # grown: a shrink needs a whole quiet window again
            return grow_target(usage)
        if not usage.commits_on_use or len(self._recent) < (self._recent.maxlen or 0):
            return usage.num_blocks
        target = shrink_target(usage, max(self._recent))
        # Not by less than a step (no churn on noise), except the last way down to the floor.
        worth_it = usage.num_blocks - target >= MIN_STEP_BLOCKS or target == usage.num_floor_blocks
        return target if worth_it else usage.num_blocks
