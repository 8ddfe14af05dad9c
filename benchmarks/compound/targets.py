"""The issue's targets for a system against a base deployment of the same run, and their lines
under the table."""

from __future__ import annotations


def _ratio_or_none(ours: float, base: float) -> float | None:
    return ours / base if base else None


def _at_least(ratio: float | None, target: float, ours: float) -> bool:
    return ours > 0 if ratio is None else ratio >= target


def targets(summary: dict, ours: str = "swiftserve", base: str = "static") -> dict:
    """The issue's targets for `ours` against `base`, same run."""
    if base not in summary or ours not in summary:
        return {}
    s, b = summary[ours], summary[base]
    p95, p95_base = s["pipeline"]["p95_with_failures_s"], b["pipeline"]["p95_with_failures_s"]
    reduction = 1 - p95 / p95_base if p95 and p95_base else None
    # None: static had nothing within the SLO, a ratio without a denominator (JSON has no inf)
    goodput = _ratio_or_none(s["goodput_per_s"], b["goodput_per_s"])
    pipe_goodput = _ratio_or_none(s["pipeline_goodput_per_s"], b["pipeline_goodput_per_s"])
    cost_cut = 1 - s["cost"]["memory_gb_s"] / b["cost"]["memory_gb_s"]
    pss_cut = 1 - s["cost"]["memory_pss_gb_s"] / b["cost"]["memory_pss_gb_s"]
    spike = s["spike"]
    ratios = [spike[g]["ratio"] for g in ("pipeline", "direct") if spike[g]["ratio"] is not None]
    failed = sum(spike[g]["spike_failed"] for g in ("pipeline", "direct"))
    return {
        "system": ours,
        "base": base,
        "pipeline_p95_reduction": reduction,
        "pipeline_p95_met": reduction is not None and reduction >= 0.5,
        "goodput_ratio": goodput,
        "goodput_met": _at_least(goodput, 3.9, s["goodput_per_s"]),
        "pipeline_goodput_ratio": pipe_goodput,
        "pipeline_goodput_met": _at_least(pipe_goodput, 3.9, s["pipeline_goodput_per_s"]),
        "memory_cost_reduction": cost_cut,
        "memory_cost_reduction_pss": pss_cut,
        "cost_met": cost_cut >= 0.4,
        "core_cost_reduction": 1 - s["cost"]["reserved_core_s"] / b["cost"]["reserved_core_s"],
        "spike_failed": failed,
        "spike_p95_ratio_max": max(ratios) if ratios else None,
        "spike_met": failed == 0 and bool(ratios) and max(ratios) <= 2.0,
    }


def print_targets(t: dict) -> None:
    if not t:
        return
    print(f"\ntargets, {t['system']} against {t['base']} (same run):")
    print(f"  pipeline P95 (failed requests at their latency) {100 * t['pipeline_p95_reduction']:.0f}% lower "
          f"(target >= 50%): "
          f"{'met' if t['pipeline_p95_met'] else 'missed'}")  # fmt: skip
    print(f"  goodput {_x(t['goodput_ratio'])} over all requests, {_x(t['pipeline_goodput_ratio'])} of the "
          f"pipelines (target >= 3.9x): {'met' if t['goodput_met'] else 'missed'} / "
          f"{'met' if t['pipeline_goodput_met'] else 'missed'}")  # fmt: skip
    print(f"  memory cost {100 * t['memory_cost_reduction']:.0f}% lower by RSS, "
          f"{100 * t['memory_cost_reduction_pss']:.0f}% by PSS (target >= 40%): "
          f"{'met' if t['cost_met'] else 'missed'}; "
          f"reserved cores {100 * t['core_cost_reduction']:.0f}% lower")  # fmt: skip
    ratio = t["spike_p95_ratio_max"]
    print(f"  spike: {t['spike_failed']} failed, P95 {'-' if ratio is None else f'{ratio:.2f}'}x pre-spike "
          f"(target 0 and <= 2x): {'met' if t['spike_met'] else 'missed'}")  # fmt: skip


def _x(ratio: float | None) -> str:
    return "n/a (the base: none within the SLO)" if ratio is None else f"{ratio:.2f}x"
