"""A pipeline's result on the wire: per-stage reports, and its streamed usage made whole."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator

from swiftserve.router.pipeline_stream import PipelineStream
from swiftserve.router.pipeline_types import PipelineResult, StageResult
from swiftserve.router.request_types import GenerationStep, Usage
from swiftserve.server.protocol_pipelines import PipelineReport, PipelineRun, StageOutput, StageReport


def stage_report(stage: StageResult) -> StageReport:
    t = stage.timing
    return StageReport(
        id=stage.id,
        kind=stage.kind,
        model=stage.model,
        start_s=t.start_s,
        cold_wait_s=t.cold_wait_s,
        first_token_s=t.first_token_s,
        run_s=t.run_s,
        end_s=t.end_s,
        load_started_by=t.load_started_by,
        load_s=t.load_s,
        prompt_tokens=stage.usage.prompt_tokens,
        completion_tokens=stage.usage.completion_tokens,
    )


def pipeline_report(result: PipelineResult) -> PipelineReport:
    return PipelineReport(result.pipeline, result.latency_s, [stage_report(s) for s in result.stages])


def pipeline_run(result: PipelineResult) -> PipelineRun:
    stages = [StageOutput(stage_report(s), _wire(s.output)) for s in result.stages]
    return PipelineRun(result.pipeline, _wire(result.output), stages, result.usage, result.latency_s)


def _wire(output: object) -> object:
    return list(output) if isinstance(output, list) else output


async def with_upstream_usage(stream: PipelineStream) -> AsyncGenerator[GenerationStep, None]:
    """The final stage's steps, each one's usage counting every earlier stage too."""
    up = stream.upstream_usage
    async for step in stream:
        usage = Usage(
            step.usage.prompt_tokens + up.prompt_tokens, step.usage.completion_tokens + up.completion_tokens
        )
        yield dataclasses.replace(step, usage=usage)
