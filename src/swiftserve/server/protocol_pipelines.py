"""The wire's pipelines: a run's request, its answer, and the stage reports a chat answer carries."""

from __future__ import annotations

from typing import Any

from msgspec import UNSET, Struct, UnsetType

from swiftserve.router.request_types import Usage
from swiftserve.server.protocol_common import Priority, RequestStruct, Timeout


class PipelineRunRequest(RequestStruct, kw_only=True):
    """POST /v1/pipelines/{name}: the input as text or as a conversation, and the final stage's
    max_tokens and sampling fields."""

    input: str | UnsetType = UNSET
    messages: list[dict] | UnsetType = UNSET
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    priority: Priority | None = None
    timeout: Timeout | None = None


class StageReport(Struct):
    """One pipeline stage of a request: its model and timings (seconds; pipeline_types.StageTiming)."""

    id: str
    kind: str
    model: str
    start_s: float
    cold_wait_s: float
    first_token_s: float | None
    run_s: float
    end_s: float
    load_started_by: str
    load_s: float
    prompt_tokens: int
    completion_tokens: int


class PipelineReport(Struct):
    """The `swiftserve` field of a pipeline's answer: what each stage cost."""

    pipeline: str
    latency_s: float
    stages: list[StageReport]


class StageOutput(Struct):
    report: StageReport
    output: Any  # text, list of texts, or a vector


class PipelineRun(Struct):
    """The answer of POST /v1/pipelines/{name}: every stage's output and timings."""

    pipeline: str
    output: Any
    stages: list[StageOutput]
    usage: Usage
    latency_s: float
    object: str = "pipeline.run"
