"""Running one pipeline request: leases, coordinated pre-warming, stages as their inputs are ready.

0. Admission: the request enters the pipeline's gate (its max_queue of requests in flight) or is
   refused at once (PipelineQueueFullError), before anything is held. Its deadline (deadline.py)
   bounds everything below; every stage's calls run at its priority (else the pipeline's).
1. Lease (pipeline_lease.py): the request takes an arrival ticket (model_pool.new_ticket), and
   every model of the pipeline is held under it from arrival until the last stage that calls it
   ends, released however the request ends. A lease keeps its model from idle unloads and from
   the loads of requests that arrived later; never from a load of an older request
   (scheduler/arrival_queue.py): a stream of newer pipelines cannot starve a load that waits for a
   model they all lease.
2. Pre-warm (spec.prewarm): the models' loads are started at once, in order of first need, each
   as soon as the ledger admits it. Loads that wait for memory are admitted in arrival order, and
   this request's (pre-warm and stages alike) keep its ticket's place. Where the budget holds them
   all, every load starts within milliseconds of arrival and they overlap (under the pool's
   parallel-loads limit where one is set, in the same order); where it does not, a later model's
   load waits for the memory of an earlier one, released when its last stage ends (its own leases
   keep it from its own loads), so the order never deadlocks: a request waits only for older
   requests and for its own earlier stages. What pre-warming loaded is never evicted for a newer
   request while this one still needs it.
3. Stages run as soon as the stages they wait for are done; independent ones run concurrently,
   their model calls under the request's ticket (model_pool.serving). A fan-out's calls are
   submitted together (one engine admission: shared steps and prefix cache).
4. A stage that fails fails the request (PipelineStageError naming it); the other stages in flight
   are cancelled, which aborts their engine requests.
The final stage can be opened as a stream (`open`): every other stage runs first, so an error of
theirs is raised before the caller answers anything.
Each stage's call goes through a StageCaller (stage_caller.py): this process's router, or, for the
models that a caller of another process says run elsewhere (a Ray replica's), that caller: those
models get no lease and no load here; pre-warming asks the caller to start their loads where they
will run, at arrival, beside this process's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

from swiftserve.router import generation
from swiftserve.router.deadline import Deadline
from swiftserve.router.errors import (
    PipelineQueueFullError,
    PipelineStageError,
    RequestTimeoutError,
    RouterError,
)
from swiftserve.router.pipeline_calls import stage_call
from swiftserve.router.pipeline_host import CompiledPipeline, PipelineHost
from swiftserve.router.pipeline_json import stage_output
from swiftserve.router.pipeline_lease import PipelineLease
from swiftserve.router.pipeline_spec import GENERATING, StageSpec
from swiftserve.router.pipeline_stream import FinalStage, ModelWait, PipelineStream, one_step, timed
from swiftserve.router.pipeline_templates import Texts
from swiftserve.router.pipeline_types import (
    PipelineInput,
    PipelineOutcome,
    PipelineResult,
    StageResult,
    StageTiming,
    sum_usage,
)
from swiftserve.router.request_types import Generation, GenerationStep, GenerationStream, Usage
from swiftserve.router.stage_caller import LocalStages, StageCall, StageCaller


async def run(
    host: PipelineHost,
    pipeline: CompiledPipeline,
    request: PipelineInput,
    deadline: Deadline,
    remote: StageCaller | None = None,
) -> PipelineResult:
    """Runs every stage; the result holds each stage's output, usage and timings. remote: the
    caller of the stages whose models run elsewhere (None: all run here)."""
    run = _Run(host, _admitted(host, pipeline), request, deadline, remote)
    try:
        async with deadline.bounding():
            with host.pool.serving(run.lease.ticket):
                await run.upstream()
                await run.stage(pipeline.spec.final)
        result = run.result(run.final)
    except BaseException as exc:
        host.on_pipeline(pipeline.spec.name, PipelineOutcome(outcome_of(exc)))
        raise
    finally:
        await run.close()
    host.on_pipeline(pipeline.spec.name, PipelineOutcome("ok", result))
    return result


async def open_stream(
    host: PipelineHost,
    pipeline: CompiledPipeline,
    request: PipelineInput,
    deadline: Deadline,
    remote: StageCaller | None = None,
) -> PipelineStream:
    """Runs every stage but the last, then opens the last as a stream (see the module docstring)."""
    run = _Run(host, _admitted(host, pipeline), request, deadline, remote)
    try:
        async with deadline.bounding():
            with host.pool.serving(run.lease.ticket):
                await run.upstream()
                return await run.open_final()
    except BaseException as exc:
        host.on_pipeline(pipeline.spec.name, PipelineOutcome(outcome_of(exc)))
        await run.close()
        raise


def _admitted(host: PipelineHost, pipeline: CompiledPipeline) -> CompiledPipeline:
    """`pipeline`, its gate entered; PipelineQueueFullError when it is full (nothing held)."""
    if not pipeline.gate.try_enter():
        host.on_pipeline(pipeline.spec.name, PipelineOutcome("queue_full"))
        assert pipeline.gate.bound is not None  # only a bounded gate refuses
        raise PipelineQueueFullError(pipeline.spec.name, pipeline.gate.bound)
    return pipeline


def outcome_of(exc: BaseException) -> str:
    """The metrics' outcome of a pipeline request that ended with `exc`."""
    return "timeout" if isinstance(exc, RequestTimeoutError) else "error"


