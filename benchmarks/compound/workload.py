"""The trace: four classes of requests, each arriving by its own pattern through five phases,
seeded so that every system gets the same one.

(Not trace.py: make_ggufs.py runs as a script from this folder, which then comes first on
sys.path, and a trace.py would shadow the standard library's `trace`.)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from benchmarks.compound.pipelines import FAN_OUTS

CLASSES = ("pipeline", "smol", "gemma", "embed")
DIRECT = ("smol", "gemma", "embed")
QUESTIONS = [
    "What is the capital of France?",
    "Which is the highest mountain?",
    "How fast does light travel?",
    "Who wrote Hamlet?",
    "What does a KV cache store?",
    "Which planet is the largest?",
    "When was the Eiffel Tower completed?",
    "At what temperature does water boil?",
    "What limits single-stream LLM decoding?",
    "How long is a marathon?",
    "What do bees do?",
    "Which river is the longest in Africa?",
]
SENTENCES = [
    "The meeting was moved to Thursday.",
    "How do I reset my password?",
    "Compound AI systems call several models per task.",
    "Rain is expected tomorrow afternoon.",
    "A quick brown fox jumps over the lazy dog.",
    "The invoice is attached to this message.",
]


@dataclass(frozen=True)
class Pattern:
    """A class's arrival rate (req/s) in the steady phase (x10 in the spike). A `bursts` class is,
    in the burst phases, on for `on_s` at `burst_rate` (default: `rate`) and off for `off_s`
    (from `phase_s`); other classes keep `rate` throughout."""

    rate: float
    bursts: bool = False
    on_s: float = 0.0
    off_s: float = 0.0
    phase_s: float = 0.0
    burst_rate: float | None = None


@dataclass(frozen=True)
class Shape:
    """The trace's phases: bursts [0, steady), steady [steady, spike), the 10x step [spike,
    spike_end), bursts again until `duration`."""

    duration: float
    steady: float
    spike: float
    spike_end: float
    factor: float = 10.0

    def phase(self, t: float) -> str:
        if t < self.steady:
            return "bursts"
        if t < self.spike:
            return "steady"
        return "spike" if t < self.spike_end else "bursts"


@dataclass
class Request:
    index: int
    cls: str
    t: float  # arrival, seconds from the trace's start
    text: str
    fan_out: int = 0


def rate_at(p: Pattern, shape: Shape, t: float) -> float:
    phase = shape.phase(t)
    if phase == "spike":
        return p.rate * shape.factor
    if phase == "steady" or not p.bursts:
        return p.rate
    on = (t - p.phase_s) % (p.on_s + p.off_s) < p.on_s
    return (p.burst_rate or p.rate) if on else 0.0


def make_trace(patterns: dict[str, Pattern], shape: Shape, seed: int) -> list[Request]:
    """Poisson arrivals at each class's time-varying rate (thinning), each class its own stream."""
    arrivals: list[tuple[float, str]] = []
    for k, (cls, p) in enumerate(patterns.items()):
        rng, peak, t = random.Random(seed * 1009 + k), max(p.rate * shape.factor, p.burst_rate or 0.0), 0.0
        while peak > 0:
            t += rng.expovariate(peak)
            if t >= shape.duration:
                break
            if rng.random() * peak < rate_at(p, shape, t):
                arrivals.append((t, cls))
    arrivals.sort()
    rng = random.Random(seed)
    trace = []
    for i, (t, cls) in enumerate(arrivals):
        if cls == "embed":
            trace.append(Request(i, cls, t, f"{rng.choice(SENTENCES)} (#{i})"))
        else:
            fan = rng.choice(FAN_OUTS) if cls == "pipeline" else 0
            trace.append(Request(i, cls, t, f"{rng.choice(QUESTIONS)} (#{i})", fan))
    return trace
