"""A pipeline request cancelled from outside (its timeout, a client gone) waits for every stage in
flight to finish its own cleanup (the aborts that free their engines' KV blocks) before it ends,
however long each takes. Stages are stubbed: the order of events is exact, no model runs."""

from __future__ import annotations

import asyncio

from swiftserve.router import pipeline_run
from swiftserve.router.deadline import Deadline
from swiftserve.router.pipeline_host import CompiledPipeline
from swiftserve.router.pipeline_spec import Message, PipelineSpec, StageSpec
from swiftserve.router.pipeline_types import PipelineInput


class _Pool:
    def __init__(self) -> None:
        self.holds = 0

    def new_ticket(self) -> int:
        return 1

    def hold(self, name: str, ticket: int) -> None:
        self.holds += 1

    def unhold(self, name: str, ticket: int) -> None:
        self.holds -= 1


class _Host:
    pool = _Pool()
    default_max_tokens = 16


def _stage(stage_id: str, after: tuple[str, ...] = ()) -> StageSpec:
    return StageSpec(stage_id, "chat", "m", after, (Message("user", "x"),))


def test_a_cancelled_pipeline_waits_for_every_stage_to_clean_up(monkeypatch):
    spec = PipelineSpec(
        "p", (_stage("fast"), _stage("slow"), _stage("final", ("fast", "slow"))), prewarm=False
    )
    started: list[str] = []
    cleaned: list[str] = []

    async def stage(self, stage: StageSpec):
        started.append(stage.id)
        try:
            await asyncio.Event().wait()
        finally:
            # An abort's round trips: several loop turns for the slow stage, none for the fast.
            for _ in range(5 if stage.id == "slow" else 0):
                await asyncio.sleep(0)
            cleaned.append(stage.id)

    monkeypatch.setattr(pipeline_run._Run, "stage", stage)

    async def main():
        run = pipeline_run._Run(_Host(), CompiledPipeline(spec, {}), PipelineInput([]), Deadline("p"))
        upstream = asyncio.ensure_future(run.upstream())
        while len(started) < 2:
            await asyncio.sleep(0)
        upstream.cancel()
        try:
            await upstream
        except asyncio.CancelledError:
            pass
        return list(cleaned)

    assert asyncio.run(main()) == ["fast", "slow"]  # was ["fast"]: slow's cleanup was cut short
