"""A pipeline request's hold on the models it runs in this process (pipeline_run.py, steps 1-2).

Under one arrival ticket every model is leased from arrival until the last stage that calls it
ends, and released however the request ends; pre-warming starts the models' loads in order of
first need, under the same ticket. A stage waits here for its model to be resident, and learns who
started that load and what it cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from swiftserve.router.errors import RouterError
from swiftserve.router.pipeline_spec import PipelineSpec, StageSpec
from swiftserve.router.pipeline_stream import ModelWait

logger = logging.getLogger("swiftserve.router")


class PipelineLease:
    """The leases of `models` (those of `spec` that run here) on `pool` (model_pool.ModelPool)."""

    def __init__(self, pool: Any, spec: PipelineSpec, models: list[str]) -> None:
        self.pool, self.spec = pool, spec
        self.ticket = pool.new_ticket()  # its place in the arrival order, for every stage
        self.held = models
        for model in self.held:
            pool.hold(model, self.ticket)
        self.prewarmed: set[str] = set()
        self.loads_counted: set[str] = set()  # models whose load a stage's timing counts already
        self.prewarm: asyncio.Future | None = None

    def start_prewarm(self) -> None:
        """Starts the loads of every model held, in order of first need."""
        self.prewarm = asyncio.ensure_future(self._prewarm(list(self.held)))

    async def _prewarm(self, models: list[str]) -> None:
        for model in models:
            try:
                _, started = await self.pool.start_load(model, self.ticket)
            except RouterError as exc:  # the stage that needs it meets the same error
                logger.info("pre-warming %s for %s: %s", model, self.spec.name, exc)
                continue
            if started:
                self.prewarmed.add(model)

    def release(self, stage: StageSpec) -> None:
        """Ends the leases whose last stage this was."""
        for model, last in self.spec.last_use().items():
            if last == stage.id and model in self.held:
                self.held.remove(model)
                self.pool.unhold(model, self.ticket)

    async def close(self) -> None:
        """Ends pre-warming and the leases."""
        if self.prewarm is not None and not self.prewarm.done():
            self.prewarm.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.prewarm
        for model in self.held:
            self.pool.unhold(model, self.ticket)
        self.held = []

    async def resident(self, model: str) -> ModelWait:
        """Waits for `model` to be resident; who started its load, and what it cost."""
        start = time.perf_counter()
        loading, started = await self.pool.start_load(model, self.ticket)
        if loading is not None:
            await asyncio.shield(loading)
            await self.pool.ensure_resident(model, self.ticket)
        waited = time.perf_counter() - start
        by = "prewarm" if model in self.prewarmed else ("stage" if started else "")
        if not by or model in self.loads_counted:
            return ModelWait("", waited, 0.0)
        self.loads_counted.add(model)
        return ModelWait(by, waited, self.pool.entry(model).load_seconds[-1])
