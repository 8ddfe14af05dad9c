"""The streamed side of a pipeline: its final stage's steps as they come, with what is gathered
along the way (texts, usage, timing) to build the stage's result at the end."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from typing import Any

from swiftserve.router.pipeline_json import stage_output
from swiftserve.router.pipeline_spec import StageSpec
from swiftserve.router.pipeline_types import PipelineResult, StageResult, StageTiming
from swiftserve.router.request_types import ChoiceDelta, GenerationStep, GenerationStream, Usage


@dataclass
class PipelineStream:
    """The final stage opened as a stream (GenerationSteps); `result()` once it has ended."""

    steps: AsyncGenerator[GenerationStep, None]
    n: int
    upstream_usage: Usage
    _result: asyncio.Future

    def __aiter__(self) -> AsyncGenerator[GenerationStep, None]:
        return self.steps

    async def aclose(self) -> None:
        await self.steps.aclose()

    def result(self) -> PipelineResult:
        return self._result.result()


@dataclass(frozen=True)
class ModelWait:
    """A stage's wait for its model: who started the load ("prewarm", "stage", ""), the seconds
    waited, and the load's own duration when this request's timing counts it (else 0)."""

    started_by: str
    cold_wait_s: float
    load_s: float


class FinalStage:
    """The streamed final stage's texts, usage and timing, gathered as its steps pass."""

    def __init__(self, stage: StageSpec, start_s: float, wait: ModelWait) -> None:
        self.stage, self.start_s, self.wait = stage, start_s, wait
        self.submitted = time.perf_counter()
        self.first: float | None = None
        self.texts: dict[int, str] = {}
        self.finish_reasons: dict[int, str | None] = {}
        self.usage = Usage(0, 0)

    async def track(
        self, steps: AsyncGenerator[GenerationStep, None]
    ) -> AsyncGenerator[GenerationStep, None]:
        async with contextlib.aclosing(steps) as inner:
            async for step in inner:
                self.first = self.first or time.perf_counter()
                self.usage = step.usage
                for delta in step.deltas:
                    self.texts[delta.index] = self.texts.get(delta.index, "") + delta.text
                    self.finish_reasons[delta.index] = delta.finish_reason
                yield step

    def result(self, arrival: float) -> StageResult:
        end = time.perf_counter()
        indexes = range(max(self.texts, default=-1) + 1)
        replies = [(self.texts.get(k, ""), self.finish_reasons.get(k)) for k in indexes]
        output = stage_output(self.stage, replies, hands_on=False)
        first_token = self.first - self.submitted if self.first is not None else None
        wait = self.wait
        timing = StageTiming(
            self.start_s,
            wait.cold_wait_s,
            first_token,
            end - self.submitted,
            end - arrival,
            wait.started_by,
            wait.load_s,
        )
        return StageResult(self.stage.id, self.stage.kind, self.stage.model, output, self.usage, timing)


def timed(stream: GenerationStream, first: list[float]) -> GenerationStream:
    async def steps() -> AsyncGenerator[GenerationStep, None]:
        async with contextlib.aclosing(stream.steps) as inner:
            async for step in inner:
                if not first:
                    first.append(time.perf_counter())
                yield step

    return replace(stream, steps=steps())


async def one_step(output: Any, usage: Usage) -> AsyncGenerator[GenerationStep, None]:
    """A retrieved list as one finished choice (a final retrieve stage, streamed)."""
    yield GenerationStep(0, [ChoiceDelta(0, 0, str(output), [], None, "stop")], usage)
