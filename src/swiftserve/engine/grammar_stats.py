"""What structured outputs cost one engine: compiles, cache hits, refusals, and the per-step mask
fill time of constrained rows (percentiles over the recent steps) and how much of it the forward
hid, for /metrics and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass

from swiftserve.engine.grammar_compiler import GrammarCompileStats
from swiftserve.model_runner.grammar.step_masks import MaskTimings


@dataclass(frozen=True)
class GrammarStats:
    num_compiles: int
    num_cache_hits: int
    num_failures: int
    compile_s_total: float
    num_constrained_rows: int  # rows masked so far (a row per sequence per step)
    mask_fill_p50_s: float  # one step's fill, all its constrained rows together
    mask_fill_p99_s: float
    mask_fill_row_p99_s: float  # per row: a step's fill over its constrained rows
    mask_apply_p99_s: float
    # Fills beside the forward (overlap_policy.py): how many steps, how much of a fill the forward
    # hid, and how long the step still waited for it at the join.
    num_overlapped_steps: int = 0
    mask_hidden_p50_s: float = 0.0
    mask_join_wait_p99_s: float = 0.0


def grammar_stats(compile_stats: GrammarCompileStats, timings: MaskTimings) -> GrammarStats:
    return GrammarStats(
        num_compiles=compile_stats.num_compiles,
        num_cache_hits=compile_stats.num_cache_hits,
        num_failures=compile_stats.num_failures,
        compile_s_total=compile_stats.compile_s_total,
        num_constrained_rows=timings.num_constrained_rows,
        mask_fill_p50_s=percentile(list(timings.fill_s), 0.5),
        mask_fill_p99_s=percentile(list(timings.fill_s), 0.99),
        mask_fill_row_p99_s=percentile(list(timings.fill_per_row_s), 0.99),
        mask_apply_p99_s=percentile(list(timings.apply_s), 0.99),
        num_overlapped_steps=timings.num_overlapped_steps,
        mask_hidden_p50_s=percentile(list(timings.hidden_s), 0.5),
        mask_join_wait_p99_s=percentile(list(timings.join_wait_s), 0.99),
    )


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (0.0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]
