"""Learned followers on the router, with fake models: a call in a session starts the load of the
model that has followed it often enough, only where that load fits free memory alone. (Two
embedding models: the fakes have no tokenizer for a chat; the router observes sessions the same
way for every kind of call, tests/server/test_follower_sessions.py over HTTP.)"""

from __future__ import annotations

import asyncio

from swiftserve.router.followers import FollowerConfig, FollowerStats

from tests.router.test_router import MB, FakeEmbed, _router

LEARN = FollowerConfig(min_support=2, min_share=0.5)


def _learning_router(budget=100 * MB, learn: FollowerConfig | None = LEARN):
    router, _ = _router(
        budget, embed=(FakeEmbed("embed"), "on-demand"), chat=(FakeEmbed("chat", 30 * MB), "on-demand")
    )
    router.followers = None if learn is None else FollowerStats(learn)
    started: list[tuple[str, str]] = []
    router.on_follower_prewarm = lambda name, follower: started.append((name, follower))
    return router, started


async def _session(router, session: str, then_chat: bool = True) -> None:
    await router.embed("embed", ["question"], session)
    if then_chat:
        await router.embed("chat", ["q"], session)
    await router.unload("chat")  # scaled to zero before the next session


def test_a_learned_follower_loads_when_its_leader_is_called():
    async def main():
        router, started = _learning_router()
        await router.start()
        await _session(router, "s1")
        await _session(router, "s2")
        assert started == [] and router.info("chat").state == "cold"
        await router.embed("embed", ["question"], "s3")  # embed -> chat: 2 of 2 calls
        assert started == [("embed", "chat")]
        assert router.info("chat").state in ("loading", "resident")
        await asyncio.sleep(0.05)
        assert router.info("chat").state == "resident"
        await router.shutdown()

    asyncio.run(main())


def test_without_a_session_or_with_learning_off_nothing_is_learned():
    async def main():
        for learn, session in ((LEARN, None), (None, "s")):
            router, started = _learning_router(learn=learn)
            await router.start()
            for _ in range(3):
                await router.embed("embed", ["q"], session)
                await router.embed("chat", ["q"], session)
                await router.unload("chat")
            await router.embed("embed", ["q"], session)
            assert started == [] and router.info("chat").state == "cold"
            await router.shutdown()

    asyncio.run(main())


def test_a_follower_that_would_evict_is_not_loaded():
    async def main():
        router, started = _learning_router(budget=45 * MB)  # embed 10 + chat 30 fit; + other 10 not
        router.add(FakeEmbed("other", 10 * MB), "on-demand", idle_timeout_s=5.0)
        await router.start()
        await _session(router, "s1")
        await _session(router, "s2")
        await router.embed("other", ["q"])  # idle, resident
        await router.embed("embed", ["question"], "s3")
        assert started == [] and router.info("chat").state == "cold"
        assert router.info("other").state == "resident"  # not evicted for a guess
        await router.shutdown()

    asyncio.run(main())


def test_a_rare_follower_is_not_loaded():
    async def main():
        router, started = _learning_router()
        await router.start()
        await _session(router, "s1")
        await _session(router, "s2")
        for session in ("s3", "s4", "s5"):  # embed followed by embed: counts against chat's share
            await router.embed("embed", ["question"], session)
            await router.embed("embed", ["again"], session)
        await asyncio.sleep(0.05)  # the loads those calls started
        await router.unload("chat")
        started.clear()
        await router.embed("embed", ["question"], "s6")  # chat followed 2 of 5: under half
        assert started == [] and router.info("chat").state == "cold"
        await router.shutdown()

    asyncio.run(main())
