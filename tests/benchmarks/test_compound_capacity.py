"""benchmarks/compound/capacity.py's bookkeeping, exact: the mix it scales is the full trace's, a
level holds its rate steady, a level is sustained only without failures and with 90% within the
SLO, and a system's capacity is the highest rate it sustained."""

from __future__ import annotations

import pytest

from .root_path import root_on_path

with root_on_path():
    from benchmarks.compound.capacity import capacities, level_row, level_trace, mean_rates
    from benchmarks.compound.presets import presets, shape_for
    from benchmarks.compound.workload import make_trace


def test_the_mix_is_the_full_trace_s_mean_rates():
    preset = presets("full")
    trace = make_trace(preset.patterns, shape_for(preset.duration), seed=0)
    rates = mean_rates(seed=0)

    assert sum(rates.values()) * preset.duration == pytest.approx(len(trace))
    assert rates["pipeline"] * preset.duration == pytest.approx(sum(r.cls == "pipeline" for r in trace))


def test_a_level_is_steady_and_scales_every_class():
    rates = {"pipeline": 0.0, "smol": 0.0, "gemma": 0.0, "embed": 2.0}
    shape, trace = level_trace(rates, scale=3.0, duration=100.0, seed=1)

    assert {shape.phase(t) for t in (0.0, 50.0, 99.9)} == {"steady"}
    assert {r.cls for r in trace} == {"embed"}
    assert 500 < len(trace) < 700  # Poisson around 600


def _summary(requests: int, within: int, errors: int) -> dict:
    return {"requests": requests, "within_slo": within, "errors": errors, "rate_limited_429": 0,
            "completed_per_s": 1.0, "goodput_per_s": 1.0, "pipeline": {"p95_s": 1.0},
            "direct": {"p95_s": 0.5}}  # fmt: skip


def test_sustained_needs_no_failure_and_nine_in_ten_within_the_slo():
    assert level_row("s", 1.0, _summary(100, 90, 0), 1.5)["sustained"]
    assert not level_row("s", 1.0, _summary(100, 89, 0), 1.5)["sustained"]
    assert not level_row("s", 1.0, _summary(100, 100, 1), 1.5)["sustained"]


def test_capacity_is_the_highest_rate_sustained():
    rows = [
        {"system": "static", "offered_per_s": 1.5, "sustained": True},
        {"system": "static", "offered_per_s": 3.0, "sustained": False},
        {"system": "swiftserve", "offered_per_s": 1.5, "sustained": True},
        {"system": "swiftserve", "offered_per_s": 3.0, "sustained": True},
        {"system": "llamacpp", "offered_per_s": 1.5, "sustained": False},
    ]
    assert capacities(rows, ["static", "swiftserve", "llamacpp"]) == {
        "static": 1.5, "swiftserve": 3.0, "llamacpp": 0.0,
    }  # fmt: skip
