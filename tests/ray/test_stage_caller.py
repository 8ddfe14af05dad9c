"""Tier 1, no Ray: a pipeline across two replicas, each a Router over fake engines. The entry
replica holds `vec` (its embed stage runs there); `chat` is resident on the other one, so the chat
stage's pre-warm and call go through a fake handle (pickled both ways, as Ray sends them) to
stage_wire's serving side there. Answers equal the calls made on the replica holding the model."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle

import pytest
from swiftserve.router import errors
from swiftserve.router.model_pool import ModelPool
from swiftserve.router.pipeline_spec import Message, PipelineSpec, StageSpec
from swiftserve.router.router import Router
from swiftserve.router.stage_caller import StageCall
from swiftserve.scheduler.residency_types import State

from swiftserve.ray.stage_caller import RayStages
from swiftserve.ray.stage_wire import PrewarmCall, prewarm_models, serve_embed, serve_stage

from ..server.server_fakes import FakeChatEngine, FakeEmbeddingEngine, FakeServed

QUESTION = [{"role": "user", "content": "hello"}]
ASK = PipelineSpec(
    "ask",
    (
        StageSpec("vec", "embed", "vec"),
        StageSpec(
            "answer", "chat", "chat", ("vec",), (Message("user", "{{ input }}!"),), sampling={"max_tokens": 5}
        ),
    ),
)


class _Lost(Exception):
    """Stands for Ray's ActorDiedError."""


def _wire(value):
    return pickle.loads(pickle.dumps(value))


class _Sender:
    """The deployment handle, reaching the other replica's router only."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.calls: list[tuple[str, object]] = []
        self.fail: Exception | None = None

    async def call(self, method: str, arg):
        self.calls.append((method, arg))
        if self.fail is not None:
            raise self.fail
        if method == "prewarm":
            return _wire(await prewarm_models(self.router, _wire(arg).models))
        assert method == "stage_embed"
        return _wire(await serve_embed(self.router, _wire(arg)))

    async def stream(self, method: str, arg):
        self.calls.append((method, arg))
        if self.fail is not None:
            raise self.fail
        assert method == "stage"
        async with contextlib.aclosing(serve_stage(self.router, _wire(arg))) as parts:
            async for part in parts:
                yield _wire(part)


async def _replica(pinned: str) -> Router:
    router = Router(ModelPool(10**9, reap_interval_s=3600))
    chat, vec = "pinned" if pinned == "chat" else "on-demand", "pinned" if pinned == "vec" else "on-demand"
    router.add(FakeServed("chat", "chat", FakeChatEngine()), chat, 600.0)
    router.add(FakeServed("vec", "embedding", FakeEmbeddingEngine()), vec, 600.0)
    await router.start()
    await router.add_pipeline(ASK)
    return router


def _states(router: Router) -> dict[str, str]:
    return {name: router.pool.state(name).value for name in router.names()}


@contextlib.asynccontextmanager
async def _two_replicas():
    entry, other = await _replica("vec"), await _replica("chat")
    sender = _Sender(other)
    entry.remote_stages = RayStages(lambda: _states(entry), sender, lambda e: isinstance(e, _Lost))
    try:
        yield entry, other, sender
    finally:
        await entry.shutdown()
        await other.shutdown()


def _no_load_of_chat_on_entry(entry: Router) -> None:
    assert entry.pool.state("chat") is State.COLD and entry.info("chat").num_loads == 0
    assert sum(entry.pool.ledger._get(n).holds for n in entry.names()) == 0  # leases released


def test_each_stage_runs_where_its_model_is_and_the_other_replica_is_prewarmed():
    async def main():
        async with _two_replicas() as (entry, other, sender):
            result = await entry.run_pipeline("ask", QUESTION)
            direct_vec = (await entry.embed("vec", ["hello"])).embeddings[0]
            direct_answer = await other.chat("chat", [{"role": "user", "content": "hello!"}], max_tokens=5)
            _no_load_of_chat_on_entry(entry)
            assert other.info("vec").num_loads == 0  # the embed stage did not leave the entry
            return result, direct_vec, direct_answer, sender.calls

    result, direct_vec, direct_answer, calls = asyncio.run(main())
    assert sorted(calls, key=lambda c: c[0]) == [
        ("prewarm", PrewarmCall(("chat",))),
        ("stage", StageCall("chat", "chat", ([{"role": "user", "content": "hello!"}],), 5, {}, 0)),
    ]
    vec, answer = result.stages
    assert vec.output == [float(x) for x in direct_vec]
    assert answer.output == direct_answer.text and answer.usage == direct_answer.usage
    assert result.final.choices[0].text == direct_answer.text
    assert answer.timing.load_started_by == "" and answer.timing.cold_wait_s == 0.0


def test_the_final_stage_streams_from_the_other_replica():
    async def main():
        async with _two_replicas() as (entry, other, sender):
            stream = await entry.open_pipeline("ask", QUESTION, max_tokens=3)
            texts = [d.text async for step in stream for d in step.deltas]
            direct = await other.chat("chat", [{"role": "user", "content": "hello!"}], max_tokens=3)
            _no_load_of_chat_on_entry(entry)
            return "".join(texts), stream.result(), direct

    text, result, direct = asyncio.run(main())
    assert text == direct.text == result.stages[-1].output
    assert result.stages[-1].usage == direct.usage


def test_an_error_of_the_other_replica_is_the_same_error_here():
    async def main():
        async with _two_replicas() as (entry, other, _):
            with pytest.raises(errors.PipelineStageError) as failed:
                await entry.run_pipeline("ask", QUESTION, max_tokens=1000)
            with pytest.raises(errors.ContextLengthExceededError) as direct:
                await other.chat("chat", [{"role": "user", "content": "hello!"}], max_tokens=1000)
            _no_load_of_chat_on_entry(entry)
            return failed.value, direct.value

    failed, direct = asyncio.run(main())
    assert failed.stage == "answer" and type(failed.cause) is errors.ContextLengthExceededError
    assert str(failed.cause) == str(direct)
    assert (failed.cause.max_tokens, failed.cause.max_model_len) == (direct.max_tokens, direct.max_model_len)


def test_a_lost_replica_aborts_the_stage_and_a_failed_prewarm_is_logged_once(caplog):
    async def main():
        async with _two_replicas() as (entry, _, sender):
            sender.fail = _Lost("replica died")
            causes = []
            for _ in range(2):
                with pytest.raises(errors.PipelineStageError) as failed:
                    await entry.run_pipeline("ask", QUESTION)
                causes.append(failed.value.cause)
                await asyncio.sleep(0)  # the pre-warm's task ends
            _no_load_of_chat_on_entry(entry)
            return causes

    with caplog.at_level(logging.WARNING, logger="swiftserve.ray"):
        causes = asyncio.run(main())
    assert [type(c) for c in causes] == [errors.RequestAbortedError] * 2
    assert "'chat'" in str(causes[0]) and "_Lost" in str(causes[0])
    warnings = [r.getMessage() for r in caplog.records if r.name == "swiftserve.ray"]
    assert warnings == ["pre-warming chat on another replica failed: replica died"]