class _Run:
    """One request's execution; see the module docstring. Made once the request is admitted
    (its gate entered): close() leaves the gate."""

    def __init__(
        self,
        host: PipelineHost,
        pipeline: CompiledPipeline,
        request: PipelineInput,
        deadline: Deadline,
        remote: StageCaller | None = None,
    ) -> None:
        self.host, self.pipeline, self.spec, self.request = host, pipeline, pipeline.spec, request
        self.local: StageCaller = LocalStages(host)
        self.remote = remote or self.local
        self.elsewhere = self.remote.elsewhere(self.spec.models())  # decided once, at arrival
        self.deadline = deadline
        self.priority = request.priority if request.priority is not None else self.spec.priority
        self.is_closed = False
        self.arrival = time.perf_counter()
        self.outputs: dict[str, Any] = {}
        self.results: dict[str, StageResult] = {}
        self.final: Generation | None = None  # the final stage's, when it generates
        held = [m for m in self.spec.models() if m not in self.elsewhere]
        self.lease = PipelineLease(host.pool, self.spec, held)
        if self.spec.prewarm and self.elsewhere:
            self.remote.prewarm([m for m in self.spec.models() if m in self.elsewhere])
        if self.spec.prewarm:
            self.lease.start_prewarm()

    async def close(self) -> None:
        """Ends pre-warming and the leases and leaves the gate; once, however the request ended."""
        if self.is_closed:
            return
        self.is_closed = True
        await self.lease.close()
        self.pipeline.gate.leave()

    # -- stages -----------------------------------------------------------------------------------
    async def upstream(self) -> None:
        """Every stage but the final one, each once its inputs are ready."""
        tasks: dict[str, asyncio.Task] = {}
        for stage in self.spec.stages[:-1]:
            deps = [tasks[a] for a in stage.after]
            tasks[stage.id] = asyncio.ensure_future(self._after(deps, stage))
        try:
            await asyncio.gather(*tasks.values())
        except BaseException:
            for task in tasks.values():
                # Once: a cancelled gather has cancelled every stage already, and returned when
                # the first one ended; a second cancel would cut short the others' aborts (they
                # would free their KV blocks later, after this request had ended).
                if not task.cancelling():
                    task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            raise

    async def _after(self, deps: list[asyncio.Task], stage: StageSpec) -> None:
        await asyncio.gather(*deps)
        await self.stage(stage)

    async def stage(self, stage: StageSpec) -> StageResult:
        """Runs one stage whose inputs are ready; its output and result are recorded."""
        start = time.perf_counter()
        try:
            result = await self._call(stage, start, await self._ready(stage.model))
        except RouterError as exc:
            raise PipelineStageError(self.spec.name, stage.id, exc) from exc
        self.outputs[stage.id] = result.output
        self.results[stage.id] = result
        self.lease.release(stage)
        return result

    def _caller(self, model: str) -> StageCaller:
        return self.remote if model in self.elsewhere else self.local

    async def _ready(self, model: str) -> ModelWait:
        """Waits for a model of this process to be resident; one that runs elsewhere waits there
        (its cold wait counts in the stage's run_s)."""
        return ModelWait("", 0.0, 0.0) if model in self.elsewhere else await self.lease.resident(model)

    async def _call(self, stage: StageSpec, start: float, wait: ModelWait) -> StageResult:
        submitted = time.perf_counter()
        first: list[float] = []
        if stage.kind in GENERATING:
            stream = timed(await self._open(stage), first)
            generation_ = await generation.collect(stream)
            if stage is self.spec.final:
                self.final = generation_
            replies = [(c.text, c.finish_reason) for c in generation_.choices]
            output: Any = stage_output(stage, replies, hands_on=stage is not self.spec.final)
            usage = generation_.usage
        else:
            output, usage = await self._vector_stage(stage)
        end = time.perf_counter()
        timing = StageTiming(
            start_s=start - self.arrival,
            cold_wait_s=wait.cold_wait_s,
            first_token_s=(first[0] - submitted) if first else None,
            run_s=end - submitted,
            end_s=end - self.arrival,
            load_started_by=wait.started_by,
            load_s=wait.load_s,
        )
        return StageResult(stage.id, stage.kind, stage.model, output, usage, timing)

    async def _open(self, stage: StageSpec) -> GenerationStream:
        return await self._caller(stage.model).open(self._stage_call(stage))

    async def _vector_stage(self, stage: StageSpec) -> tuple[Any, Usage]:
        result = await self._caller(stage.model).embed(self._stage_call(stage))
        usage = Usage(result.num_prompt_tokens, 0)
        if stage.kind == "embed":
            return [float(x) for x in result.embeddings[0]], usage
        passages = self.pipeline.corpora[stage.id].top_k(result.embeddings[0], stage.top_k)
        return Texts(p.text for p in passages), usage

    def _stage_call(self, stage: StageSpec) -> StageCall:
        templates, is_final = self.pipeline.templates[stage.id], stage is self.spec.final
        return stage_call(stage, templates, self.request, self.outputs, is_final, self.priority)

    # -- the final stage as a stream --------------------------------------------------------------
    async def open_final(self) -> PipelineStream:
        stage = self.spec.final
        upstream = sum_usage(r.usage for r in self.results.values())
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        if stage.kind not in GENERATING:
            result = await self.stage(stage)
            steps = self._finishing(one_step(result.output, result.usage), future, lambda: self.result(None))
            return PipelineStream(steps, 1, upstream, future)
        start = time.perf_counter()
        try:
            final = FinalStage(stage, start - self.arrival, await self._ready(stage.model))
            opened = await self._open(stage)
        except RouterError as exc:
            raise PipelineStageError(self.spec.name, stage.id, exc) from exc

        def finish() -> PipelineResult:
            self.results[stage.id] = final.result(self.arrival)
            return self.result(None)

        steps = self._finishing(self.deadline.bound(final.track(opened.steps)), future, finish)
        return PipelineStream(steps, opened.n * len(opened.prompt_token_ids), upstream, future)

    async def _finishing(
        self,
        steps: AsyncGenerator[GenerationStep, None],
        future: asyncio.Future,
        finish: Callable[[], PipelineResult],
    ) -> AsyncGenerator[GenerationStep, None]:
        """`steps`, then the result into `future`; the leases end however the stream ends."""
        outcome = PipelineOutcome("error")  # unless it ends well, or by its deadline
        try:
            async with contextlib.aclosing(steps) as inner:
                async for step in inner:
                    yield step
            future.set_result(finish())
            outcome = PipelineOutcome("ok", future.result())
        except BaseException as exc:
            outcome = PipelineOutcome(outcome_of(exc))
            raise
        finally:
            if not future.done():
                future.cancel()
            self.host.on_pipeline(self.spec.name, outcome)
            await self.close()

    def result(self, final: Generation | None) -> PipelineResult:
        stages = tuple(self.results[s.id] for s in self.spec.stages)
        return PipelineResult(self.spec.name, stages, final, time.perf_counter() - self.arrival)
