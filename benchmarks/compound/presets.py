"""The trace's sizes: each class's pattern, the duration and the drain, for --ci, --quick and the
full run, and the phases a duration is cut into."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.compound.workload import Pattern, Shape


@dataclass(frozen=True)
class Preset:
    duration: float
    patterns: dict[str, Pattern]
    drain_s: float


def presets(kind: str) -> Preset:
    """Rates sized to this 2-core machine (see the README's section): at the spike, 10x every rate."""
    if kind == "ci":
        patterns = {"pipeline": Pattern(0.3), "smol": Pattern(0.6), "gemma": Pattern(0.4, True, 1.5, 1.5),
                    "embed": Pattern(0.8)}  # fmt: skip
        return Preset(6.0, patterns, 120.0)  # a generous drain: a loaded CI host is slow, not wrong
    # The pipelines' steady rate is half the first runs': their spike (pipelines alone at ~60% of
    # one process's capacity on both cores) overloaded every system once the direct traffic came
    # beside it, and a spike no deployment can serve measures its queue, not its architecture.
    patterns = {
        "pipeline": Pattern(0.0125, bursts=True, on_s=12.0, off_s=14.0, burst_rate=0.2),
        "smol": Pattern(0.08),
        "gemma": Pattern(0.04, bursts=True, on_s=10.0, off_s=16.0, phase_s=13.0, burst_rate=0.15),
        "embed": Pattern(0.3),
    }
    return Preset(90.0 if kind == "quick" else 180.0, patterns, 120.0)


def shape_for(duration: float) -> Shape:
    """Bursts for 30% of the trace, steady for 15%, the spike for 25%, bursts for the last 30%."""
    return Shape(duration, 0.3 * duration, 0.45 * duration, 0.7 * duration)
