"""A pipeline stage's call from one replica to another: what travels, and the serving side (no ray).

    entry replica (stage_caller.RayStages)            replica holding the model
    StageCall ──── handle: `stage` ──────────────►  serve_stage(router, call)
    ◄── StageOpened, GenerationStep, ... ─────────   (its router's own call: generation.py)
    StageCall ──── handle: `stage_embed` ────────►  serve_embed(router, call) -> EmbeddingResult
    PrewarmCall ── handle: `prewarm` ────────────►  prewarm_models(router, models)

A router error on the serving side travels as a StageFailure and is raised again, as the same
class with the same message, where the stage was called: the pipeline's answer is the one a
single process would give.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

from swiftserve.engine.embedding_inputs import EmbeddingResult
from swiftserve.router.errors import RouterError
from swiftserve.router.request_types import GenerationStep
from swiftserve.router.stage_caller import LocalStages, StageCall


@dataclass(frozen=True)
class PrewarmCall:
    """Start loading `models` on the replica this reaches (routed by them: stage_plan.route_of)."""

    models: tuple[str, ...]


@dataclass(frozen=True)
class StageOpened:
    """A generating stage's call was admitted: the stream's head (GenerationStream's fields)."""

    n: int
    prompt_token_ids: list[list[int]]


@dataclass(frozen=True)
class StageFailure:
    """A router error met by a stage's call, as plain values (an exception's own pickling would
    call its constructor with its message, which most of the router's errors do not take)."""

    error_type: type[RouterError]
    args: tuple[Any, ...]
    state: dict[str, Any]

    @classmethod
    def of(cls, exc: RouterError) -> StageFailure:
        return cls(type(exc), exc.args, dict(vars(exc)))

    def error(self) -> RouterError:
        exc = self.error_type.__new__(self.error_type)
        exc.args = self.args
        vars(exc).update(self.state)
        return exc


StagePart = StageOpened | GenerationStep | StageFailure


async def serve_stage(router: Any, call: StageCall) -> AsyncGenerator[StagePart, None]:
    """A generating stage's call on this replica's router: its head, then its steps. Closing it
    early aborts the request (the caller's stage was cancelled)."""
    try:
        stream = await LocalStages(router).open(call)
    except RouterError as exc:
        yield StageFailure.of(exc)
        return
    yield StageOpened(stream.n, stream.prompt_token_ids)
    async with contextlib.aclosing(stream.steps) as steps:
        try:
            async for step in steps:
                yield step
        except RouterError as exc:
            yield StageFailure.of(exc)


async def serve_embed(router: Any, call: StageCall) -> EmbeddingResult | StageFailure:
    try:
        return await LocalStages(router).embed(call)
    except RouterError as exc:
        return StageFailure.of(exc)


async def prewarm_models(router: Any, models: Sequence[str]) -> list[str]:
    """Starts loading those of `models` that this router serves and that are not resident;
    returns the ones whose load this started (a load that fails is the stage's to report)."""
    started = []
    for name in models:
        if name in router.names():
            _, did_start = await router.pool.start_load(name)
            if did_start:
                started.append(name)
    return started
