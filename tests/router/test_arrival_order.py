"""Issue #13's starvation on fake models: a stream of pipeline requests that all lease `big`, and a
direct request for `gemma`, which fits only once `big` is evicted. Before arrival order the
direct request waited until the stream ended (every new pipeline renewed the lease on `big`);
now it is served once the pipelines that arrived before it are done."""

from __future__ import annotations

import asyncio

from swiftserve.router.model_pool import ModelPool
from swiftserve.router.pipeline_spec import Message, PipelineSpec, StageSpec
from swiftserve.router.router import Router

from swiftserve.engine.served_model import Footprint
from tests.router.test_generation import EchoChat

MB = 1_000_000

NUM_PIPELINES = 30
DIRECT_AFTER = 3  # the direct request arrives after this many pipeline requests
ARRIVAL_S = 0.02  # a new pipeline request this often; each runs ~0.05 s, so they overlap


class SlowChat(EchoChat):
    """An EchoChat of `size` bytes whose every token takes `token_s`; the bytes of every SlowChat
    resident at once are checked against the budget at each load."""

    resident: dict[str, int] = {}

    def __init__(self, name: str, size: int, token_s: float = 0.01) -> None:
        super().__init__(name)
        self.size, self.token_s = size, token_s

    def footprint(self) -> Footprint:
        return Footprint(weight_bytes=self.size, kv_block_bytes=0, kv_floor_blocks=0)

    async def load(self) -> None:
        await asyncio.sleep(0.005)
        assert sum(self.resident.values()) + self.size <= 100 * MB, "over the budget"
        self.resident[self.name] = self.size
        await super().load()

    async def unload(self, *, force: bool = False) -> None:
        await asyncio.sleep(0.001)
        del self.resident[self.name]
        await super().unload(force=force)

    async def generate(self, prompt, params, request_id=None, priority=0):
        async for text in super().generate(prompt, params, request_id, priority):
            await asyncio.sleep(self.token_s)
            yield text


def _stage(stage_id: str, model: str, after: tuple[str, ...] = ()) -> StageSpec:
    return StageSpec(stage_id, "chat", model, after, (Message("user", "x"),), sampling={"max_tokens": 2})


MERGE = PipelineSpec("merge", (_stage("draft", "small"), _stage("final", "big", ("draft",))))


async def _stream_and_direct() -> tuple[int, int, list[str]]:
    """How many pipeline requests had arrived, and how many had finished, when the direct one was
    answered; and the ledger's disagreements with the models at the end."""
    SlowChat.resident.clear()
    pool = ModelPool(100 * MB, reap_interval_s=3600)
    router = Router(pool)
    router.add(SlowChat("small", 5 * MB), "on-demand")
    router.add(SlowChat("big", 60 * MB), "on-demand")
    router.add(SlowChat("gemma", 50 * MB), "on-demand")  # with big: 110 MB > 100
    await router.add_pipeline(MERGE)
    arrived, finished, answered = [0], [0], []

    async def pipeline() -> None:
        await router.run_pipeline("merge", [{"role": "user", "content": "q"}], 3)
        finished[0] += 1

    async def direct() -> None:
        await router.chat("gemma", [{"role": "user", "content": "hi"}], 2)
        answered.append((arrived[0], finished[0]))

    tasks = []
    for i in range(NUM_PIPELINES):
        if i == DIRECT_AFTER:
            tasks.append(asyncio.ensure_future(direct()))
        tasks.append(asyncio.ensure_future(pipeline()))
        arrived[0] += 1
        await asyncio.sleep(ARRIVAL_S)
    await asyncio.gather(*tasks)
    (seen,) = answered
    return seen[0], seen[1], pool.disagreements()


def test_a_direct_request_is_not_starved_by_a_stream_of_pipelines_leasing_the_model_it_needs():
    arrived, finished, disagreements = asyncio.run(_stream_and_direct())
    assert disagreements == []
    # Served within a bounded number of pipeline requests (before the fix: after all 30 had finished).
    assert arrived <= DIRECT_AFTER + 9, (arrived, finished)  # measured: 8 arrived, 4 finished
    assert finished < NUM_PIPELINES
