"""What running a pipeline hands back: per stage its output, usage and timings, and the whole."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from swiftserve.router.request_types import Generation, Usage


@dataclass(frozen=True)
class PipelineInput:
    """A pipeline request: the conversation (its last user message is `input`), what the caller
    set for the final stage (max_tokens and SamplingParams fields: temperature, seed...), and the
    priority of every stage's calls (None: the pipeline's own)."""

    messages: list[dict]
    max_tokens: int | None = None
    sampling: dict[str, Any] | None = None
    priority: int | None = None

    @property
    def input(self) -> str:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return _text(message.get("content"))
        return _text(self.messages[-1].get("content")) if self.messages else ""


def _text(content: Any) -> str:
    """A message's content as text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return "\n".join(parts)
    return ""


@dataclass(frozen=True)
class StageTiming:
    """Seconds. start: arrival -> the stage's inputs ready. cold_wait: waiting for its model to be
    resident. first_token: submission -> first output (queue and prefill; None for embed and
    retrieve). run: submission -> last output. end: arrival -> the stage done. load_started_by:
    "prewarm" or "stage" when this request's pre-warm or the stage itself started the model's
    load, "" when the model was resident or another request was loading it; load_s: that load's
    duration (0 otherwise), so load_s - cold_wait_s is what pre-warming saved this stage."""

    start_s: float
    cold_wait_s: float
    first_token_s: float | None
    run_s: float
    end_s: float
    load_started_by: str = ""
    load_s: float = 0.0


@dataclass(frozen=True)
class StageResult:
    id: str
    kind: str
    model: str
    output: Any  # str (one reply), list[str] (a fan-out, passages), list[float] (a vector)
    usage: Usage
    timing: StageTiming


@dataclass(frozen=True)
class PipelineResult:
    """Every stage's result in the pipeline's order; `final` is the last stage's generation
    (its choices answer a chat completion), None when the last stage retrieves."""

    pipeline: str
    stages: tuple[StageResult, ...]
    final: Generation | None
    latency_s: float

    @property
    def output(self) -> Any:
        return self.stages[-1].output

    @property
    def usage(self) -> Usage:
        return sum_usage(stage.usage for stage in self.stages)

    @property
    def prewarm_saved_s(self) -> float:
        """The loads this request caused, minus the time its stages waited for them."""
        loads = sum(stage.timing.load_s for stage in self.stages)
        return max(0.0, loads - sum(stage.timing.cold_wait_s for stage in self.stages))


def sum_usage(usages) -> Usage:
    prompt = completion = 0
    for usage in usages:
        prompt, completion = prompt + usage.prompt_tokens, completion + usage.completion_tokens
    return Usage(prompt, completion)


@dataclass(frozen=True)
class PipelineOutcome:
    """How a pipeline request ended, for the metrics: "ok" (with its result), "error",
    "queue_full" (refused at arrival: the pipeline's max_queue) or "timeout"."""

    kind: str
    result: PipelineResult | None = None
